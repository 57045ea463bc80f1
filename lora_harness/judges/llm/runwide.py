"""What the processes of one run share about an LLM judge: request slots, rate-limit state and a stop flag.

`pytest -n 4` runs four processes against one account. Dividing `max_in_flight` (and the per-minute limits)
by the worker count with a floor is not exact: `max_in_flight = 1` under `-n 2` sent two requests at once,
and an idle worker's share was wasted while another was busy. So the limits live in a folder of the run
(`reports/<run>/cache/llm-run/<judge>/`), coordinated with `flock`:

* `slot-NN.lock`: one file per request slot. A request holds an exclusive lock on one of them while it is
  on the wire, so at most `max_in_flight` requests of the whole run are at the server at once. Locks belong
  to the open file: a worker killed with SIGKILL releases its slots with its process, nothing goes stale.
* `limits.lock` + `limits.json`: the token buckets of `requests_per_minute` / `tokens_per_minute` and a 429's
  pause, read and written under one lock, so the buckets are the account's, not a quarter each.
* `fatal-<run id>.txt`: written by the first worker whose request got 401/403/404 before it releases that
  request's slot; every request checks it after taking a slot and before sending. A request sent after the
  flag exists is therefore impossible, and every request sent before it held a slot at that moment: a wrong
  key costs at most `max_in_flight` requests in the whole run. The file is per run id, so a rerun after
  fixing the key is not stopped by an old run's flag.

With one process (no xdist) the same classes work without files: a semaphore and an in-process flag.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from lora_harness.judges.llm.ratelimit import RateLimiter

RUN_SUBDIR = "llm-run"
_POLL_START, _POLL_MAX = 0.001, 0.02  # seconds between tries when every slot of the run is taken


def run_folder(cache_dir: Path | None, judge: str) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / RUN_SUBDIR / judge


class RequestSlots:
    """At most `count` requests in flight: in this process (a semaphore) and, with `folder`, in the run."""

    def __init__(self, count: int, folder: Path | None = None) -> None:
        self.count = max(1, count)
        self.folder = folder
        self._local = threading.BoundedSemaphore(self.count)
        self._lock = threading.Lock()
        self._held: set[int] = set()
        self._fds: dict[int, int] = {}
        self._next = 0  # where this process starts looking: spreads processes over the slot files
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def _fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is None:
            assert self.folder is not None
            fd = os.open(self.folder / f"slot-{index:03d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._fds[index] = fd
        return fd

    def _try_file_slot(self) -> int | None:
        with self._lock:
            for offset in range(self.count):
                index = (self._next + offset) % self.count
                if index in self._held:
                    continue
                try:
                    fcntl.flock(self._fd(index), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                self._held.add(index)
                self._next = (index + 1) % self.count
                return index
        return None

    def _release_file_slot(self, index: int) -> None:
        with self._lock:
            fcntl.flock(self._fds[index], fcntl.LOCK_UN)
            self._held.discard(index)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Block until this request may be on the wire; release when the block ends (answer or error)."""
        self._local.acquire()
        index = None
        try:
            if self.folder is not None:
                delay = _POLL_START
                while (index := self._try_file_slot()) is None:
                    time.sleep(delay)
                    delay = min(_POLL_MAX, delay * 2)
            yield
        finally:
            if index is not None:
                self._release_file_slot(index)
            self._local.release()

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._held.clear()


class FatalFlag:
    """Set once, by the first request that got an answer no retry can fix; read before every send."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._reason: str | None = None
        self._lock = threading.Lock()

    @property
    def reason(self) -> str | None:
        if self._reason is None and self.path is not None:
            try:
                text = self.path.read_text(encoding="utf-8").strip()
            except (FileNotFoundError, OSError):
                return None
            if text:
                self._reason = text  # once set, set for good: no more reads
        return self._reason

    def set(self, reason: str) -> str:
        """Record `reason` unless another request (here or in another worker) already did; return the one
        that stands. Written atomically (temp file + rename), so a reader never sees half a message."""
        with self._lock:
            current = self.reason
            if current is not None:
                return current
            self._reason = reason
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                tmp.write_text(reason + "\n", encoding="utf-8")
                try:
                    os.link(tmp, self.path)  # fails when another worker was first: keep theirs
                except FileExistsError:
                    self._reason = None
                finally:
                    tmp.unlink(missing_ok=True)
            return self.reason or reason


class SharedRateLimiter(RateLimiter):
    """`RateLimiter` whose buckets and pause live in `folder/limits.json`, shared by the run's processes.

    Every decision reads the state, changes it and writes it back under an exclusive `flock`, so workers
    draw from one bucket. `time.monotonic` is the machine's clock (same in every process on Linux).
    """

    def __init__(
        self,
        folder: Path,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(requests_per_minute, tokens_per_minute, clock=clock, sleep=sleep)
        folder.mkdir(parents=True, exist_ok=True)
        self.state_path = folder / "limits.json"
        self._lock_path = folder / "limits.lock"

    @contextmanager
    def synced(self) -> Iterator[None]:
        with self.lock:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._load()
                yield
                self._save()
            finally:
                os.close(fd)  # closing the descriptor releases the lock

    def _load(self) -> None:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, OSError, ValueError):
            return  # first use (or unreadable): full buckets, no pause
        now = self.clock()
        for name in ("requests", "tokens"):
            bucket, saved = getattr(self, name), state.get(name)
            if bucket is None or not isinstance(saved, dict):
                continue
            updated = float(saved.get("updated", now))
            if updated > now:  # written before a reboot (monotonic restarted): treat as long ago
                continue
            bucket.level = min(bucket.capacity, float(saved.get("level", bucket.capacity)))
            bucket.updated = updated
        paused = float(state.get("paused_until", 0.0))
        self.paused_until = paused if paused <= now + 3600 else 0.0

    def _save(self) -> None:
        state: dict[str, object] = {"paused_until": self.paused_until}
        for name in ("requests", "tokens"):
            bucket = getattr(self, name)
            if bucket is not None:
                state[name] = {"level": bucket.level, "updated": bucket.updated}
        tmp = self.state_path.with_name(f".limits.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.state_path)


class Claims:
    """Which process of the run is asking a question (`claims-<run id>/<cache key>`, holding its pid).

    Workers judge ahead of their tests (the next checkpoints in the run's order), so two workers may reach
    the same question: the first to create the claim file asks; the other waits for the answer to appear in
    the shared cache. A claim is dropped when its question is settled (answered and cached, or failed, so a
    waiter asks itself), and a claim whose process is gone (killed) is taken over.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()

    def _path(self, key: str) -> Path:
        return self.folder / key

    def take(self, key: str) -> bool:
        """True when this process now holds the claim (it must `drop` it), False when a live one does."""
        path = self._path(key)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner(path)
                if owner is None:
                    continue  # dropped meanwhile: try again
                if owner == _WRITING or owner == self.pid or _alive(owner):
                    return False
                path.unlink(missing_ok=True)  # its process died mid-question: take it over
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(self.pid))
            return True
        return False

    def drop(self, key: str) -> None:
        path = self._path(key)
        if self._owner(path) == self.pid:
            path.unlink(missing_ok=True)

    @staticmethod
    def _owner(path: Path) -> int | None:
        """The claiming pid; `_WRITING` while its creator has not written it yet; None when no claim."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return _WRITING
        try:
            return int(text)
        except ValueError:
            return _WRITING


_WRITING = -1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
