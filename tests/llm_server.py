"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions API, for tests and benchmarks.

It is a test double of the *server*, not of the judge: requests come from the real `openai` client over
HTTP. It follows the request's structured-output JSON schema (strict `json_schema` response format) and
answers with scores derived from the images it was sent, so tests can predict values:

* rubric keys: the mean brightness (0..1) of the image labelled "Generated image:", rounded to 3 places;
  `person_present` is 1 when that brightness is above 0.05, else 0 (a black image "has no person");
* pairwise: 0.5 + (brightness(B) - brightness(A)) (clipped to [0, 1]) minus `position_bias`;
* at temperature > 0 each answer moves by a step in [-0.01, 0.01] that depends on the seed and the image
  (sampling noise).

`score_from="hash"` skips decoding (benchmarks): scores then come from a hash of the image data URL.
Faults are queued with `add_fault` and consume matching requests in order; every request is recorded in
`calls` (what was asked, which fault it got, the status sent), so tests assert exactly what happened.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image

FAULT_KINDS = (
    "429", "500", "delay", "malformed", "out_of_range", "refusal", "truncated", "echo_auth", "401", "missing_key",
    "bad_score", "403", "404",
)


@dataclass
class Fault:
    kind: str
    times: int = 1
    retry_after: str | None = None  # 429/500: the Retry-After header value (seconds), None = no header
    delay: float = 0.0  # "delay": seconds before answering
    match: Callable[["Request"], bool] | None = None
    value: Any = None  # "bad_score": what the score becomes (True, "0.7", ...): a server ignoring the schema
    keys: tuple[str, ...] | None = None  # "bad_score": only these criteria (None: all)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {FAULT_KINDS}")


@dataclass
class Request:
    """What the server understood of one request."""

    model: str
    schema_name: str
    keys: tuple[str, ...]
    images: dict[str, str]  # label -> data URL
    text: str
    temperature: float
    seed: int | None
    max_tokens: int | None
    authorization: str | None

    @property
    def fingerprint(self) -> str:
        """Identity of the question (images, text, schema, seed): equal for a repeated call."""
        h = hashlib.sha256()
        for part in (self.schema_name, self.text, str(self.seed), *sorted(self.images.values())):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()[:20]


@dataclass
class Call:
    index: int
    started: float
    fingerprint: str
    keys: tuple[str, ...]
    schema_name: str
    fault: str | None
    status: int
    has_authorization: bool
    text: str = ""  # the request's text parts (rubric wording, prompt)


@dataclass
class FakeOpenAIServer:
    latency: float = 0.0  # seconds from a request's arrival to its answer (a real endpoint's response time)
    jitter: float = 0.0  # each answer's latency is uniform in latency +- jitter (seeded: reproducible)
    score_from: str = "brightness"  # or "hash"
    position_bias: float = 0.0
    expected_key: str | None = None  # when set, other keys get 401
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.max_concurrent = 0
        self._active = 0
        self.first_start: float | None = None  # time.monotonic() of the first request's arrival
        self.last_end: float | None = None  # ... and of the last answer sent
        self._rng = random.Random(0)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> "FakeOpenAIServer":
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 128
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # --- faults and records ------------------------------------------------------------------------------

    def add_fault(self, kind: str, times: int = 1, **kwargs: Any) -> None:
        with self._lock:
            self.faults.append(Fault(kind, times, **kwargs))

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.calls)

    def fingerprints(self) -> list[str]:
        with self._lock:
            return [c.fingerprint for c in self.calls]

    @property
    def texts(self) -> list[str]:
        with self._lock:
            return [c.text for c in self.calls]

    def ok_calls(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.status == 200 and c.fault is None]

    def _take_fault(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and (fault.match is None or fault.match(request)):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, request: Request, fault: Fault | None, status: int, started: float) -> None:
        with self._lock:
            self.calls.append(
                Call(len(self.calls), started, request.fingerprint, request.keys, request.schema_name,
                     None if fault is None else fault.kind, status, request.authorization is not None, request.text)
            )

    # --- answers -----------------------------------------------------------------------------------------

    def brightness(self, url: str) -> float:
        if self.score_from == "hash":
            return int(hashlib.sha1(url.encode()).hexdigest()[:6], 16) / 0xFFFFFF
        data = base64.b64decode(url.split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as image:
            return float(np.asarray(image.convert("L"), dtype=np.float64).mean() / 255.0)

    def noise(self, request: Request, key: str) -> float:
        if request.temperature <= 0:
            return 0.0
        image = request.images.get("Generated image:", "")  # each image samples its own noise, as a real judge would
        digest = hashlib.sha1(f"{request.seed}|{key}|{image}".encode()).digest()
        return (digest[0] % 21 - 10) / 1000.0

    def answer(self, request: Request) -> dict[str, Any]:
        if request.keys == ("preference",):
            a = self.brightness(request.images["Image A:"])
            b = self.brightness(request.images["Image B:"])
            value = 0.5 + (b - a) - self.position_bias + self.noise(request, "preference")
            return {"textual_justification": f"B is {'brighter' if b > a else 'darker'}",
                    "preference": round(min(1.0, max(0.0, value)), 3)}
        level = self.brightness(request.images["Generated image:"])
        out = {}
        for key in request.keys:
            score = (1.0 if level > 0.05 else 0.0) if key == "person_present" else level
            score = round(min(1.0, max(0.0, score + self.noise(request, key))), 3)
            out[key] = {"textual_justification": f"{key}: brightness {level:.3f}", "score": score}
        return out


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAIServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the client's delayed ACK would
    # hold the body back ~40 ms per response, which a benchmark would wrongly charge to the judge.
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass  # a client killed mid-request (the SIGKILL test) is not a server error

    def do_GET(self) -> None:  # noqa: N802
        """`/_stats`: the call count, for a server running in another process (the benchmark)."""
        if self.path == "/_stats":
            server = self.owner
            span = None if server.first_start is None or server.last_end is None else server.last_end - server.first_start
            self._send(200, {"calls": server.call_count, "max_concurrent": server.max_concurrent, "span_s": span})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.owner
        started = time.monotonic()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        request = _parse_request(body, self.headers.get("Authorization"))
        with server._lock:
            server._active += 1
            server.max_concurrent = max(server.max_concurrent, server._active)
            server.first_start = started if server.first_start is None else min(server.first_start, started)
        self._counted = True
        try:
            self._answer(server, request, started)
        finally:
            self._done()

    def _answer(self, server: FakeOpenAIServer, request: Request, started: float) -> None:
        if server.latency:  # the answer leaves `latency` after the request arrived, however long parsing took
            with server._lock:
                latency = server.latency + (server._rng.uniform(-server.jitter, server.jitter) if server.jitter else 0.0)
            time.sleep(max(0.0, latency - (time.monotonic() - started)))
        if server.expected_key is not None and request.authorization != f"Bearer {server.expected_key}":
            server._record(request, None, 401, started)
            self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                       "code": "invalid_api_key"}})
            return
        fault = server._take_fault(request)
        kind = None if fault is None else fault.kind
        headers = {}
        if fault is not None and fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        if kind in ("429", "500", "401", "403", "404", "echo_auth"):
            status = {"429": 429, "500": 500, "401": 401, "403": 403, "404": 404, "echo_auth": 400}[kind]
            message = {
                429: "Rate limit reached for requests",
                500: "The server had an error while processing your request",
                401: "Incorrect API key provided",
                403: "You are not allowed to sample from this model",
                404: f"The model `{request.model}` does not exist or you do not have access to it.",
                400: f"Invalid request; you sent the header Authorization: {request.authorization}",
            }[status]
            server._record(request, fault, status, started)
            self._send(status, {"error": {"message": message, "type": "server_error", "code": None}}, headers)
            return
        if kind == "delay":
            time.sleep(fault.delay)
        answer = server.answer(request)
        if request.schema_name.startswith("criterion_"):  # one criterion: the answer object itself
            answer = answer[request.keys[0]]
        content: str | None = json.dumps(answer)
        refusal, finish = None, "stop"
        if kind == "malformed":
            content = content[: len(content) // 2]
        elif kind == "out_of_range":
            answer = _out_of_range(answer)
            content = json.dumps(answer)
        elif kind == "bad_score":
            if "score" in answer:  # one criterion: the answer object itself
                answer = {**answer, "score": fault.value}
            else:
                answer = {k: ({**v, "score": fault.value} if fault.keys is None or k in fault.keys else v)
                          for k, v in answer.items()}
            content = json.dumps(answer)
        elif kind == "missing_key":
            content = json.dumps({k: v for k, v in list(answer.items())[1:]}) if len(answer) > 1 else "{}"
        elif kind == "refusal":
            content, refusal = None, "I'm sorry, I can't help with that."
        elif kind == "truncated":
            content, finish = content[:20], "length"
        server._record(request, fault, 200, started)
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": 100 + 255 * len(request.images),
                      "completion_tokens": len(content or refusal or "") // 4,
                      "total_tokens": 100 + 255 * len(request.images) + len(content or refusal or "") // 4},
        })

    def _done(self) -> None:
        """The request stops counting as in flight when its answer is ready, before the answer is written:
        counting it until the handler returns would overlap it with the request the client sends as soon as
        it has the answer (a concurrency the client never had)."""
        if getattr(self, "_counted", False):
            self._counted = False
            with self.owner._lock:
                self.owner._active -= 1
                self.owner.last_end = time.monotonic()

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._done()
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); it will retry on a new connection


def _out_of_range(answer: dict[str, Any]) -> dict[str, Any]:
    if "preference" in answer:
        return {**answer, "preference": 1.7}
    if "score" in answer:
        return {**answer, "score": 1.7}
    return {k: {**v, "score": 1.7} for k, v in answer.items()}


def _parse_request(body: dict[str, Any], authorization: str | None) -> Request:
    schema_format = body.get("response_format") or {}
    spec = schema_format.get("json_schema") or {}
    name = spec.get("name", "")
    schema = spec.get("schema") or {}
    props = schema.get("properties", {})
    if "preference" in props:
        keys: tuple[str, ...] = ("preference",)
    elif "score" in props:
        keys = (name.removeprefix("criterion_"),)
    else:
        keys = tuple(props)
    images: dict[str, str] = {}
    texts: list[str] = []
    label = None
    for message in body.get("messages", []):
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                texts.append(part["text"])
                label = part["text"]
            elif part.get("type") == "image_url":
                images[label or f"image {len(images)}"] = part["image_url"]["url"]
    return Request(
        model=body.get("model", ""), schema_name=name, keys=keys, images=images, text="\n".join(texts),
        temperature=float(body.get("temperature") or 0.0), seed=body.get("seed"),
        max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"), authorization=authorization,
    )


@pytest.fixture
def llm_server() -> Iterator[FakeOpenAIServer]:
    """A fresh local OpenAI-compatible server for one test."""
    with FakeOpenAIServer() as server:
        yield server
