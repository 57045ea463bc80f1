"""Metric vs LoRA scale: the strength sweep's figure (inline SVG, drawn like the trend plots).

The strength check stores each scale as its own LoRA, `<lora>-scale<s>` with variant "strength" (see
`lora_harness/checks/extra_cases.py`), so the trend plots show each scale over steps but never identity against
scale, which is the question the sweep asks ("does identity rise with scale while quality holds?"). This
module regroups those rows: one figure per LoRA and metric, x = scale, points = the images at the LoRA's
latest step, line = their mean per scale. It reuses the trend plot's template and layout, so both look
alike and a LoRA name stays text (autoescaped), never markup.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from lora_harness.report.plots import (
    BOTTOM, CHAR_W, LEFT, PALETTE, PANEL_H, PANEL_W, TOP, Panel, Series, _environment, _label, _y_range, nice_ticks,
)
from lora_harness.run.store import ScoreRow

STRENGTH_VARIANT = "strength"
# `{scale:g}`: 0, 0.5, 1.2, 1e-05, ...
_SCALE_NAME = re.compile(r"^(?P<lora>.+)-scale(?P<scale>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$")


@dataclass(frozen=True)
class ScalePlot:
    lora: str  # the LoRA under test (without `-scale<s>`)
    metric: str
    step: int  # the training step (or epoch) plotted: the LoRA's latest
    step_kind: str
    scales: tuple[float, ...]
    means: tuple[float | None, ...]  # per scale, same order; None: no value at that scale
    svg: str


def split_scale_name(loraname: str) -> tuple[str, float] | None:
    """`my-lora-scale0.8` -> ("my-lora", 0.8); None for a name that is not a strength-sweep name."""
    match = _SCALE_NAME.match(loraname)
    if match is None:
        return None
    try:
        return match["lora"], float(match["scale"])
    except ValueError:
        return None


def scale_plots(rows: Sequence[ScoreRow], metrics: Sequence[str]) -> list[ScalePlot]:
    """One figure per (LoRA, metric) of the strength rows; empty when there are none (the section is hidden)."""
    records = []
    for row in rows:
        if row.variant != STRENGTH_VARIANT or row.value is None or math.isnan(row.value):
            continue
        parsed = split_scale_name(row.loraname)
        if parsed is not None:
            records.append((parsed[0], parsed[1], row.step_kind, row.training_step, row.metric, float(row.value)))
    if not records:
        return []
    frame = pd.DataFrame(records, columns=["lora", "scale", "kind", "step", "metric", "value"])
    order = {m: i for i, m in enumerate(metrics)}
    plots = []
    for lora, part in frame.groupby("lora", sort=True):
        # the latest checkpoint of this LoRA: epochs after steps would be a mix-up, so step kind "step" wins ties
        kind, step = max(zip(part["kind"], part["step"]), key=lambda ks: (ks[1], ks[0] == "step"))
        latest = part[(part["kind"] == kind) & (part["step"] == step)]
        for metric in sorted(latest["metric"].unique(), key=lambda m: (order.get(m, len(order)), m)):
            data = latest[latest["metric"] == metric]
            colour = PALETTE[order.get(metric, 0) % len(PALETTE)]
            plots.append(_plot(str(lora), str(metric), int(step), str(kind), data, colour))
    return plots


def _plot(lora: str, metric: str, step: int, kind: str, data: pd.DataFrame, colour: str) -> ScalePlot:
    per_scale: dict[float, list[float]] = defaultdict(list)
    for scale, value in zip(data["scale"].tolist(), data["value"].tolist()):
        per_scale[scale].append(value)
    scales = sorted(per_scale)
    means = [sum(per_scale[s]) / len(per_scale[s]) for s in scales]

    x_low, x_high = scales[0], scales[-1]
    x_pad = (x_high - x_low) * 0.05 or 0.5
    x_low, x_high = x_low - x_pad, x_high + x_pad
    y_low, y_high = _y_range(data["value"])

    def sx(value: float) -> float:
        return round(LEFT + (value - x_low) / (x_high - x_low) * PANEL_W, 1)

    def sy(value: float) -> float:
        return round(TOP + PANEL_H - (value - y_low) / (y_high - y_low) * PANEL_H, 1)

    step_text = f"{'epoch' if kind == 'epoch' else 'step'} {step}"
    panel = Panel(
        x=LEFT, y=TOP, title=f"{lora} ({step_text})", x_label="LoRA scale", y_label=metric,
        # the sweep's own scales as ticks: a reader looks up "identity at 0.8", not at a round number
        x_ticks=[(sx(s), _label(s)) for s in scales],
        y_ticks=[(sy(t), _label(t)) for t in nice_ticks(y_low, y_high) if y_low - 1e-9 <= t <= y_high + 1e-9],
    )
    panel.series.append(Series(
        metric, colour,
        points=[(sx(s), sy(v)) for s in scales for v in per_scale[s]],
        line=[(sx(s), sy(m)) for s, m in zip(scales, means)],
    ))
    label = f"{metric} vs LoRA scale: {lora}, {step_text}"
    width = LEFT + PANEL_W + 36 + CHAR_W * len(metric) + 10
    svg = _environment().get_template("trend.svg.j2").render(
        width=round(width), height=TOP + PANEL_H + BOTTOM, panels=[panel], legend=[(metric, colour)],
        panel_w=PANEL_W, panel_h=PANEL_H, legend_x=LEFT + PANEL_W + 10, legend_y=TOP + 10, label=label,
    ).strip()
    return ScalePlot(lora, metric, step, kind, tuple(scales), tuple(means), svg)
