"""Test parameters of the check fixtures, and running a check for one: keeps the plugin's hooks thin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lora_harness.core.cases import Checkpoint
from lora_harness.checks.extra_cases import LEAKAGE, STRENGTH
from lora_harness.checks.verdict import GatedCheck
from lora_harness.checks.leakage import check_targets, evaluate_leakage
from lora_harness.checks.diversity import DiversityCheck, diversity_targets
from lora_harness.checks.memorization import MemorizationCheck
from lora_harness.checks.strength import evaluate_strength

if TYPE_CHECKING:
    from lora_harness.run.harness import Harness

FIXTURES = ("lora_leakage_check", "lora_strength_check", "lora_memorization_check", "lora_diversity_check")

SKIP_REASONS = {
    "lora_leakage_check": "no leakage check configured: add a [leakage] section (prompts without the trigger, "
    "max_identity) and a generate source (kind = \"generate\") to the eval config",
    "lora_strength_check": "no strength sweep configured: add a [strength] section (scales, margin) and a generate "
    "source (kind = \"generate\") to the eval config",
    "lora_memorization_check": "no memorization check configured: add [memorization] training_dir = \"...\" to the "
    "eval config",
    "lora_diversity_check": "no diversity check configured: add a [diversity] section (e.g. min = "
    "{ diversity_image = 0.1 }) to the eval config",
}


def targets(harness: "Harness", fixture: str) -> list[Checkpoint]:
    if fixture == "lora_leakage_check":
        return check_targets(harness, LEAKAGE)
    if fixture == "lora_strength_check":
        return check_targets(harness, STRENGTH)
    if fixture == "lora_diversity_check":
        return diversity_targets(harness)
    if harness.config.memorization is None:
        return []
    return [c for c in harness.checkpoints if any(not case.is_baseline for case in harness.cases_of(c))]


def run_check(harness: "Harness", fixture: str, checkpoint: Checkpoint, memorization: MemorizationCheck | None = None,
              diversity: DiversityCheck | None = None) -> GatedCheck:
    if fixture == "lora_leakage_check":
        result = evaluate_leakage(harness, checkpoint)
    elif fixture == "lora_strength_check":
        result = evaluate_strength(harness, checkpoint)
    elif fixture == "lora_diversity_check":
        result = (diversity or DiversityCheck(harness)).evaluate(harness, checkpoint)
    else:
        result = (memorization or MemorizationCheck(harness.config)).evaluate(harness, checkpoint)
    return GatedCheck(result, gated=harness.is_gated(checkpoint), policy=harness.policy)


def params(harness: "Harness", fixture: str) -> tuple[list[Any], list[str]]:
    """Checkpoints to parametrize over; none configured: one None parameter whose test skips, saying why."""
    found = targets(harness, fixture)
    if not found:
        return [None], [f"no-{fixture.removeprefix('lora_').removesuffix('_check')}-config"]
    return list(found), [c.test_id for c in found]
