"""Strength sweep: the same prompt and seed at several LoRA scales; scale 0 is the base-model control.

The gate asks that the LoRA does something: the mean metric must move from scale `low` to scale `high`
(default: identity at 0 to identity at 1.0) by at least `margin` (default 0.05, never 0: a gain of 0.0 would
pass a LoRA that changes nothing), in the metric's direction: identity and similarity metrics must rise,
artifact/quality scores may move either way (a LoRA that works can lower them). The values at every scale
are in the message and in the store (LoRA name `<lora>-scale<s>`, `extra.scale`), for a metric-vs-scale plot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lora_harness.checks.base import Check
from lora_harness.checks.extra_cases import STRENGTH, cases_for, check_targets, metric_value
from lora_harness.checks.result import CheckResult
from lora_harness.core.cases import Checkpoint
from lora_harness.checks.settings import StrengthDirection
from lora_harness.judges import metric_direction as judge_metric_direction  # the package: every judge registered

# Metrics that measure the person (or the prompt's content): the LoRA must raise them.
_RISING = ("identity", "similarity", "clip", "dino")


if TYPE_CHECKING:
    from lora_harness.run.harness import Harness


class StrengthCheck(Check):
    name = "strength"
    skip_reason = (
        "no strength sweep configured: add a [strength] section (scales, margin) and a generate source "
        "(kind = \"generate\") to the eval config"
    )
    fixture_doc = "One prompt/seed at `[strength] scales`: metric(high) - metric(low) must reach `margin`."

    def targets(self, harness: "Harness") -> list[Checkpoint]:
        return check_targets(harness, STRENGTH)

    def evaluate(self, harness: "Harness", checkpoint: Checkpoint) -> CheckResult:
        return evaluate_strength(harness, checkpoint)


def scale_means(harness: "Harness", checkpoint: Checkpoint, result: CheckResult) -> dict[float, float | None]:
    """Mean of the metric per scale over the sweep's prompts and seeds (missing values left out)."""
    config = harness.config.strength
    assert config is not None, "the strength check needs a [strength] section"
    values: dict[float, list[float]] = {s: [] for s in config.scales}
    for case in cases_for(harness, checkpoint, STRENGTH):
        value, error, unavailable = metric_value(harness, case, config.metric)
        if error:
            result.errors.append(error)
        elif unavailable:
            result.unavailable.append(unavailable)
        elif value is not None:
            values[float(case.extra["scale"])].append(value)
    return {s: (float(np.mean(v)) if v else None) for s, v in values.items()}


def evaluate_strength(harness: "Harness", checkpoint: Checkpoint) -> CheckResult:
    config = harness.config.strength
    assert config is not None, "evaluate_strength needs a [strength] section"
    result = CheckResult(StrengthCheck.name, checkpoint)
    means = scale_means(harness, checkpoint, result)
    result.lines.extend(
        f"scale {s:g}: {config.metric} = " + ("missing" if m is None else f"{m:.4f}") for s, m in sorted(means.items())
    )
    if result.errors or result.unavailable:
        return result
    low, high = means[config.low], means[config.high]
    if low is None or high is None:
        which = [f"{s:g}" for s, m in ((config.low, low), (config.high, high)) if m is None]
        result.failures.append(
            f"no {config.metric} value at scale(s) {', '.join(which)} (e.g. no face detected); the gain cannot be "
            "measured: use prompts that show the person's face, or another `strength.metric`"
        )
        return result
    passed, line = strength_verdict(config.metric, low, high, low_scale=config.low, high_scale=config.high,
                                    margin=config.margin, direction=config.direction)
    if passed:
        result.lines.insert(0, line)
    else:
        result.failures.append(line)
    return result


def strength_direction(metric: str, direction: StrengthDirection = "auto") -> str:
    """`rise`, `fall` or `any`: `auto` is fall for a metric its judge declares lower-is-better (`face_distance`:
    a stronger LoRA must come closer to the person), rise for identity/similarity metrics, any for the rest
    (artifacts)."""
    if direction != "auto":
        return direction
    if judge_metric_direction(metric) == "lower":
        return "fall"
    return "rise" if any(word in metric.lower() for word in _RISING) else "any"


def strength_verdict(metric: str, low: float, high: float, *, low_scale: float, high_scale: float, margin: float,
                     direction: StrengthDirection = "auto") -> tuple[bool, str]:
    """(passed, the line explaining it) for the means at the low and high scale."""
    way = strength_direction(metric, direction)
    gain = high - low
    rule = f"{metric}({high_scale:g}) - {metric}({low_scale:g}) = {high:.4f} - {low:.4f} = {gain:.4f}"
    moved = {"rise": gain, "fall": -gain, "any": abs(gain)}[way]
    shown = {"rise": rule, "fall": f"-({rule})", "any": f"|{rule}|"}[way]
    if moved >= margin:
        return True, f"{shown} >= margin {margin} ({metric} must {way if way != 'any' else 'change'})"
    return False, (
        f"{shown} < margin {margin} ({metric} must {way if way != 'any' else 'change either way'}): the LoRA barely "
        f"changes {metric} at scale {high_scale:g}"
    )
