"""Thresholds and which checkpoints they gate.

A training sweep is information and the release candidate is the gate: thresholds are checked for every
checkpoint (so the summary and CSV show where the sweep fails), but only gated checkpoints fail the run.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from dataclasses import dataclass
from typing import Collection, Iterable, Literal, Mapping, Sequence

from lora_harness.core.cases import Checkpoint, latest_per_lora
from lora_harness.core.config import GateSpec, StatsConfig, Threshold
from lora_harness.judges.base import Score
from lora_harness.verdicts.outcome import Decision, Verdict, decide
from lora_harness.verdicts.stats import MeanCI, mean_ci


@dataclass(frozen=True)
class Finding:
    """One reason a case or checkpoint does not pass, with the decision it leads to (`outcome.decide`)."""

    metric: str
    value: float | None
    minimum: float | None
    level: str  # "image" or "checkpoint"
    error: str | None = None
    # the threshold's `on` at checkpoint level: "mean" (`value` is the mean), "ci" or "ci_low" (`value` is the
    # interval's bound that decided: the upper one against a minimum, the lower one against a maximum for
    # "ci"; the lower one against a minimum, the upper one against a maximum for "ci_low")
    statistic: str = "mean"
    detail: str | None = None  # the rest of the aggregate (mean, CI, n) and what would decide
    # a maximum instead of a minimum: `image_max` / `checkpoint_max`, or a memorization ceiling
    maximum: float | None = None
    decision: Decision = "fail"

    def describe(self) -> str:
        if self.decision == "incomplete":
            return f"{self.metric}: not judged ({self.error})"
        if self.error is not None:
            return f"{self.metric}: no score ({self.error})"
        if self.decision == "inconclusive":
            return f"{self.metric}: inconclusive: {self.detail}"
        # a minimum is broken from below, a maximum from above: `ci` names the interval's far end, `ci_low` its near one
        kind, bound, sign, far, near, side = (
            ("maximum", self.maximum, ">", "low", "high", "upper") if self.maximum is not None
            else ("minimum", self.minimum, "<", "high", "low", "lower")
        )
        if self.statistic == "ci":
            return f"{self.metric} CI {far} = {self.value:.4f} {sign} {bound:.4f} (per-{self.level} {kind}; {self.detail})"
        if self.statistic == "ci_low":
            return (f"{self.metric} CI {near} = {self.value:.4f} {sign} {bound:.4f} "
                    f"(per-{self.level} {kind} on the CI's {side} bound; {self.detail})")
        return f"{self.metric} = {self.value:.4f} {sign} {bound:.4f} (per-{self.level} {kind})"

    @property
    def outside(self) -> bool:
        """A value out of bounds (under a minimum, over a ceiling), as opposed to a missing or undecided one."""
        return self.error is None and self.decision == "fail"


def image_breach(value: float, threshold: Threshold) -> Literal["minimum", "maximum"] | None:
    """Which per-image bound a (non-NaN) value breaks: under `image` or over `image_max`; None within both.

    The one per-image comparison: `image_findings` and the report's failure counts both use it.
    """
    if threshold.image is not None and value < threshold.image:
        return "minimum"
    if threshold.image_max is not None and value > threshold.image_max:
        return "maximum"
    return None


def image_findings(scores: Mapping[str, Score], thresholds: Mapping[str, Threshold]) -> list[Finding]:
    """Threshold failures of one image, plus every metric its judges could not compute."""
    findings = [Finding(s.metric, None, None, "image", s.error, decision="error") for s in scores.values() if s.error is not None]
    for metric, threshold in thresholds.items():
        score = scores.get(metric)
        if not threshold.has_image_bounds or score is None or score.value is None:
            continue
        if math.isnan(score.value):  # NaN < x and NaN > x are False: without this a NaN would pass every bound
            findings.append(Finding(metric, None, threshold.image, "image", "the judge returned NaN",
                                    maximum=threshold.image_max, decision="error"))
            continue
        breach = image_breach(score.value, threshold)
        if breach == "minimum":
            findings.append(Finding(metric, score.value, threshold.image, "image"))
        elif breach == "maximum":
            findings.append(Finding(metric, score.value, None, "image", maximum=threshold.image_max))
    return findings


def ceiling_findings(scores: Mapping[str, Score], ceilings: Mapping[str, float]) -> list[Finding]:
    """Values above their ceiling (e.g. `memorization_<judge>_max`: a near-copy of a training image)."""
    return [
        Finding(metric, score.value, None, "image", maximum=ceiling)
        for metric, ceiling in ceilings.items()
        if (score := scores.get(metric)) is not None and score.value is not None and score.value > ceiling
    ]


def unjudged_findings(unavailable: Mapping[str, str], thresholds: Mapping[str, Threshold], level: str) -> list[Finding]:
    """Gated metrics a judge could not compute here (model or package absent): the evidence is incomplete."""
    return [
        Finding(metric, None, None, level, reason, decision="incomplete")
        for metric, reason in sorted(unavailable.items())
        if metric in thresholds
    ]


def checkpoint_findings(
    values: Mapping[str, Sequence[float | None]], thresholds: Mapping[str, Threshold], stats: StatsConfig | None = None
) -> list[Finding]:
    """Every way a checkpoint's per-metric aggregates do not pass (over the images that have a value).

    `on = "ci"` (default): fail when the interval's upper bound is under the minimum (its lower bound over
    the maximum), inconclusive when the interval straddles it. A metric with a bound (image or checkpoint,
    minimum or maximum) and no value at all is incomplete.
    """
    stats = stats or StatsConfig()
    findings = []
    for metric, threshold in thresholds.items():
        if not threshold.has_bounds:
            continue
        present = [v for v in values.get(metric, ()) if v is not None and not math.isnan(v)]
        if not present:
            if metric in values or threshold.has_checkpoint_bounds:
                findings.append(Finding(metric, None, threshold.checkpoint, "checkpoint", "no image has a value",
                                        maximum=threshold.checkpoint_max, decision="incomplete"))
            continue
        if not threshold.has_checkpoint_bounds:
            continue
        agg = mean_ci(present, confidence=stats.confidence, sd_floor=stats.sd_floor)
        if threshold.checkpoint_max is not None:
            findings += _maximum_findings(metric, agg, threshold.checkpoint_max, threshold.on)
        if threshold.checkpoint is None:
            continue
        minimum = threshold.checkpoint
        if threshold.on == "mean":
            if agg.mean < minimum:
                findings.append(Finding(metric, agg.mean, minimum, "checkpoint"))
        elif threshold.on == "ci_low":
            if agg.low < minimum:
                findings.append(Finding(metric, agg.low, minimum, "checkpoint", statistic="ci_low", detail=agg.describe()))
        elif agg.high < minimum:
            findings.append(Finding(metric, agg.high, minimum, "checkpoint", statistic="ci", detail=agg.describe()))
        elif agg.low < minimum:
            where = f" straddles {minimum:g}" if math.isfinite(agg.low) and math.isfinite(agg.high) else ""
            detail = f"{agg.describe()}{where}; {what_would_decide(agg, minimum)}"
            findings.append(Finding(metric, agg.mean, minimum, "checkpoint", statistic="ci", detail=detail, decision="inconclusive"))
    return findings


def _maximum_findings(metric: str, agg: MeanCI, maximum: float, on: str) -> list[Finding]:
    """The checkpoint maximum, decided as the minimum mirrored: `ci` fails when the whole interval is above
    it and is inconclusive when the interval straddles it; `ci_low` fails unless the upper bound is at or
    below it; `mean` compares the mean."""
    if on == "mean":
        return [Finding(metric, agg.mean, None, "checkpoint", maximum=maximum)] if agg.mean > maximum else []
    if on == "ci_low":
        if agg.high > maximum:
            return [Finding(metric, agg.high, None, "checkpoint", statistic="ci_low", detail=agg.describe(), maximum=maximum)]
        return []
    if agg.low > maximum:
        return [Finding(metric, agg.low, None, "checkpoint", statistic="ci", detail=agg.describe(), maximum=maximum)]
    if agg.high > maximum:
        where = f" straddles the maximum {maximum:g}" if math.isfinite(agg.low) and math.isfinite(agg.high) else ""
        detail = f"{agg.describe()}{where}; {what_would_decide(agg, maximum, 'maximum')}"
        return [Finding(metric, agg.mean, None, "checkpoint", statistic="ci", detail=detail, maximum=maximum,
                        decision="inconclusive")]
    return []


def image_verdict(
    scores: Mapping[str, Score],
    thresholds: Mapping[str, Threshold],
    *,
    gated: bool,
    ceilings: Mapping[str, float] | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> tuple[Verdict, list[Finding]]:
    """The image test's verdict: what `test_image`, the report's case table and allure all show."""
    findings = image_findings(scores, thresholds) + ceiling_findings(scores, ceilings or {})
    findings += unjudged_findings(unavailable or {}, {m: t for m, t in thresholds.items() if t.has_image_bounds}, "image")
    return decide(((f.decision, f.describe()) for f in findings), gated=gated), findings


def checkpoint_verdict(
    values: Mapping[str, Sequence[float | None]],
    thresholds: Mapping[str, Threshold],
    stats: StatsConfig | None = None,
    *,
    gated: bool,
    unavailable: Mapping[str, str] | None = None,
) -> tuple[Verdict, list[Finding]]:
    """The checkpoint test's verdict: what `test_checkpoint`, the terminal table, run.json and the report show."""
    unavailable = unavailable or {}
    findings = [f for f in checkpoint_findings(values, thresholds, stats) if f.metric not in unavailable]
    findings += unjudged_findings(unavailable, thresholds, "checkpoint")
    if not any(v is not None and not math.isnan(v) for vs in values.values() for v in vs):
        findings.append(Finding("*", None, None, "checkpoint", "no image of this checkpoint has any score", decision="incomplete"))
    return decide(((f.decision, f.describe()) for f in findings), gated=gated), findings


def what_would_decide(agg: MeanCI, bound: float, kind: str = "minimum") -> str:
    """How many images would make an interval of this spread clear the bound (a minimum or a maximum), at the same mean."""
    gap = abs(agg.mean - bound)
    if agg.n < 2 and agg.method != "clopper-pearson":
        return "one image has no interval: add prompts or seeds (3 or more images)"
    if gap < 1e-9:
        return f"the mean sits on the {kind}: more images narrow the interval but cannot move it off"
    spread = math.sqrt(agg.mean * (1 - agg.mean)) if agg.method == "clopper-pearson" else agg.std
    spread = max(spread, 1e-6)
    z = NormalDist().inv_cdf(0.5 + agg.confidence / 2)
    needed = math.ceil((z * spread / gap) ** 2) + 1
    if needed <= agg.n:
        needed = agg.n + 1
    return f"about {needed} images would decide (now {agg.n}), or judge repeats with `[gate] adaptive = true`"


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
        return set(latest_per_lora(checkpoints).values())
    steps = set(spec)
    return {ckpt for ckpt in checkpoints if ckpt.training_step in steps}
