"""The end-of-run terminal table: the report's checkpoint view, printed in fixed width.

It is rendered from `report.view.build_view`, the same records `report.html` shows, whose verdicts come
from the verdict layer's one rule; the table, the report, `run.json` and the tests therefore agree.
"""

from __future__ import annotations

from lora_harness.report.view import CheckpointView, ReportView

LEGEND = (
    "* gated checkpoint   ! fails the per-checkpoint minimum or maximum   ? inconclusive (the interval straddles it)   "
    "fail = images below the per-image minimum or above the per-image maximum"
)


def _cell(ck: CheckpointView, metric: str) -> str:
    cell = ck.cells.get(metric)
    if cell is None:
        return "-"
    if cell.mean is None:
        return f"error x{cell.errors}" if cell.errors else "missing"
    text = f"{cell.mean:.3f} n={cell.n}"
    if cell.failures:
        text += f" fail={cell.failures}"
    if cell.errors:
        text += f" err={cell.errors}"
    if cell.ok is False:
        return "!" + text
    return "?" + text if cell.undecided else text


def format_table(view: ReportView) -> str:
    """A fixed-width table, one row per checkpoint with its test's verdict, one column per metric."""
    if not view.checkpoints:
        return "(no scores recorded)"
    metrics = view.metrics
    labels = [f"{'*' if ck.gated else ' '} {ck.loraname} {ck.step}" for ck in view.checkpoints]
    rows = [(label, ck.status, [_cell(ck, m) for m in metrics]) for label, ck in zip(labels, view.checkpoints)]
    name_width = max(len("checkpoint"), *(len(label) for label in labels)) + 2
    status_width = max(len("verdict"), *(len(status) for _, status, _ in rows)) + 2
    # wide enough for the longest cell too, so `fail=`/`err=` never run into the next column
    width = max(18, *(len(m) for m in metrics), *(len(text) for _, _, cells in rows for text in cells))
    lines = ["checkpoint".ljust(name_width) + "verdict".ljust(status_width) + "".join(m.rjust(width + 2) for m in metrics)]
    for label, status, cells in rows:
        lines.append(label.ljust(name_width) + status.ljust(status_width) + "".join(text.rjust(width + 2) for text in cells))
    lines.append(LEGEND)
    return "\n".join(lines)


def verdict_line(view: ReportView) -> str:
    """The run's word (`view.badge`) and the gated decisions that made it: checkpoints from the scores, and
    the verdicts the session's other gate tests (baseline, snapshot, LoRA checks) recorded."""
    undecided = [f"{ck.loraname} {ck.step}: {ck.status}" for ck in view.checkpoints if ck.gated and ck.status != "pass"]
    undecided += [f"{v.lines[0] if v.lines else ''}: {v.decision}" for v in view.test_verdicts if v.gated and v.decision != "pass"]
    detail = "; ".join(dict.fromkeys(undecided))
    return f"verdict: {view.badge.upper()}" + (f" ({detail})" if detail else "")
