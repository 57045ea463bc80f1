"""The outcome of one LoRA check for one checkpoint: plain data the plugin turns into pass / fail / xfail / skip."""

from __future__ import annotations

from dataclasses import dataclass, field

from lora_harness.core.cases import Checkpoint


@dataclass(frozen=True)
class CheckResult:
    check: str  # "leakage", "strength", "memorization"
    checkpoint: Checkpoint  # the checkpoint of the LoRA under test
    lines: list[str] = field(default_factory=list)  # every value looked at, for the message
    failures: list[str] = field(default_factory=list)  # the check's rule is broken
    errors: list[str] = field(default_factory=list)  # broken inputs (image not made, judge crashed): always fail
    unavailable: list[str] = field(default_factory=list)  # a judge's model/package is absent here: skip

    @property
    def passed(self) -> bool:
        return not self.failures and not self.errors

    def describe(self) -> str:
        head = f"{self.check} of {self.checkpoint.key}: " + (
            "ERROR" if self.errors else "FAILS" if self.failures else "passes"
        )
        body = [*(f"error: {e}" for e in self.errors), *(f"FAIL: {f}" for f in self.failures), *self.lines]
        return "\n  ".join([head, *body])
