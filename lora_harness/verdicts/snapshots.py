"""Score snapshots with syrupy: a gated checkpoint's aggregates as small JSON, compared with tolerances.

`pytest evals --snapshot-update` writes `evals/__snapshots__/<test file>/<test id>.json` (one file per
gated checkpoint: mean, std, n and CI per metric, sorted keys, rounded, so a change reads well in a diff).
Later runs compare the current aggregates with it. Only the metric *means* decide, each within its
tolerance (`[snapshot] tolerance`, per metric `[snapshot.tolerances]`): judges and bootstrap intervals move
by tiny amounts between versions and machines, which must not fail a gate, while a real drop must. By
default only drops fail (`fail_on_improvement = true` makes any move beyond tolerance fail). Everything else
in the file (step, n, CI) is context that the failure diff shows.

Because matching is tolerant, `--snapshot-update` rewrites only snapshots that no longer match.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Mapping

from syrupy.extensions.json import JSONSnapshotExtension

from lora_harness.core.config import SnapshotConfig
from lora_harness.verdicts.stats import CheckpointAggregates

SNAPSHOT_FORMAT = "lora-harness/score-snapshot/1"


def snapshot_data(aggregates: CheckpointAggregates) -> dict[str, Any]:
    """What a snapshot file holds: the format tag and the checkpoint's aggregates."""
    return {"format": SNAPSHOT_FORMAT, **aggregates.as_dict()}


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    stored: float | None
    current: float | None
    tolerance: float
    status: str  # "ok", "regression", "improvement", "missing" (stored only), "new" (current only), "no value"

    @property
    def failed(self) -> bool:
        return self.status not in ("ok",)

    def describe(self) -> str:
        if self.status == "missing":
            return f"{self.metric}: in the snapshot ({self.stored}) but not produced now"
        if self.status == "new":
            return f"{self.metric}: produced now ({self.current}) but not in the snapshot; run with --snapshot-update"
        if self.status == "no value":
            return f"{self.metric}: no mean (snapshot {self.stored}, now {self.current}): no image has a value"
        diff = self.current - self.stored  # type: ignore[operator]
        verdict = {"ok": "within", "regression": "REGRESSION beyond", "improvement": "improvement beyond"}[self.status]
        return f"{self.metric}: snapshot {self.stored:.4f}, now {self.current:.4f}, difference {diff:+.4f} ({verdict} tolerance {self.tolerance:g})"


@dataclass(frozen=True)
class SnapshotVerdict:
    deltas: tuple[MetricDelta, ...]
    problem: str | None = None  # the stored file is not a score snapshot

    @property
    def matches(self) -> bool:
        return self.problem is None and not any(d.failed for d in self.deltas)

    def lines(self) -> list[str]:
        if self.problem:
            return [self.problem]
        failed = [d for d in self.deltas if d.failed]
        return [d.describe() for d in failed] + [d.describe() for d in self.deltas if not d.failed]


def compare_snapshot(current: Mapping[str, Any], stored: Mapping[str, Any], config: SnapshotConfig) -> SnapshotVerdict:
    """Metric means of `current` vs `stored`, each within `config`'s tolerance for that metric."""
    if not isinstance(stored, Mapping) or not isinstance(stored.get("metrics"), Mapping):
        return SnapshotVerdict((), "the stored snapshot is not a lora-harness score snapshot; rewrite it with --snapshot-update")
    now, then = current.get("metrics", {}), stored["metrics"]
    deltas = []
    for metric in sorted(set(now) | set(then)):
        tolerance = config.tolerances.get(metric, config.tolerance)
        old = _mean(then.get(metric))
        new = _mean(now.get(metric))
        if metric not in now:
            status = "missing"
        elif metric not in then:
            status = "new"
        elif old is None or new is None:
            status = "ok" if old is None and new is None else "no value"
        elif new < old - tolerance - 1e-12:
            status = "regression"
        elif new > old + tolerance + 1e-12 and config.fail_on_improvement:
            status = "improvement"
        else:
            status = "ok"
        deltas.append(MetricDelta(metric, old, new, tolerance, status))
    return SnapshotVerdict(tuple(deltas))


def _mean(entry: Any) -> float | None:
    if not isinstance(entry, Mapping):
        return None
    value = entry.get("mean")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


class ScoreSnapshotExtension(JSONSnapshotExtension):
    """syrupy JSON extension whose `matches` compares metric means with tolerances, not text."""

    settings: SnapshotConfig = SnapshotConfig()
    create_command: str = "pytest --snapshot-update"

    def serialize(self, data: Any, **kwargs: Any) -> str:
        if isinstance(data, CheckpointAggregates):
            data = snapshot_data(data)
        return super().serialize(data, **kwargs)

    def matches(self, *, serialized_data: Any, snapshot_data: Any) -> bool:
        verdict = self._verdict(serialized_data, snapshot_data)
        return verdict is not None and verdict.matches

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        """The per-metric verdict first (what a reader needs), then syrupy's line diff of the files."""
        if not snapshot_data:
            yield f"no stored snapshot: store this checkpoint's scores with `{self.create_command}`"
            return
        verdict = self._verdict(serialized_data, snapshot_data)
        if verdict is not None:
            yield from verdict.lines()
        yield from super().diff_lines(serialized_data, snapshot_data)

    def _verdict(self, serialized: Any, stored: Any) -> SnapshotVerdict | None:
        if stored is None:
            return None
        try:
            current, previous = json.loads(serialized), json.loads(stored)
        except (TypeError, ValueError):
            return SnapshotVerdict((), "the stored snapshot is not valid JSON; rewrite it with --snapshot-update")
        return compare_snapshot(current, previous, self.settings)


@lru_cache(maxsize=None)
def _extension_for(settings_json: str, create_command: str) -> type[ScoreSnapshotExtension]:
    settings = SnapshotConfig.model_validate_json(settings_json)
    return type("ScoreSnapshotExtension", (ScoreSnapshotExtension,), {"settings": settings, "create_command": create_command})


def extension_for(config: SnapshotConfig, create_command: str = "pytest --snapshot-update") -> type[ScoreSnapshotExtension]:
    """The extension class carrying `config`'s tolerances and the command that stores a missing snapshot
    (syrupy instantiates extensions without arguments)."""
    return _extension_for(config.model_dump_json(), create_command)
