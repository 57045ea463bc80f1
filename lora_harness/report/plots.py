"""Trend plots: each metric over training steps, per prompt, with LoRA variants side by side (inline SVG).

This is the study's main figure, drawn by hand in notebooks: raw scores as points and a rolling mean of 3
over steps as a line, one line per metric, rank 4 next to rank 32. Metrics on a 0..1 scale share a panel;
a metric on another scale (CLIP score) gets its own row so it does not flatten the others.

matplotlib's object API (`Figure`, no pyplot) keeps this free of global state and safe in threads; text
stays text in the SVG (`svg.fonttype = none`) and is XML-escaped by matplotlib; math parsing is off, so a
`$` in a LoRA name is just a character.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Sequence

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from lora_harness.store import ScoreRow

ROLLING_WINDOW = 3
_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "lora-harness",  # stable element ids: identical input, identical SVG
    "text.parse_math": False,
    "font.size": 8,
    "axes.titlesize": 9,
}
_XML_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
ALL_PROMPTS = "all"


@dataclass(frozen=True)
class TrendPlot:
    prompt_id: str  # ALL_PROMPTS for the mean over every prompt
    svg: str


def score_frame(rows: Sequence[ScoreRow]) -> pd.DataFrame:
    records = [
        (r.loraname, r.training_step, r.step_kind, r.prompt_id, r.metric, r.value)
        for r in rows
        if r.value is not None and not math.isnan(r.value)
    ]
    return pd.DataFrame(records, columns=["loraname", "step", "kind", "prompt_id", "metric", "value"])


def metric_groups(frame: pd.DataFrame, metrics: Sequence[str]) -> list[list[str]]:
    """Metrics within [0, 1] form one group; every other metric is its own group (its own y scale)."""
    bounds = frame.groupby("metric")["value"].agg(["min", "max"])
    unit = [m for m in metrics if m in bounds.index and bounds.loc[m, "min"] >= 0 and bounds.loc[m, "max"] <= 1]
    others = [[m] for m in metrics if m in bounds.index and m not in unit]
    return ([unit] if unit else []) + others


def trend_plots(rows: Sequence[ScoreRow], metrics: Sequence[str]) -> list[TrendPlot]:
    """One figure for all prompts together, then one per prompt; empty when nothing has a value."""
    frame = score_frame(rows)
    if frame.empty:
        return []
    groups = metric_groups(frame, metrics)
    colours = {m: matplotlib.colormaps["tab10"](i % 10) for i, m in enumerate(metrics)}
    loras = sorted(frame["loraname"].unique())
    # all prompts together: one point per step (the mean over prompts and seeds), so 1,000 images stay legible
    means = frame.groupby(["loraname", "step", "kind", "metric"], as_index=False)["value"].mean()
    plots = [TrendPlot(ALL_PROMPTS, _figure(means, loras, groups, colours))]
    for prompt_id in sorted(frame["prompt_id"].unique()):
        subset = frame[frame["prompt_id"] == prompt_id]
        plots.append(TrendPlot(str(prompt_id), _figure(subset, loras, groups, colours)))
    return plots


# Fixed margins in inches: matplotlib's constrained layout would measure every tick label and costs ~3x.
# The legend's width is estimated from its longest label: the browser renders SVG text (fonttype none) in
# its own font, so matplotlib's measurement would not hold anyway.
_LEFT, _TOP, _BOTTOM, _PANEL_W, _PANEL_H = 0.75, 0.3, 0.45, 3.4, 2.0
_LEGEND_PAD, _LEGEND_HANDLE, _CHAR_W = 0.15, 0.55, 0.07


def _figure(frame: pd.DataFrame, loras: list[str], groups: list[list[str]], colours: dict) -> str:
    with matplotlib.rc_context(_RC):
        longest = max((len(m) for group in groups for m in group), default=0)
        legend_width = _LEGEND_PAD + _LEGEND_HANDLE + _CHAR_W * longest
        width = _LEFT + _PANEL_W * len(loras) + legend_width
        height = _TOP + _PANEL_H * len(groups) + _BOTTOM
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(
            left=_LEFT / width, right=1 - legend_width / width, bottom=_BOTTOM / height, top=1 - _TOP / height,
            wspace=0.08, hspace=0.12,
        )
        # one x axis for all: the same step sits at the same place in every LoRA's panel
        axes = fig.subplots(len(groups), len(loras), squeeze=False, sharex=True, sharey="row")
        by_lora = {name: part for name, part in frame.groupby("loraname")}
        for col, lora in enumerate(loras):
            part = by_lora.get(lora)
            for row, group in enumerate(groups):
                ax = axes[row][col]
                ax.locator_params(nbins=5)
                ax.grid(True, alpha=0.3)
                if row == 0:
                    ax.set_title(lora)
                if col == 0:
                    ax.set_ylabel(group[0] if len(group) == 1 else "score (0..1)")
                if part is None:
                    ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
                    continue
                for metric in group:
                    _draw_metric(ax, part[part["metric"] == metric], metric, colours[metric])
                if row == len(groups) - 1:
                    kinds = set(part["kind"])
                    ax.set_xlabel("epoch" if kinds == {"epoch"} else "training step")
        handles, labels = [], []
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if label not in labels:
                    handles.append(handle)
                    labels.append(label)
        if handles:
            anchor = (1 - (legend_width - _LEGEND_PAD) / width, 0.5)
            fig.legend(handles, labels, loc="center left", bbox_to_anchor=anchor, frameon=False)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = _METADATA.sub("", _XML_PROLOGUE.sub("", buffer.getvalue(), count=1))
    return svg.strip()


def _draw_metric(ax, data: pd.DataFrame, metric: str, colour) -> None:
    if data.empty:
        return
    # Line2D markers, not scatter(): the same dots at a fraction of the cost in the SVG backend
    ax.plot(data["step"], data["value"], linestyle="none", marker="o", markersize=3.5, markeredgewidth=0,
            color=colour, alpha=0.5)
    rolling = rolling_mean(data)
    ax.plot(rolling.index, rolling.values, color=colour, linewidth=1.5, label=metric)


def rolling_mean(data: pd.DataFrame, window: int = ROLLING_WINDOW) -> pd.Series:
    """Mean per step (over seeds and repeats), then a trailing rolling mean over `window` steps.

    The first steps average what exists so far (min_periods=1), so the line starts at the first point.
    """
    per_step = data.groupby("step")["value"].mean().sort_index()
    return per_step.rolling(window, min_periods=1).mean()
