"""Running many structured-output calls: cache first, then concurrently, with limits, retries and accounting.

A `CallPlan` is one question to the API (one image's criteria, or one ordered pair, for one repeat). The
runner answers each plan from the cache when it can; the rest go through a thread pool of `max_in_flight`
workers sharing one `openai` client and one rate limiter. A plan ends as a `CallOutcome`: the valid answers
by key, the problems of the keys it could not answer, and a record of every API call it took.

Failures are per plan and never raise: transient ones (429, 5xx, timeouts) are retried with backoff; an
unusable answer (malformed JSON, a score outside [0, 1], a refusal, a cut-off answer) is asked again
`answer_retries` times; what still fails becomes a problem message. Authentication and unknown-model
errors (401/403/404) stop every later request of the judge in the whole run (`runwide.FatalFlag`, shared
by the xdist workers), since every one of them would fail the same way; requests already on the wire are
the only ones that follow the first such answer. Request slots (`runwide.RequestSlots`) bound the requests
on the wire across the run's processes to `max_in_flight`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from lora_harness.judges.llm.cache import AnswerCache
from lora_harness.judges.llm.client import Endpoint, redact
from lora_harness.judges.llm.cost import CallRecord, Prices
from lora_harness.judges.llm.encoding import one_opencv_thread
from lora_harness.judges.llm.ratelimit import RateLimiter, RetryPolicy, TransientFailure, call_with_retries
from lora_harness.judges.llm.runwide import FatalFlag, RequestSlots
from lora_harness.judges.llm.schemas import response_format

FATAL_STATUS = frozenset({401, 403, 404})
ENCODE_WORKERS = max(1, min(8, os.cpu_count() or 2))  # encoding is CPU-bound: about one thread per core

# content -> (answers as plain dicts by key, problems by key)
Parser = Callable[[str | None], tuple[dict[str, dict[str, Any]], dict[str, str]]]


@dataclass(frozen=True)
class CallPlan:
    key: str  # cache key
    keys: tuple[str, ...]  # answer keys this call returns (criteria, or "preference")
    schema_name: str
    schema: dict[str, Any]
    build_messages: Callable[[], list[dict[str, Any]]]  # built in the worker: encoding is the costly part
    parse: Parser
    tokens: int  # estimate for the rate limiter
    seed: int | None = None
    cache_fields: dict[str, Any] = field(default_factory=dict)  # stored next to the answer, for humans


@dataclass
class CallOutcome:
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    calls: list[CallRecord] = field(default_factory=list)
    cached: bool = False
    fatal: str | None = None  # the run-wide stop this plan ran into (401/403/404), for the summary


@dataclass(frozen=True)
class CallSettings:
    temperature: float
    max_tokens: int
    max_tokens_param: str
    max_in_flight: int
    answer_retries: int
    retry: RetryPolicy
    prices: Prices


class CallRunner:
    def __init__(
        self,
        *,
        endpoint: Endpoint,
        client_factory: Callable[[], Any],
        settings: CallSettings,
        limiter: RateLimiter,
        cache: AnswerCache | None,
        judge_name: str,
        slots: RequestSlots | None = None,
        fatal: FatalFlag | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.slots = slots or RequestSlots(settings.max_in_flight)
        self.fatal = fatal or FatalFlag()
        self.client_factory = client_factory
        self.settings = settings
        self.limiter = limiter
        self.cache = cache
        self.judge_name = judge_name
        self._client: Any = None
        self._client_lock = threading.Lock()

    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self.client_factory()
            return self._client

    def run(self, plans: Sequence[CallPlan]) -> list[CallOutcome]:
        """Outcomes in plan order. Plans with the same key are asked once and share the outcome."""
        outcomes: dict[str, CallOutcome] = {}
        pending: dict[str, CallPlan] = {}
        for plan in plans:
            if plan.key in outcomes or plan.key in pending:
                continue
            hit = self._from_cache(plan)
            if hit is not None:
                outcomes[plan.key] = hit
            else:
                pending[plan.key] = plan
        if pending:
            for key, outcome in zip(pending, self._ask_all(list(pending.values()))):
                outcomes[key] = outcome
        return [outcomes[plan.key] for plan in plans]

    def _ask_all(self, plans: list[CallPlan]) -> list[CallOutcome]:
        """Request workers (max_in_flight) send; a few encoder threads prepare requests ahead of them.

        Encoding (JPEG, edge map) is CPU work and sending is waiting: preparing the next requests while
        earlier ones are in flight keeps every request slot busy. At most 2 x max_in_flight requests are
        prepared and unfinished at once, which bounds the memory their base64 images take.
        """
        workers = max(1, min(self.settings.max_in_flight, len(plans)))
        window = threading.Semaphore(2 * workers)
        prepared: list[Future] = [Future() for _ in plans]

        def prepare(plan: CallPlan, future: Future) -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(None if self.fatal.reason is not None else self._body(plan, plan.build_messages()))
            except Exception as exc:  # e.g. an image the encoder cannot handle: this plan only
                future.set_exception(exc)

        encoders = ThreadPoolExecutor(max_workers=min(ENCODE_WORKERS, len(plans)), thread_name_prefix=f"{self.judge_name}-encode")

        def feed() -> None:
            for plan, future in zip(plans, prepared):
                window.acquire()
                encoders.submit(prepare, plan, future)

        # Cache writes (fsync: ~5 ms each when 16 land at once) go to one writer thread, so a request slot
        # moves on to its next request as soon as its answer is parsed.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.judge_name}-cache")
        writes: list[Future] = []

        def ask(i: int) -> CallOutcome:
            outcome = self._ask(plans[i], prepared[i], window)
            if self.cache is not None and outcome.calls and not outcome.problems:
                writes.append(writer.submit(self._store, plans[i], outcome))
            return outcome

        with one_opencv_thread():
            feeder = threading.Thread(target=feed, name=f"{self.judge_name}-feed", daemon=True)
            feeder.start()
            try:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{self.judge_name}-call") as pool:
                    return list(pool.map(ask, range(len(plans))))
            finally:
                feeder.join()
                encoders.shutdown(wait=True)
                writer.shutdown(wait=True)
                self._report_failed_writes(writes)

    # --- one plan --------------------------------------------------------------------------------------

    def _from_cache(self, plan: CallPlan) -> CallOutcome | None:
        if self.cache is None:
            return None
        entry = self.cache.get(plan.key)
        if entry is None or not isinstance(entry.get("answers"), dict):
            return None
        answers = entry["answers"]
        if set(answers) != set(plan.keys):
            return None
        usage = entry.get("usage") or {}
        record = CallRecord(
            id=str(entry.get("call_id", plan.key[:16])),
            model=str(entry.get("model", self.endpoint.model)),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cost_usd=0.0,
            cached=True,
        )
        return CallOutcome(answers=answers, calls=[record], cached=True)

    def _ask(self, plan: CallPlan, prepared: Future, window: threading.Semaphore) -> CallOutcome:
        try:
            return self._ask_prepared(plan, prepared)
        finally:
            window.release()  # this request is done: the encoders may prepare another

    def _ask_prepared(self, plan: CallPlan, prepared: Future) -> CallOutcome:
        outcome = CallOutcome()
        try:
            body = prepared.result()
        except Exception as exc:
            outcome.problems = {key: f"could not build the request: {type(exc).__name__}: {exc}" for key in plan.keys}
            return outcome
        if self.fatal.reason is not None or body is None:
            return self._stopped(outcome, plan)
        problems: dict[str, str] = {}
        kept: dict[str, dict[str, Any]] = {}  # valid answers so far, by key, from any attempt
        for _ in range(self.settings.answer_retries + 1):
            if self.fatal.reason is not None:
                return self._stopped(outcome, plan, kept)
            try:
                response, attempts = call_with_retries(
                    lambda: self._send(body),
                    policy=self.settings.retry,
                    limiter=self.limiter,
                    tokens=plan.tokens,
                    describe=self._describe,
                )
            except TransientFailure as exc:
                return self._unanswered(outcome, plan, kept, self._redact(str(exc)))
            except _Stopped:
                return self._stopped(outcome, plan, kept)
            except Exception as exc:
                message, fatal = self._failure(exc)
                if fatal:
                    outcome.fatal = self.fatal.set(message)
                return self._unanswered(outcome, plan, kept, message)
            prompt_tokens, completion_tokens = _usage(response)
            self.limiter.settle(plan.tokens, None if prompt_tokens is None else prompt_tokens + (completion_tokens or 0))
            content, problem = _content(response, self.settings.max_tokens)
            answers, problems = ({}, {key: problem for key in plan.keys}) if problem else plan.parse(content)
            # A key answered validly once stays answered: a re-ask that fixes the other keys but spoils
            # this one must not turn a good answer into an error. (Later valid answers do not replace it.)
            for key, answer in answers.items():
                kept.setdefault(key, answer)
            problems = {key: message for key, message in problems.items() if key not in kept}
            outcome.calls.append(
                CallRecord(
                    id=uuid.uuid4().hex,
                    model=str(getattr(response, "model", None) or self.endpoint.model),
                    prompt_tokens=prompt_tokens or 0,
                    completion_tokens=completion_tokens or 0,
                    cost_usd=self.settings.prices.cost(prompt_tokens or 0, completion_tokens or 0),
                    retries=attempts.retries,
                    valid=not problems,
                )
            )
            if not problems:
                outcome.answers = {key: kept[key] for key in plan.keys}
                return outcome
        tries = self.settings.answer_retries + 1
        outcome.problems = {
            key: self._redact(f"{message} (asked {tries} time{'s' if tries > 1 else ''})") for key, message in problems.items()
        }
        outcome.answers = {key: kept[key] for key in plan.keys if key in kept}
        return outcome

    def _stopped(self, outcome: CallOutcome, plan: CallPlan, kept: dict[str, dict[str, Any]] | None = None) -> CallOutcome:
        """Not sent: a request of this run already got an answer no retry can fix."""
        reason = self.fatal.reason or "not sent"
        outcome.fatal = reason
        return self._unanswered(outcome, plan, kept or {}, f"not sent: an earlier request of this run failed with: {reason}")

    @staticmethod
    def _unanswered(outcome: CallOutcome, plan: CallPlan, kept: dict[str, dict[str, Any]], message: str) -> CallOutcome:
        """A re-ask failed outright: keys answered validly by an earlier attempt keep their answers."""
        outcome.answers = {key: kept[key] for key in plan.keys if key in kept}
        outcome.problems = {key: message for key in plan.keys if key not in kept}
        return outcome

    def _body(self, plan: CallPlan, messages: list[dict[str, Any]]) -> bytes:
        """The request as JSON bytes, built once per plan in an encoder thread (retries reuse it)."""
        payload: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": messages,
            "response_format": response_format(plan.schema_name, plan.schema),
            "temperature": self.settings.temperature,
            self.settings.max_tokens_param: self.settings.max_tokens,
        }
        if plan.seed is not None:
            payload["seed"] = plan.seed
        return json_body(payload)

    def _send(self, body: bytes) -> Any:
        # `post(content=...)` is the SDK's documented way to send a prepared body: same auth, headers,
        # errors and response model as `chat.completions.create`, without re-serialising (and, in `create`,
        # recursively transforming) hundreds of KB of base64 images on every attempt.
        from openai.types.chat import ChatCompletion

        # The run-wide stop is read after taking a slot and written before giving the slot back: no request
        # leaves once any worker has seen a 401/403/404 (see `runwide`).
        with self.slots.hold():
            if self.fatal.reason is not None:
                raise _Stopped(self.fatal.reason)
            try:
                return self.client().post("/chat/completions", content=body, cast_to=ChatCompletion)
            except Exception as exc:
                if getattr(exc, "status_code", None) in FATAL_STATUS:
                    self.fatal.set(self._failure(exc)[0])
                raise

    def _store(self, plan: CallPlan, outcome: CallOutcome) -> None:
        assert self.cache is not None
        last = outcome.calls[-1]
        self.cache.put(
            plan.key,
            {
                "answers": outcome.answers,
                "call_id": last.id,
                "model": last.model,
                "usage": {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens},
                "created_at": time.time(),
                "request": plan.cache_fields,
            },
        )

    def _report_failed_writes(self, writes: list[Future]) -> None:
        """A cache entry that could not be written costs a repeated call on the next run, never an answer."""
        failed = [f.exception() for f in writes if f.exception() is not None]
        if failed:
            where = self.cache.root if self.cache is not None else "?"
            warnings.warn(
                f"{self.judge_name}: {len(failed)} of {len(writes)} answers could not be written to the cache at "
                f"{where} ({type(failed[0]).__name__}: {self._redact(str(failed[0]))}); the scores are kept, "
                "a rerun asks for those answers again. Check free space and permissions there.",
                stacklevel=2,
            )

    # --- errors ----------------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact(text, self.endpoint.secrets())

    def _describe(self, exc: BaseException) -> str:
        status = getattr(exc, "status_code", None)
        text = f"{type(exc).__name__}" + (f" {status}" if status else "") + f": {_first_line(str(exc))}"
        return self._redact(text)

    def _failure(self, exc: BaseException) -> tuple[str, bool]:
        status = getattr(exc, "status_code", None)
        text = self._describe(exc)
        where = f"{self.endpoint.base_url or 'api.openai.com'}"
        if status == 401:
            return f"authentication failed at {where} ({text}); check {self.endpoint.api_key_env} (key from {self.endpoint.key_source})", True
        if status == 403:
            return f"access denied at {where} ({text}); does this key have access to model {self.endpoint.model!r}?", True
        if status == 404:
            return f"not found at {where} ({text}); check the model name {self.endpoint.model!r} and base_url", True
        return f"request failed: {text}", False


def json_body(payload: dict[str, Any]) -> bytes:
    """`payload` (a chat-completions request) as compact JSON bytes, image data URLs spliced in as they are.

    A base64 data URL needs no JSON escaping, yet `json.dumps` scans every character of it: ~1 ms of GIL
    time per request for the ~200 KB of images a rubric call carries. The rest of the request is still
    serialised by `json`, so the bytes are exactly what `json.dumps` would produce.
    """
    marker = f"{uuid.uuid4().hex}:"  # random per request: no text in the payload can contain it
    urls: list[str] = []
    messages = []
    for message in payload.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                url = (part.get("image_url") or {}).get("url") if part.get("type") == "image_url" else None
                if isinstance(url, str) and _splice_safe(url):
                    part = {**part, "image_url": {**part["image_url"], "url": f"{marker}{len(urls)}"}}
                    urls.append(url)
                parts.append(part)
            message = {**message, "content": parts}
        messages.append(message)
    skeleton = json.dumps({**payload, "messages": messages}, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    pieces = skeleton.split(f'"{marker}')
    out = [pieces[0].encode()]
    for piece in pieces[1:]:
        index, rest = piece.split('"', 1)
        out += [b'"', urls[int(index)].encode("ascii"), b'"', rest.encode()]
    return b"".join(out)


def _splice_safe(url: str) -> bool:
    """A base64 data URL: ASCII with no quote or backslash, so its JSON form is itself."""
    return url.startswith("data:") and url.isascii() and '"' not in url and "\\" not in url


class _Stopped(Exception):
    """Raised instead of sending when the run-wide stop flag is set (never retried: `classify` says no)."""


def _first_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _usage(response: Any) -> tuple[int | None, int | None]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return None, None
    return getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)


def _content(response: Any, max_tokens: int) -> tuple[str | None, str | None]:
    """The answer text, or why there is none (no choices, a refusal, an answer cut off at max_tokens)."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        return None, "response has no choices"
    choice = choices[0]
    message = getattr(choice, "message", None)
    refusal = getattr(message, "refusal", None)
    if refusal:
        return None, f"model refused: {_first_line(str(refusal), 200)}"
    if getattr(choice, "finish_reason", None) == "length":
        return None, f"answer cut off at max_tokens = {max_tokens}; raise max_tokens"
    return getattr(message, "content", None), None
