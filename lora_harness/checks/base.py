"""What every LoRA check is: a name, the pytest fixture it answers to, what it checks, and the two calls the
plugin needs (which checkpoints to parametrize over, and one checkpoint's result).

Adding a check is one module with a `Check` subclass and one line in `lora_harness.checks.registry.CHECKS`:
the plugin parametrizes, skips and decides every registered check the same way, by these attributes alone.

A check object is made once per `Harness` (so once per xdist worker) by the registry, and made cheaply: what
is slow to load (training images, judges, a face backend) is loaded by the object itself on first use and
kept on it for every later checkpoint of that worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from lora_harness.checks.result import CheckResult
    from lora_harness.core.cases import Checkpoint
    from lora_harness.run.harness import Harness


class Check(ABC):
    name: ClassVar[str]  # "leakage": the CheckResult's `check`, the test id of the skipping parameter
    fixture: ClassVar[str]  # "lora_leakage_check": set from `name`
    skip_reason: ClassVar[str]  # why its tests skip when not configured: what to add to the eval config
    fixture_doc: ClassVar[str]  # the fixture's docstring (`pytest --fixtures`): what the test gets and gates

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.fixture = f"lora_{cls.name}_check"

    @abstractmethod
    def targets(self, harness: "Harness") -> list["Checkpoint"]:
        """The checkpoints to check, in sweep order; none when the check is not configured."""

    @abstractmethod
    def evaluate(self, harness: "Harness", checkpoint: "Checkpoint") -> "CheckResult":
        """The check's findings for one of `targets(harness)` (only called for those)."""
