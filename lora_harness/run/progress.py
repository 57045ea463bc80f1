"""Per-phase progress lines with an ETA for long runs ("judging: 12/40 checkpoints ... ETA 0:03:05").

pytest's own progress counts tests; a person waiting on a sweep wants to know how many checkpoints are done
and when the rest will be. The tracker is fed finished work units (an image of a checkpoint) and returns a
line when a group completes, at most one per `interval` seconds, so short runs stay quiet and long runs are
not flooded. It knows nothing about pytest; the plugin feeds it test reports (which xdist forwards from every
worker to the controller) and prints what it returns. Other phases (generation) can use it the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class PhaseProgress:
    phase: str  # "judging", "generation"
    total_groups: int
    total_items: int
    interval: float = 10.0  # seconds between lines; 0: a line for every finished group
    clock: Callable[[], float] = time.monotonic
    started: float | None = None
    items_done: int = 0
    groups_done: int = 0
    _group_done: dict[str, int] = field(default_factory=dict)
    _group_size: dict[str, int] = field(default_factory=dict)
    _last_line: float | None = None

    def item_done(self, group: str, group_size: int) -> str | None:
        """Count one finished unit of `group`; a progress line when the group completes and one is due."""
        now = self.clock()
        if self.started is None:
            self.started = now
        self.items_done += 1
        self._group_size[group] = group_size
        done = self._group_done[group] = self._group_done.get(group, 0) + 1
        if done != group_size:
            return None
        self.groups_done += 1
        finished = self.groups_done >= self.total_groups
        since = now - (self._last_line if self._last_line is not None else self.started)
        if since < self.interval and not (finished and self._last_line is not None):
            return None  # quiet for short runs; a run that printed progress also prints its end
        self._last_line = now
        return self.line(group, now)

    def eta_seconds(self, now: float) -> float | None:
        if self.started is None or self.items_done == 0:
            return None
        rate = (now - self.started) / self.items_done
        return rate * max(0, self.total_items - self.items_done)

    def line(self, group: str, now: float) -> str:
        elapsed = now - (self.started or now)
        eta = self.eta_seconds(now)
        tail = "done" if self.groups_done >= self.total_groups else f"ETA {format_duration(eta or 0)}"
        return (
            f"lora-harness {self.phase}: {self.groups_done}/{self.total_groups} checkpoints "
            f"({self.items_done}/{self.total_items} images), last {group}, "
            f"elapsed {format_duration(elapsed)}, {tail}"
        )
