"""Strength sweep: the same prompt and seed at several LoRA scales; scale 0 is the base-model control.

The gate asks that the LoRA does something: mean metric at scale `high` minus mean metric at scale `low`
(default identity at 1.0 minus identity at 0) must be at least `margin`. The values at every scale are in
the message and in the store (LoRA name `<lora>-scale<s>`, `extra.scale`), for a metric-vs-scale plot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lora_harness.cases import Checkpoint
from lora_harness.checks.cases import STRENGTH
from lora_harness.checks.leakage import cases_for, metric_value
from lora_harness.checks.result import CheckResult

if TYPE_CHECKING:
    from lora_harness.harness import Harness


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
    result = CheckResult("strength", checkpoint)
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
    gain = high - low
    rule = f"{config.metric}({config.high:g}) - {config.metric}({config.low:g}) = {high:.4f} - {low:.4f} = {gain:.4f}"
    if gain < config.margin:
        result.failures.append(f"{rule} < margin {config.margin} (the LoRA barely changes identity at scale {config.high:g})")
    else:
        result.lines.insert(0, f"{rule} >= margin {config.margin}")
    return result
