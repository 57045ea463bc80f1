"""Trigger leakage: images of prompts without the trigger token must not look like the person.

A person LoRA that leaked has rewritten the base model's idea of "a man": the person shows up without being
asked for. Each leakage image's identity similarity to the reference photos (default `face_identity_max`)
must stay below `[leakage] max_identity`. An image without a face (metric missing, not an error) has no
identity to leak and passes; a judge error fails the check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lora_harness.core.cases import Checkpoint, EvalCase, checkpoint_order
from lora_harness.checks.extra_cases import LEAKAGE, owner
from lora_harness.checks.result import CheckResult
from lora_harness.judges.model_loading import UNAVAILABLE_KEY

if TYPE_CHECKING:
    from lora_harness.run.harness import Harness


def check_targets(harness: "Harness", check_role: str) -> list[Checkpoint]:
    """The LoRA checkpoints that have cases of this role, in sweep order."""
    found = {owner(c) for c in harness.check_cases if c.role == check_role}
    return sorted(found, key=checkpoint_order)


def cases_for(harness: "Harness", checkpoint: Checkpoint, check_role: str) -> list[EvalCase]:
    return [c for c in harness.check_cases if c.role == check_role and owner(c) == checkpoint]


def metric_value(harness: "Harness", case: EvalCase, metric: str) -> tuple[float | None, str | None, str | None]:
    """(value, error, unavailable reason) of one metric of a case, judged now if needed."""
    score = harness.score(case).get(metric)
    if score is None:
        return None, f"{case.key}: no {metric} score", None
    if score.error is not None:
        return None, f"{case.key}: {score.error}", None
    if score.value is None and UNAVAILABLE_KEY in score.raw:
        return None, None, str(score.raw[UNAVAILABLE_KEY])
    return score.value, None, None


def evaluate_leakage(harness: "Harness", checkpoint: Checkpoint) -> CheckResult:
    config = harness.config.leakage
    assert config is not None, "evaluate_leakage needs a [leakage] section"
    result = CheckResult("leakage", checkpoint)
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
