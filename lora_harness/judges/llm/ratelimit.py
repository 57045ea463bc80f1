"""Client-side rate limits and the retry policy for transient API failures.

Why not only the `openai` client's built-in retry: a 429 tells us the *account* is over its limit, so every
request of this process should wait, not just the one that got it; and tests and slow endpoints need the
backoff to be configurable. So the client runs with `max_retries=0` and `call_with_retries` retries here:
429, 408/409, 5xx, timeouts and connection errors, with exponential backoff and jitter, honouring
`Retry-After`/`retry-after-ms` when the server sends one (and pausing the whole limiter for that long).

Limits are per account, but `pytest -n 4` runs four processes: `runwide.SharedRateLimiter` keeps this
limiter's state in a file of the run so the workers draw from one bucket (not a quarter each).
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, TypeVar

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class TokenBucket:
    """`rate` units per second, holding at most `capacity`; a take larger than the capacity waits for a full
    bucket and then drives it negative, so oversized requests are allowed but paid for afterwards."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = max(capacity, 1e-9)
        self.level = self.capacity
        self.clock = clock
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, amount: float) -> float:
        self._refill()
        needed = min(amount, self.capacity)
        return 0.0 if self.level >= needed else (needed - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits shared by the threads of one process.

    Buckets hold one second's worth (at least one request / one request's tokens), so a burst at the start
    of a run stays within what providers enforce over short windows.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.requests = TokenBucket(requests_per_minute / 60, max(1.0, requests_per_minute / 60), clock) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute / 60, tokens_per_minute / 60, clock) if tokens_per_minute else None
        self.paused_until = 0.0

    @contextmanager
    def synced(self) -> Iterator[None]:
        """Exclusive access to the buckets (a subclass shares them with other processes)."""
        with self.lock:
            yield

    def acquire(self, tokens: int) -> float:
        """Block until a request of about `tokens` tokens may be sent; return the seconds waited."""
        waited = 0.0
        while True:
            with self.synced():
                now = self.clock()
                wait = max(0.0, self.paused_until - now)
                if self.requests is not None:
                    wait = max(wait, self.requests.wait_time(1))
                if self.tokens is not None:
                    wait = max(wait, self.tokens.wait_time(tokens))
                if wait <= 0.0:
                    if self.requests is not None:
                        self.requests.take(1)
                    if self.tokens is not None:
                        self.tokens.take(tokens)
                    return waited
            self.sleep(wait)
            waited += wait

    def settle(self, estimated: int, actual: int | None) -> None:
        """Correct the token bucket once the API reported what the request really used."""
        if self.tokens is None or actual is None:
            return
        with self.synced():
            if actual > estimated:
                self.tokens.take(actual - estimated)
            else:
                self.tokens.give_back(estimated - actual)

    def pause(self, seconds: float) -> None:
        """Hold every request of this process for `seconds` (a 429's Retry-After applies to the account)."""
        with self.synced():
            self.paused_until = max(self.paused_until, self.clock() + seconds)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    initial_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0  # a server asking for a longer wait is an outage, not a hiccup

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so retries spread out."""
        base = min(self.max_delay, self.initial_delay * 2**retry)
        return base / 2 + (rng or random).uniform(0, base / 2)


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date; None when absent or bad."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            if name == "retry-after":
                try:
                    parsed = email.utils.parsedate_to_datetime(value)
                except (TypeError, ValueError):
                    return None
                return max(0.0, parsed.timestamp() - now())
            continue
        return seconds if seconds >= 0 and seconds == seconds else None
    return None


@dataclass
class Attempts:
    """What it took to get one response: for the raw record and for tests."""

    retries: int = 0
    waited_s: float = 0.0
    last_error: str | None = None


class TransientFailure(Exception):
    """Retries are exhausted (or the server asked to wait too long); `.attempts` says what was tried."""

    def __init__(self, message: str, attempts: Attempts) -> None:
        super().__init__(message)
        self.attempts = attempts


def classify(exc: BaseException) -> tuple[bool, int | None, Mapping[str, str] | None]:
    """(retryable, HTTP status, response headers) of an exception raised by the openai client."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True, None, None
    if isinstance(exc, openai.APIStatusError):
        headers = dict(exc.response.headers) if exc.response is not None else None
        return exc.status_code in RETRYABLE_STATUS, exc.status_code, headers
    return False, None, None


def call_with_retries(
    send: Callable[[], T],
    *,
    policy: RetryPolicy,
    limiter: RateLimiter,
    tokens: int,
    describe: Callable[[BaseException], str],
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, Attempts]:
    """Send through the limiter; retry transient failures; re-raise anything else unchanged."""
    attempts = Attempts()
    while True:
        attempts.waited_s += limiter.acquire(tokens)
        try:
            return send(), attempts
        except Exception as exc:
            retryable, status, headers = classify(exc)
            if not retryable:
                raise
            attempts.last_error = describe(exc)
            wait = retry_after_seconds(headers)
            if wait is not None and wait > policy.max_retry_after:
                raise TransientFailure(
                    f"server asked to retry after {wait:.0f} s (more than max_retry_after = "
                    f"{policy.max_retry_after:g} s): {attempts.last_error}",
                    attempts,
                ) from None
            if attempts.retries >= policy.max_retries:
                raise TransientFailure(
                    f"gave up after {attempts.retries + 1} attempts ({attempts.last_error}); raise max_retries "
                    "or lower max_in_flight / requests_per_minute",
                    attempts,
                ) from None
            if wait is None:
                wait = policy.backoff(attempts.retries)
            elif status == 429:
                limiter.pause(wait)  # the whole process backs off, not just this request
            attempts.retries += 1
            attempts.waited_s += wait
            sleep(wait)
