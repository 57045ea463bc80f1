"""Thresholds and which checkpoints they gate.

A training sweep is information and the release candidate is the gate: thresholds are checked for every
checkpoint (so the summary and CSV show where the sweep fails), but only gated checkpoints fail the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from lora_harness.cases import Checkpoint
from lora_harness.config import GateSpec, Threshold
from lora_harness.judges.base import Score


@dataclass(frozen=True)
class Finding:
    """One reason a case or checkpoint does not pass: a value under its minimum, or no value at all."""

    metric: str
    value: float | None
    minimum: float | None
    level: str  # "image" or "checkpoint"
    error: str | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.metric}: no score ({self.error})"
        return f"{self.metric} = {self.value:.4f} < {self.minimum:.4f} (per-{self.level} minimum)"


def image_findings(scores: Mapping[str, Score], thresholds: Mapping[str, Threshold]) -> list[Finding]:
    """Threshold failures of one image, plus every metric its judges could not compute."""
    findings = [Finding(s.metric, None, None, "image", s.error) for s in scores.values() if s.error is not None]
    for metric, threshold in thresholds.items():
        score = scores.get(metric)
        if threshold.image is None or score is None or score.value is None:
            continue
        if score.value < threshold.image:
            findings.append(Finding(metric, score.value, threshold.image, "image"))
    return findings


def checkpoint_findings(
    values: Mapping[str, Sequence[float]], thresholds: Mapping[str, Threshold]
) -> list[Finding]:
    """Failures of a checkpoint's per-metric means (over the images that have a value)."""
    findings = []
    for metric, threshold in thresholds.items():
        if threshold.checkpoint is None:
            continue
        present = [v for v in values.get(metric, ()) if v is not None and not math.isnan(v)]
        if not present:
            findings.append(Finding(metric, None, threshold.checkpoint, "checkpoint", "no image has a value"))
            continue
        mean = sum(present) / len(present)
        if mean < threshold.checkpoint:
            findings.append(Finding(metric, mean, threshold.checkpoint, "checkpoint"))
    return findings


def gated_checkpoints(checkpoints: Iterable[Checkpoint], spec: GateSpec) -> set[Checkpoint]:
    """`latest`: the highest step of each LoRA; `all`; or the listed steps of every LoRA."""
    checkpoints = list(checkpoints)
    if spec == "all":
        return set(checkpoints)
    if spec == "latest":
        latest: dict[str, Checkpoint] = {}
        for ckpt in checkpoints:
            best = latest.get(ckpt.loraname)
            if best is None or (ckpt.step_kind, ckpt.training_step) > (best.step_kind, best.training_step):
                latest[ckpt.loraname] = ckpt
        return set(latest.values())
    steps = set(spec)
    return {ckpt for ckpt in checkpoints if ckpt.training_step in steps}
