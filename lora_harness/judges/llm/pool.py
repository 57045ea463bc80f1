"""A fixed pool of threads taking tasks by priority, then first come first served; a queued task can be
moved to the front.

Why not `ThreadPoolExecutor`: its queue is strictly FIFO. The LLM judges queue requests for the next
checkpoints while a test waits for its own (see `Harness._submit_ahead`); the waiting test's requests must
go before those taken ahead, including requests that were queued ahead earlier and are needed now
(`promote`). Threads are daemons: a pool left with queued work ahead never holds the process open.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Any, Callable

URGENT, AHEAD = 0, 1


class Task:
    """One queued call; runs at most once however often it is promoted."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self._lock = threading.Lock()
        self.started = False

    def claim(self) -> bool:
        with self._lock:
            if self.started:
                return False
            self.started = True
            return True


class PriorityPool:
    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Task | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> Task:
        task = Task(fn, args)
        self._queue.put((priority, next(self._seq), task))
        return task

    def promote(self, task: Task) -> None:
        """Queue `task` again as urgent; whichever entry a thread reaches first runs it, the other is skipped."""
        if not task.started:
            self._queue.put((URGENT, next(self._seq), task))

    def shutdown(self) -> None:
        """Threads end once the work queued before this is done."""
        for _ in self._threads:
            self._queue.put((AHEAD + 1, next(self._seq), None))

    def _work(self) -> None:
        while True:
            _, _, task = self._queue.get()
            if task is None:
                return
            if task.claim():
                task.fn(*task.args)  # the task reports its own errors (it sets its future)
