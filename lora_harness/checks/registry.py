"""The registered LoRA checks, and what the plugin asks of them by fixture name: the test parameters, why a
test skips, one checkpoint's gated result. Nothing here knows a check by name: adding a check is its module
(a `lora_harness.checks.base.Check`) and one line in `CHECKS`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from lora_harness.checks.base import Check
from lora_harness.checks.diversity import DiversityCheck
from lora_harness.checks.leakage import LeakageCheck
from lora_harness.checks.memorization import MemorizationCheck
from lora_harness.checks.strength import StrengthCheck
from lora_harness.checks.verdict import GatedCheck
from lora_harness.core.cases import Checkpoint

if TYPE_CHECKING:
    from lora_harness.run.harness import Harness

CHECKS: tuple[type[Check], ...] = (LeakageCheck, StrengthCheck, MemorizationCheck, DiversityCheck)

FIXTURES = tuple(check.fixture for check in CHECKS)  # what the plugin defines and parametrizes

# One object per check and harness (a harness is one per xdist worker): what a check loads, it loads once.
_objects: "WeakKeyDictionary[Harness, dict[type[Check], Check]]" = WeakKeyDictionary()


def check_class(fixture: str) -> type[Check]:
    for check in CHECKS:
        if check.fixture == fixture:
            return check
    raise KeyError(f"no LoRA check answers to fixture {fixture!r}; registered: {', '.join(c.fixture for c in CHECKS)}")


def check_for(harness: "Harness", fixture: str) -> Check:
    """This harness's object of the check behind `fixture`, made on first use."""
    cls = check_class(fixture)
    objects = _objects.setdefault(harness, {})
    if cls not in objects:
        objects[cls] = cls()
    return objects[cls]


def skip_reason(fixture: str) -> str:
    return check_class(fixture).skip_reason


def params(harness: "Harness", fixture: str) -> tuple[list[Any], list[str]]:
    """Checkpoints to parametrize over; none configured: one None parameter whose test skips, saying why."""
    check = check_for(harness, fixture)
    found: list[Checkpoint] = check.targets(harness)
    if not found:
        return [None], [f"no-{check.name}-config"]
    return list(found), [c.test_id for c in found]


def run_check(harness: "Harness", fixture: str, checkpoint: Checkpoint) -> GatedCheck:
    result = check_for(harness, fixture).evaluate(harness, checkpoint)
    return GatedCheck(result, gated=harness.is_gated(checkpoint), policy=harness.policy)
