"""The per-checkpoint x metric table: what the terminal prints at the end and what CSV readers recompute."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

from lora_harness.checks.cases import CHECK_ROLES
from lora_harness.config import StatsConfig, Threshold
from lora_harness.verdicts.gates import checkpoint_findings
from lora_harness.report.csv import metric_order, step_label
from lora_harness.store import ScoreRow


@dataclass(frozen=True)
class MetricSummary:
    loraname: str
    step: str
    metric: str
    mean: float | None
    n: int
    failures: int  # images under the per-image minimum
    errors: int  # images the judge could not score (error set); value None without error is "missing"
    checkpoint_ok: bool | None  # the checkpoint test's verdict for this metric; None when no such threshold


def summarize(
    rows: Iterable[ScoreRow], thresholds: Mapping[str, Threshold], stats: StatsConfig | None = None
) -> list[MetricSummary]:
    groups: dict[tuple[str, str, int, str], list[ScoreRow]] = defaultdict(list)
    for row in rows:
        groups[(row.loraname, row.step_kind, row.training_step, row.metric)].append(row)
    metrics = metric_order({key[3] for key in groups})
    out = []
    for (loraname, kind, step, metric), group in sorted(
        groups.items(), key=lambda item: (item[0][:3], metrics.index(item[0][3]))
    ):
        values = [r.value for r in group if r.value is not None and not math.isnan(r.value)]
        # leakage / strength images (lora_harness.checks) are judged by their own tests, not trigger-prompt minimums
        threshold = Threshold() if group[0].variant in CHECK_ROLES else thresholds.get(metric, Threshold())
        mean = sum(values) / len(values) if values else None
        out.append(
            MetricSummary(
                loraname=loraname,
                step=step_label(step, kind),
                metric=metric,
                mean=mean,
                n=len(values),
                failures=sum(1 for v in values if threshold.image is not None and v < threshold.image),
                errors=sum(1 for r in group if r.error is not None),
                # the same rule as the checkpoint test (mean or CI lower bound), so table and verdict agree
                checkpoint_ok=None
                if threshold.checkpoint is None or mean is None
                else not checkpoint_findings({metric: values}, {metric: threshold}, stats),
            )
        )
    return out


def format_table(summaries: list[MetricSummary], gated: set[tuple[str, str]] = frozenset()) -> str:
    """A fixed-width table; gated checkpoints are marked `*`, failing checkpoint means `!`."""
    if not summaries:
        return "(no scores recorded)"
    metrics = metric_order({s.metric for s in summaries})
    cell = {(s.loraname, s.step, s.metric): s for s in summaries}
    checkpoints = sorted({(s.loraname, s.step) for s in summaries})
    name_width = max(len("checkpoint"), *(len(f"{name} {step}") + 2 for name, step in checkpoints))
    rows: list[tuple[str, list[str]]] = []
    for name, step in checkpoints:
        label = f"{'*' if (name, step) in gated else ' '} {name} {step}"
        cells: list[str] = []
        for metric in metrics:
            s = cell.get((name, step, metric))
            if s is None or s.mean is None:
                text = "-" if s is None else (f"error x{s.errors}" if s.errors else "missing")
            else:
                text = f"{s.mean:.3f} n={s.n}"
                if s.failures:
                    text += f" fail={s.failures}"
                if s.errors:
                    text += f" err={s.errors}"
                if s.checkpoint_ok is False:
                    text = "!" + text
            cells.append(text)
        rows.append((label, cells))
    # wide enough for the longest cell too, so `fail=`/`err=` never run into the next column
    width = max(18, *(len(m) for m in metrics), *(len(text) for _, cells in rows for text in cells))
    lines = ["checkpoint".ljust(name_width) + "".join(m.rjust(width + 2) for m in metrics)]
    for label, cells in rows:
        lines.append(label.ljust(name_width) + "".join(text.rjust(width + 2) for text in cells))
    lines.append("* gated checkpoint   ! mean below the per-checkpoint minimum   fail = images below the per-image minimum")
    return "\n".join(lines)
