"""Thresholds and which checkpoints they gate.

A training sweep is information and the release candidate is the gate: thresholds are checked for every
checkpoint (so the summary and CSV show where the sweep fails), but only gated checkpoints fail the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Iterable, Mapping, Sequence

from lora_harness.cases import Checkpoint
from lora_harness.config import GateSpec, StatsConfig, Threshold
from lora_harness.judges.base import Score
from lora_harness.verdicts.stats import mean_ci


@dataclass(frozen=True)
class Finding:
    """One reason a case or checkpoint does not pass: a value under its minimum, or no value at all."""

    metric: str
    value: float | None
    minimum: float | None
    level: str  # "image" or "checkpoint"
    error: str | None = None
    statistic: str = "mean"  # what `value` is at checkpoint level: "mean" or "ci_low" (threshold `on`)
    detail: str | None = None  # the rest of the aggregate (mean, CI, n) for the message
    maximum: float | None = None  # a ceiling instead of a minimum (memorization: similarity to training images)

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.metric}: no score ({self.error})"
        if self.maximum is not None:
            return f"{self.metric} = {self.value:.4f} > {self.maximum:.4f} (per-{self.level} maximum)"
        if self.statistic == "ci_low":
            return (f"{self.metric} CI low = {self.value:.4f} < {self.minimum:.4f} "
                    f"(per-{self.level} minimum on the CI's lower bound; {self.detail})")
        return f"{self.metric} = {self.value:.4f} < {self.minimum:.4f} (per-{self.level} minimum)"


def image_findings(scores: Mapping[str, Score], thresholds: Mapping[str, Threshold]) -> list[Finding]:
    """Threshold failures of one image, plus every metric its judges could not compute."""
    findings = [Finding(s.metric, None, None, "image", s.error) for s in scores.values() if s.error is not None]
    for metric, threshold in thresholds.items():
        score = scores.get(metric)
        if threshold.image is None or score is None or score.value is None:
            continue
        if math.isnan(score.value):  # NaN < x is False: without this a NaN would pass every minimum
            findings.append(Finding(metric, None, threshold.image, "image", "the judge returned NaN"))
            continue
        if score.value < threshold.image:
            findings.append(Finding(metric, score.value, threshold.image, "image"))
    return findings


def ceiling_findings(scores: Mapping[str, Score], ceilings: Mapping[str, float]) -> list[Finding]:
    """Values above their ceiling (e.g. `memorization_<judge>_max`: a near-copy of a training image)."""
    return [
        Finding(metric, score.value, None, "image", maximum=ceiling)
        for metric, ceiling in ceilings.items()
        if (score := scores.get(metric)) is not None and score.value is not None and score.value > ceiling
    ]


def checkpoint_findings(
    values: Mapping[str, Sequence[float]], thresholds: Mapping[str, Threshold], stats: StatsConfig | None = None
) -> list[Finding]:
    """Failures of a checkpoint's per-metric aggregates (over the images that have a value): the mean, or
    the bootstrap CI's lower bound where the threshold says `on = "ci_low"`."""
    stats = stats or StatsConfig()
    findings = []
    for metric, threshold in thresholds.items():
        if threshold.checkpoint is None:
            continue
        present = [v for v in values.get(metric, ()) if v is not None and not math.isnan(v)]
        if not present:
            findings.append(Finding(metric, None, threshold.checkpoint, "checkpoint", "no image has a value"))
            continue
        if threshold.on == "ci_low":
            agg = mean_ci(present, confidence=stats.confidence, n_resamples=stats.resamples, seed=stats.seed)
            if agg.low < threshold.checkpoint:
                detail = f"mean {agg.mean:.4f}, {agg.confidence:.0%} CI [{agg.low:.4f}, {agg.high:.4f}], n={agg.n}"
                findings.append(Finding(metric, agg.low, threshold.checkpoint, "checkpoint", statistic="ci_low", detail=detail))
            continue
        mean = sum(present) / len(present)
        if mean < threshold.checkpoint:
            findings.append(Finding(metric, mean, threshold.checkpoint, "checkpoint"))
    return findings


def gated_checkpoints(
    checkpoints: Iterable[Checkpoint],
    spec: GateSpec,
    best: Mapping[str, Checkpoint] | None = None,
    *,
    baselines: Collection[str] = (),
) -> set[Checkpoint]:
    """`latest`: the highest step of each LoRA; `all`; the listed steps of every LoRA; or `best`.

    `best` depends on scores, which this function does not see: the caller resolves it first
    (`best_checkpoint.choose_best`) and passes the chosen checkpoint per LoRA name. `baselines` are the
    LoRA names of reference images (the base model, or a previous LoRA, see `baseline` in generate
    sources): they are what a candidate is compared with, so the thresholds never gate them.
    """
    checkpoints = [c for c in checkpoints if c.loraname not in baselines]
    if spec == "all":
        return set(checkpoints)
    if spec == "best":
        if best is None:
            raise ValueError("gate 'best' is chosen from scores: pass best={loraname: checkpoint} (see best_checkpoint)")
        return {ckpt for ckpt in checkpoints if best.get(ckpt.loraname) == ckpt}
    if spec == "latest":
        latest: dict[str, Checkpoint] = {}
        for ckpt in checkpoints:
            newest = latest.get(ckpt.loraname)
            if newest is None or (ckpt.step_kind, ckpt.training_step) > (newest.step_kind, newest.training_step):
                latest[ckpt.loraname] = ckpt
        return set(latest.values())
    steps = set(spec)
    return {ckpt for ckpt in checkpoints if ckpt.training_step in steps}
