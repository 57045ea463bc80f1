"""Trend plots: each metric over training steps, per prompt, with LoRA variants side by side (inline SVG).

This is the study's main figure, drawn by hand in notebooks: raw scores as points and a rolling mean of 3
over steps as a line, one line per metric, rank 4 next to rank 32. Metrics on a 0..1 scale share a panel;
a metric on another scale (CLIP score) gets its own row so it does not flatten the others. Every panel of
a figure shares one x axis, so the same step sits at the same place for every LoRA.

Drawn as plain SVG from a jinja2 template (autoescaped: a LoRA name is text, never markup) rather than with
matplotlib: matplotlib spent ~0.5 s of CPU per figure, more than half of the whole report budget (10,000
rows and 1,000 images in under 10 s on two cores, see benchmarks/report_build.py). The issue allows "a small
vendored-free inline SVG"; this is it, and the only plotting it needs is points, polylines and ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from lora_harness.run.store import ScoreRow

ROLLING_WINDOW = 3
ALL_PROMPTS = "all"
# matplotlib's tab10, so colours look familiar to anyone who used the study's notebooks
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
# Layout in SVG pixels.
PANEL_W, PANEL_H, GAP, LEFT, TOP, BOTTOM, CHAR_W = 300, 160, 14, 58, 24, 40, 6.6


@dataclass(frozen=True)
class TrendPlot:
    prompt_id: str  # ALL_PROMPTS for the mean over every prompt
    svg: str


@dataclass
class Series:
    metric: str  # the series' name: a metric (per-LoRA figures) or a LoRA (per-criterion figures)
    colour: str
    points: list[tuple[float, float]]  # SVG coordinates of the raw scores
    line: list[tuple[float, float]]  # SVG coordinates of the rolling mean
    tips: list[str] = field(default_factory=list)  # a tooltip per point: the value and its case


@dataclass
class Panel:
    x: float
    y: float
    title: str | None
    x_label: str | None
    y_label: str | None
    x_ticks: list[tuple[float, str]]  # (SVG x, label); labels only on the bottom row
    y_ticks: list[tuple[float, str]]
    series: list[Series] = field(default_factory=list)
    empty: bool = False


def score_frame(rows: Sequence[ScoreRow]) -> pd.DataFrame:
    records = [
        (r.loraname, r.training_step, r.step_kind, r.prompt_id, r.metric, r.value, r.case_key)
        for r in rows
        if r.value is not None and not math.isnan(r.value)
    ]
    return pd.DataFrame(records, columns=["loraname", "step", "kind", "prompt_id", "metric", "value", "case"])


def _tip(metric: str, value: float, case: object, count: object = None) -> str:
    """`spectral_score = 0.7312 · lora-r4-step000200-p01-s42` (or `mean of 3 images · lora-r4 step 200`)."""
    what = f"{metric} = {value:.4g}"
    if count is not None and not (isinstance(count, float) and math.isnan(count)):
        return f"{what} · mean of {int(count)} image(s) · {case}"
    return f"{what} · {case}"


def metric_groups(frame: pd.DataFrame, metrics: Sequence[str]) -> list[list[str]]:
    """Metrics within [0, 1] form one group; every other metric is its own group (its own y scale)."""
    bounds = frame.groupby("metric")["value"].agg(["min", "max"])
    unit = [m for m in metrics if m in bounds.index and bounds.loc[m, "min"] >= 0 and bounds.loc[m, "max"] <= 1]
    others = [[m] for m in metrics if m in bounds.index and m not in unit]
    return ([unit] if unit else []) + others


def rolling_means(data: pd.DataFrame, window: int = ROLLING_WINDOW) -> dict[tuple[str, str], pd.Series]:
    """Per (LoRA, metric): the mean per step (over prompts, seeds, repeats), then a trailing rolling mean
    over `window` steps. The first steps average what exists so far (min_periods=1), so the line starts at
    the first point. One grouped pass for the whole figure, not one per line."""
    per_step = data.groupby(["loraname", "metric", "step"], sort=True)["value"].mean()
    rolled = per_step.groupby(level=[0, 1], sort=False).rolling(window, min_periods=1).mean()
    rolled = rolled.droplevel([0, 1])  # groupby().rolling() repeats the group keys in front
    return {key: series.droplevel([0, 1]) for key, series in rolled.groupby(level=[0, 1], sort=False)}


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.3g}"


def trend_plots(rows: Sequence[ScoreRow], metrics: Sequence[str]) -> list[TrendPlot]:
    """One figure for all prompts together, then one per prompt; empty when nothing has a value."""
    frame = score_frame(rows)
    if frame.empty:
        return []
    groups = metric_groups(frame, metrics)
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(metrics)}
    loras = sorted(frame["loraname"].unique())
    x_range = (float(frame["step"].min()), float(frame["step"].max()))
    y_ranges = [_y_range(frame[frame["metric"].isin(group)]["value"]) for group in groups]
    template = _environment().get_template("trend.svg.j2")
    x_label = "epoch" if set(frame["kind"]) == {"epoch"} else "training step"

    def figure(data: pd.DataFrame, label: str) -> str:
        panels = _panels(data, loras, groups, colours, x_range, y_ranges, x_label)
        legend = [(m, colours[m]) for group in groups for m in group]
        width = LEFT + len(loras) * (PANEL_W + GAP) + 36 + CHAR_W * max(len(m) for m, _ in legend)
        height = TOP + len(groups) * (PANEL_H + GAP) + BOTTOM
        return template.render(
            width=round(width), height=height, panels=panels, legend=legend, panel_w=PANEL_W, panel_h=PANEL_H,
            legend_x=LEFT + len(loras) * (PANEL_W + GAP) + 10, legend_y=TOP + 10, label=label,
        ).strip()

    return [TrendPlot(prompt, svg) for prompt, svg in _per_prompt(frame, figure, "all prompts: mean per step", "prompt {}")]


def _y_range(values: pd.Series) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 1:
        return 0.0, 1.0  # scores share the absolute 0..1 scale across figures
    ticks = nice_ticks(low, high)
    pad = (high - low) * 0.05 or 1.0
    return min([low - pad, *ticks[:1]]), max([high + pad, *ticks[-1:]])


def _panels(
    data: pd.DataFrame,
    loras: list[str],
    groups: list[list[str]],
    colours: dict[str, str],
    x_range: tuple[float, float],
    y_ranges: list[tuple[float, float]],
    x_label: str,
) -> list[Panel]:
    x_low, x_high = x_range
    x_pad = (x_high - x_low) * 0.03 or 1.0
    x_low, x_high = x_low - x_pad, x_high + x_pad
    x_tick_values = [t for t in nice_ticks(x_low, x_high) if x_low <= t <= x_high]
    by_lora = {name: part for name, part in data.groupby("loraname")}
    points = {key: part for key, part in data.groupby(["loraname", "metric"], sort=False)}
    lines = rolling_means(data)
    panels = []
    for row, (group, (y_low, y_high)) in enumerate(zip(groups, y_ranges)):
        y_tick_values = [t for t in nice_ticks(y_low, y_high) if y_low - 1e-9 <= t <= y_high + 1e-9]
        for col, lora in enumerate(loras):
            left, top = LEFT + col * (PANEL_W + GAP), TOP + row * (PANEL_H + GAP)

            def sx(value: float) -> float:
                return round(left + (value - x_low) / (x_high - x_low) * PANEL_W, 1)

            def sy(value: float) -> float:
                return round(top + PANEL_H - (value - y_low) / (y_high - y_low) * PANEL_H, 1)

            bottom_row = row == len(groups) - 1
            panel = Panel(
                x=left, y=top,
                title=lora if row == 0 else None,
                x_label=x_label if bottom_row else None,
                y_label=(group[0] if len(group) == 1 else "score (0..1)") if col == 0 else None,
                x_ticks=[(sx(t), _label(t) if bottom_row else "") for t in x_tick_values],
                y_ticks=[(sy(t), _label(t) if col == 0 else "") for t in y_tick_values],
            )
            part = by_lora.get(lora)
            if part is None:
                panel.empty = True
            else:
                for metric in group:
                    subset = points.get((lora, metric))
                    if subset is None:
                        continue
                    panel.series.append(Series(
                        metric, colours[metric],
                        points=[(sx(s), sy(v)) for s, v in zip(subset["step"].tolist(), subset["value"].tolist())],
                        line=[(sx(s), sy(v)) for s, v in lines[(lora, metric)].items()],
                        tips=_tips(subset, metric),
                    ))
            panels.append(panel)
    return panels


def _tips(subset: pd.DataFrame, metric: str) -> list[str]:
    counts = subset["count"].tolist() if "count" in subset else [None] * len(subset)
    return [_tip(metric, v, c, n) for v, c, n in zip(subset["value"].tolist(), subset["case"].tolist(), counts)]


# --- criterion over training steps: one panel per metric, one line per LoRA (the study's rank comparison) ---

CRITERION_COLUMNS = 3


@dataclass(frozen=True)
class CriterionPlot:
    prompt_id: str  # ALL_PROMPTS for the mean over every prompt
    svg: str


def criterion_plots(rows: Sequence[ScoreRow], metrics: Sequence[str]) -> list[CriterionPlot]:
    """The study's rank comparison: each criterion over training steps in its own panel, the LoRA variants
    as lines in it (rolling mean of 3 over steps, raw points visible), so rank 4 and rank 32 are compared
    on one criterion inside one panel. One figure for all prompts (a point per step: the mean), then one
    per prompt (a point per image)."""
    frame = score_frame(rows)
    if frame.empty:
        return []
    shown = [m for m in metrics if m in set(frame["metric"])]
    loras = sorted(frame["loraname"].unique())
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(loras)}
    x_range = (float(frame["step"].min()), float(frame["step"].max()))
    y_ranges = {m: _y_range(frame[frame["metric"] == m]["value"]) for m in shown}
    x_label = "epoch" if set(frame["kind"]) == {"epoch"} else "training step"
    template = _environment().get_template("trend.svg.j2")
    columns = min(CRITERION_COLUMNS, len(shown))
    grid_rows = math.ceil(len(shown) / columns)

    def figure(data: pd.DataFrame, label: str) -> str:
        panels = _criterion_panels(data, shown, loras, colours, x_range, y_ranges, x_label, columns)
        legend = [(name, colours[name]) for name in loras]
        width = LEFT + columns * (PANEL_W + GAP + 30) + 36 + CHAR_W * max(len(n) for n in loras)
        height = TOP + grid_rows * (PANEL_H + GAP + 36) + BOTTOM
        return template.render(
            width=round(width), height=height, panels=panels, legend=legend, panel_w=PANEL_W, panel_h=PANEL_H,
            legend_x=LEFT + columns * (PANEL_W + GAP + 30) + 10, legend_y=TOP + 10, label=label,
        ).strip()

    titles = ("each criterion over training steps, all prompts", "each criterion over training steps, prompt {}")
    return [CriterionPlot(prompt, svg) for prompt, svg in _per_prompt(frame, figure, *titles)]


def _per_prompt(frame: pd.DataFrame, figure: Any, all_title: str, prompt_title: str) -> list[tuple[str, str]]:
    """One figure over all prompts (one point per step: the mean over prompts and seeds, so 1,000 images stay
    legible), then one per prompt."""
    means = frame.groupby(["loraname", "step", "kind", "metric"], as_index=False).agg(
        value=("value", "mean"), count=("value", "size")
    )
    means["case"] = means["loraname"] + " step " + means["step"].astype(str)
    figures = [(ALL_PROMPTS, figure(means, all_title))]
    for prompt_id, subset in frame.groupby("prompt_id", sort=True):
        figures.append((str(prompt_id), figure(subset, prompt_title.format(prompt_id))))
    return figures


def _criterion_panels(
    data: pd.DataFrame,
    metrics: list[str],
    loras: list[str],
    colours: dict[str, str],
    x_range: tuple[float, float],
    y_ranges: dict[str, tuple[float, float]],
    x_label: str,
    columns: int,
) -> list[Panel]:
    x_low, x_high = x_range
    x_pad = (x_high - x_low) * 0.03 or 1.0
    x_low, x_high = x_low - x_pad, x_high + x_pad
    x_tick_values = [t for t in nice_ticks(x_low, x_high) if x_low <= t <= x_high]
    points = {key: part for key, part in data.groupby(["loraname", "metric"], sort=False)}
    lines = rolling_means(data)
    panels = []
    for index, metric in enumerate(metrics):
        row, col = divmod(index, columns)
        y_low, y_high = y_ranges[metric]
        y_tick_values = [t for t in nice_ticks(y_low, y_high) if y_low - 1e-9 <= t <= y_high + 1e-9]
        left, top = LEFT + col * (PANEL_W + GAP + 30), TOP + row * (PANEL_H + GAP + 36)

        def sx(value: float) -> float:
            return round(left + (value - x_low) / (x_high - x_low) * PANEL_W, 1)

        def sy(value: float) -> float:
            return round(top + PANEL_H - (value - y_low) / (y_high - y_low) * PANEL_H, 1)

        panel = Panel(
            x=left, y=top, title=metric, x_label=x_label, y_label=None,
            x_ticks=[(sx(t), _label(t)) for t in x_tick_values],
            y_ticks=[(sy(t), _label(t)) for t in y_tick_values],
        )
        for lora in loras:
            subset = points.get((lora, metric))
            if subset is None:
                continue
            panel.series.append(Series(
                lora, colours[lora],
                points=[(sx(s), sy(v)) for s, v in zip(subset["step"].tolist(), subset["value"].tolist())],
                line=[(sx(s), sy(v)) for s, v in lines[(lora, metric)].items()],
                tips=_tips(subset, metric),
            ))
        panel.empty = not panel.series
        panels.append(panel)
    return panels


_ENV: Environment | None = None


def _environment() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(
            loader=FileSystemLoader(Path(__file__).parent / "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _ENV
