"""Trigger leakage: images of prompts without the trigger token must not look like the person.

A person LoRA that leaked has rewritten the base model's idea of "a man": the person shows up without being
asked for. Each leakage image's identity similarity to the reference photos (default `face_identity_max`)
must stay below `[leakage] max_identity`. An image without a face (metric missing, not an error) has no
identity to leak and passes; a judge error fails the check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lora_harness.checks.base import Check
from lora_harness.checks.extra_cases import LEAKAGE, cases_for, check_targets, metric_value
from lora_harness.checks.result import CheckResult
from lora_harness.core.cases import Checkpoint

if TYPE_CHECKING:
    from lora_harness.run.harness import Harness


class LeakageCheck(Check):
    name = "leakage"
    skip_reason = (
        "no leakage check configured: add a [leakage] section (prompts without the trigger, max_identity) and a "
        "generate source (kind = \"generate\") to the eval config"
    )
    fixture_doc = (
        "Prompts without the trigger, LoRA loaded: identity to the references must stay below `[leakage] max_identity`."
    )

    def targets(self, harness: "Harness") -> list[Checkpoint]:
        return check_targets(harness, LEAKAGE)

    def evaluate(self, harness: "Harness", checkpoint: Checkpoint) -> CheckResult:
        return evaluate_leakage(harness, checkpoint)


def evaluate_leakage(harness: "Harness", checkpoint: Checkpoint) -> CheckResult:
    config = harness.config.leakage
    assert config is not None, "evaluate_leakage needs a [leakage] section"
    result = CheckResult(LeakageCheck.name, checkpoint)
    for case in cases_for(harness, checkpoint, LEAKAGE):
        value, error, unavailable = metric_value(harness, case, config.metric)
        where = f"{case.key} {case.prompt.text!r} ({case.image_path})"
        if error:
            result.errors.append(error)
        elif unavailable:
            result.unavailable.append(unavailable)
        elif value is None:
            missing = harness.score(case)[config.metric].raw.get("missing", "no value")
            result.lines.append(f"{where}: {config.metric} missing ({missing}): nothing leaked")
        elif value >= config.max_identity:
            result.failures.append(
                f"{where}: {config.metric} = {value:.4f} >= ceiling {config.max_identity} (the person appears without "
                "the trigger token: the LoRA leaks into the base model's notion of a person)"
            )
        else:
            result.lines.append(f"{where}: {config.metric} = {value:.4f} < {config.max_identity}")
    if config.drift:  # the picture, not only the person: lora_harness.checks.drift
        from lora_harness.checks.drift import evaluate_drift

        evaluate_drift(harness, checkpoint, cases_for(harness, checkpoint, LEAKAGE), result)
    return result
