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
from typing import Any, Callable, Sequence, TypeVar

from lora_harness.judges.llm.cache import AnswerCache
from lora_harness.judges.llm.client import Endpoint, redact
from lora_harness.judges.llm.cost import CallRecord, Prices
from lora_harness.judges.llm.encoding import one_opencv_thread
from lora_harness.judges.llm.ratelimit import RateLimiter, RetryPolicy, TransientFailure, call_with_retries
from lora_harness.judges.llm.pool import AHEAD, URGENT, PriorityPool, Task
from lora_harness.judges.llm.runwide import Claims, FatalFlag, RequestSlots
from lora_harness.judges.llm.schemas import response_format

T = TypeVar("T")

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
        claims: Claims | None = None,
        run_id: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.slots = slots or RequestSlots(settings.max_in_flight)
        self.fatal = fatal or FatalFlag()
        self.claims = claims  # other workers of the run may ask the same questions ahead of their tests
        self.run_id = run_id  # an answer cached by this run (another worker asked it) is this run's call
        self.client_factory = client_factory
        self.settings = settings
        self.limiter = limiter
        self.cache = cache
        self.judge_name = judge_name
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._pools_lock = threading.Lock()
        self._calls: PriorityPool | None = None
        self._tasks: dict[str, Task] = {}  # queued or running plans by key, to move a needed one forward
        self._unstored: dict[str, Future[CallOutcome]] = {}  # taken ahead and settled: for the next ask
        self._ahead_keys: set[str] = set()  # queued ahead and nobody has asked for them since
        self._encoders: ThreadPoolExecutor | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: dict[str, Future[CallOutcome]] = {}
        self._closed = False
        self._writes = 0
        self._failed_writes: list[BaseException] = []
        self._backlog = 0  # plans this process queued to ask and not yet settled
        self._waiting: list[tuple[CallPlan, Future[CallOutcome]]] = []  # asked by another worker right now
        self._poller: threading.Thread | None = None

    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self.client_factory()
            return self._client

    def run(self, plans: Sequence[CallPlan]) -> list[CallOutcome]:
        """Outcomes in plan order. Plans with the same key are asked once and share the outcome."""
        outcomes = [future.result() for future in self.submit(plans)]
        self.report_failed_writes()
        return outcomes

    def submit(self, plans: Sequence[CallPlan], *, ahead: bool = False) -> list["Future[CallOutcome]"]:
        """Queue `plans` and return their outcomes as futures, at once.

        One pool of `max_in_flight` request threads serves every submission of this process, so a caller
        can submit the next checkpoints while an earlier one is still in flight: a checkpoint of three
        images no longer caps concurrency at three, nor waits for its slowest answer before the next one
        starts. Plain submissions go first come first served; `ahead=True` queues behind all of them (work
        taken ahead must not delay a test that is waiting), and a later plain submission of a plan queued
        ahead moves it to the front. Cache hits are answered here, synchronously. A plan whose key is
        already in flight (the same question again) shares that future instead of asking twice; an outcome
        taken ahead is kept, with its call records, for the first submission that asks for it. Under xdist
        a question another worker is asking (its claim) is waited for in the shared cache, not asked again.
        """
        futures: list[Future[CallOutcome]] = []
        mine: dict[str, Future[CallOutcome]] = {}
        for plan in plans:
            with self._pools_lock:
                future = mine.get(plan.key) or self._inflight.get(plan.key) or self._unstored.pop(plan.key, None)
                task = self._tasks.get(plan.key)
                if future is not None and not ahead:
                    self._ahead_keys.discard(plan.key)  # this caller holds the future now
                    if task is not None and self._calls is not None:
                        self._calls.promote(task)
            if future is None:
                hit = self._from_cache(plan)
                if hit is None and self.claims is not None:
                    hit, mine_now = self._claim(plan)
                    if hit is None and not mine_now:
                        future = self._wait_for_other(plan)
                if hit is not None:
                    future = Future()
                    future.set_result(hit)
                elif future is None:
                    future = self._enqueue(plan, claimed=self.claims is not None, ahead=ahead)
            mine[plan.key] = future
            futures.append(future)
        return futures

    @property
    def backlog(self) -> int:
        """Plans this process has queued to ask and not yet settled: how far ahead it is judging."""
        with self._pools_lock:
            return self._backlog

    def _claim(self, plan: CallPlan) -> tuple[CallOutcome | None, bool]:
        """(the cached answer, False) when another worker answered meanwhile; (None, True) when this process
        now holds the claim and must ask; (None, False) when another worker is asking right now.

        The cache is read again after the claim is taken: a worker caches its answer and then drops its
        claim, so a miss read before that drop and a claim taken after it would ask a second time."""
        assert self.claims is not None
        if not self.claims.take(plan.key):
            return None, False
        hit = self._from_cache(plan)
        if hit is not None:
            self.claims.drop(plan.key)
            return hit, False
        return None, True

    def _wait_for_other(self, plan: CallPlan) -> "Future[CallOutcome]":
        """Another worker is asking this very question: wait for its answer in the shared cache (or for its
        claim to go, when it failed or died: then ask here)."""
        done: Future[CallOutcome] = Future()
        with self._pools_lock:
            self._inflight[plan.key] = done
            self._waiting.append((plan, done))
            if self._poller is None or not self._poller.is_alive():
                self._poller = threading.Thread(target=self._poll, name=f"{self.judge_name}-wait", daemon=True)
                self._poller.start()
        return done

    def _poll(self) -> None:
        while True:
            with self._pools_lock:
                waiting, self._waiting = self._waiting, []
                if not waiting:
                    self._poller = None
                    return
            still = []
            for plan, done in waiting:
                hit = self._from_cache(plan)
                if hit is not None:
                    with self._pools_lock:
                        self._inflight.pop(plan.key, None)
                    done.set_result(hit)
                elif self.fatal.reason is not None:
                    with self._pools_lock:
                        self._inflight.pop(plan.key, None)
                    done.set_result(self._stopped(CallOutcome(), plan))
                else:
                    hit, mine_now = self._claim(plan)
                    if hit is not None:
                        with self._pools_lock:
                            self._inflight.pop(plan.key, None)
                        done.set_result(hit)
                    elif mine_now:
                        self._enqueue(plan, done, claimed=True, ahead=False)  # somebody waits for it now
                    else:
                        still.append((plan, done))
            with self._pools_lock:
                self._waiting = still + self._waiting
            time.sleep(0.02)

    def _enqueue(
        self, plan: CallPlan, done: "Future[CallOutcome] | None" = None, claimed: bool = False, ahead: bool = False
    ) -> "Future[CallOutcome]":
        """Encode in the encoder pool (CPU), then ask in the request pool (waiting); both FIFO and long-lived.

        Encoding (JPEG, edge map) is CPU work and sending is waiting: preparing the next requests while
        earlier ones are in flight keeps every request slot busy.
        """
        with self._pools_lock:
            if self._closed:
                raise RuntimeError(f"{self.judge_name}: the call runner was closed")
            if self._calls is None:
                self._calls = PriorityPool(self.settings.max_in_flight, f"{self.judge_name}-call")
                self._encoders = ThreadPoolExecutor(max_workers=ENCODE_WORKERS, thread_name_prefix=f"{self.judge_name}-encode")
                # Cache writes (fsync: ~5 ms each when 16 land at once) go to one writer thread, so a request
                # slot moves on to its next request as soon as its answer is parsed.
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.judge_name}-cache")
            if done is None:
                done = Future()
            self._inflight[plan.key] = done
            self._backlog += 1
            if ahead:
                self._ahead_keys.add(plan.key)
            _OPENCV.enter()
            prepared = self._encoders.submit(self._prepare, plan)
            self._tasks[plan.key] = self._calls.submit(AHEAD if ahead else URGENT, self._ask, plan, prepared, done, claimed)
        return done

    def _prepare(self, plan: CallPlan) -> bytes | None:
        """The request body, or None when the run was stopped (nothing will be sent: do not encode)."""
        return None if self.fatal.reason is not None else self._body(plan, plan.build_messages())

    def _ask(self, plan: CallPlan, prepared: Future, done: "Future[CallOutcome]", claimed: bool) -> None:
        written = False
        try:
            if prepared.cancel():  # still queued behind plans taken ahead: encode it here, now
                prepared = Future()
                try:
                    prepared.set_result(self._prepare(plan))
                except Exception as exc:
                    prepared.set_exception(exc)
            outcome = self._ask_prepared(plan, prepared)
            if self.cache is not None and outcome.calls and not outcome.problems:
                assert self._writer is not None
                write = self._writer.submit(self._store, plan, outcome)
                # in flight until the entry is on disk: the same question submitted meanwhile (here or, through
                # the claim, in another worker) shares this answer instead of asking again
                write.add_done_callback(lambda w: self._count_write(w, plan.key, claimed))
                written = True
            done.set_result(outcome)
        except BaseException as exc:  # a bug here must fail this plan's score, not hang its caller
            done.set_exception(exc)
        finally:
            _OPENCV.leave()
            with self._pools_lock:
                self._backlog -= 1
            if not written:
                self._settled(plan.key, claimed)

    def _settled(self, key: str, claimed: bool) -> None:
        with self._pools_lock:
            done = self._inflight.pop(key, None)
            self._tasks.pop(key, None)
            if key in self._ahead_keys:  # nobody holds it yet: keep it, with its call records, for who asks
                self._ahead_keys.discard(key)
                if done is not None:
                    self._unstored[key] = done
        if claimed and self.claims is not None:
            self.claims.drop(key)

    def close(self) -> None:
        """Stop the pools once queued work is done (a runner replaced by another; process end)."""
        with self._pools_lock:
            self._closed = True
            pools = [p for p in (self._calls, self._encoders, self._writer) if p is not None]
        for pool in pools:  # queued plans still finish: their callers wait for them
            pool.shutdown() if isinstance(pool, PriorityPool) else pool.shutdown(wait=False)

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
        prompt_tokens, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        # Asked by another worker of this same run (judging ahead): a call of this run, with its cost, not a
        # cache hit; its id is the one that worker used, so the run's totals count it once.
        this_run = self.run_id is not None and entry.get("run_id") == self.run_id
        record = CallRecord(
            id=str(entry.get("call_id", plan.key[:16])),
            model=str(entry.get("model", self.endpoint.model)),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=self.settings.prices.cost(prompt_tokens, completion_tokens) if this_run else 0.0,
            cached=not this_run,
        )
        return CallOutcome(answers=answers, calls=[record], cached=not this_run)

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
                "run_id": self.run_id,
                "request": plan.cache_fields,
            },
        )

    def _count_write(self, write: Future, key: str, claimed: bool) -> None:
        self._settled(key, claimed)
        with self._pools_lock:
            self._writes += 1
            if write.exception() is not None:
                self._failed_writes.append(write.exception())

    def report_failed_writes(self) -> None:
        """Warn about cache entries that could not be written since the last report, after waiting for the
        writes queued so far. A lost entry costs a repeated call on the next run, never an answer."""
        with self._pools_lock:
            writer = self._writer
        if writer is not None:
            try:
                writer.submit(lambda: None).result()  # one FIFO thread: every earlier write is done
            except RuntimeError:
                pass  # closed
        with self._pools_lock:
            failed, total = self._failed_writes, self._writes
            self._failed_writes, self._writes = [], 0
        if failed:
            where = self.cache.root if self.cache is not None else "?"
            warnings.warn(
                f"{self.judge_name}: {len(failed)} of {total} answers could not be written to the cache at "
                f"{where} ({type(failed[0]).__name__}: {self._redact(str(failed[0]))}); the scores are kept, "
                "a rerun asks for those answers again. Check free space and permissions there.",
                stacklevel=3,
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


def when_all(futures: Sequence[Future], make: Callable[[], T]) -> "Future[T]":
    """A future of `make()`, called (in the thread that finishes the last of `futures`) once all are done.
    An exception from `make` (e.g. one of the futures failed) becomes the result future's exception."""
    result: Future[T] = Future()
    remaining = [len(futures)]
    lock = threading.Lock()

    def finish() -> None:
        try:
            result.set_result(make())
        except BaseException as exc:
            result.set_exception(exc)

    def one_done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            finish()

    if not futures:
        finish()
    for future in futures:
        future.add_done_callback(one_done)
    return result


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


class _OneOpenCvThread:
    """`one_opencv_thread` for as long as any plan of any runner is being encoded or asked (reference
    counted: plans of overlapping submissions must not restore OpenCV's pool under each other's feet)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._scope: Any = None

    def enter(self) -> None:
        with self._lock:
            self._count += 1
            if self._count == 1:
                self._scope = one_opencv_thread()
                self._scope.__enter__()

    def leave(self) -> None:
        with self._lock:
            self._count -= 1
            if self._count == 0 and self._scope is not None:
                scope, self._scope = self._scope, None
                scope.__exit__(None, None, None)


_OPENCV = _OneOpenCvThread()


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
