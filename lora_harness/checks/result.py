"""The outcome of one LoRA check for one checkpoint: plain data the plugin turns into pass / fail / xfail / skip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lora_harness.core.cases import Checkpoint

if TYPE_CHECKING:
    from lora_harness.judges.base import Score


@dataclass(frozen=True)
class CheckResult:
    check: str  # the check's name: "leakage", "strength", "memorization", "diversity"
    checkpoint: Checkpoint  # the checkpoint of the LoRA under test
    lines: list[str] = field(default_factory=list)  # every value looked at, for the message
    failures: list[str] = field(default_factory=list)  # the check's rule is broken
    errors: list[str] = field(default_factory=list)  # broken inputs (image not made, judge crashed): always fail
    unavailable: list[str] = field(default_factory=list)  # a judge's model/package is absent here: skip

    @property
    def passed(self) -> bool:
        return not self.failures and not self.errors

    def against_ceiling(self, where: str, score: "Score", limit: float | None, *, missing: str, over: str,
                        within: str = "") -> None:
        """One measured value against its ceiling (None: recorded, not gated), the rule drift and memorization
        share: the judge's error is an error; no value is a line (`<where>: <metric> <missing>`); a value above
        the ceiling fails (`<where>: <metric> = <value> > ceiling <limit><over>`); any other value is a line
        (`<where>: <metric> = <value><within>`)."""
        if score.error:
            self.errors.append(f"{where}: {score.error}")
        elif score.value is None:
            self.lines.append(f"{where}: {score.metric} {missing}")
        elif limit is not None and score.value > limit:
            self.failures.append(f"{where}: {score.metric} = {score.value:.4f} > ceiling {limit:g}{over}")
        else:
            self.lines.append(f"{where}: {score.metric} = {score.value:.4f}{within}")

    def describe(self) -> str:
        head = f"{self.check} of {self.checkpoint.key}: " + (
            "ERROR" if self.errors else "FAILS" if self.failures else "passes"
        )
        body = [*(f"error: {e}" for e in self.errors), *(f"FAIL: {f}" for f in self.failures), *self.lines]
        return "\n  ".join([head, *body])
