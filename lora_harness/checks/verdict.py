"""A LoRA check's result (leakage, strength, memorization) as a verdict, decided and enforced like every gate."""

from __future__ import annotations

from lora_harness.checks.result import CheckResult
from lora_harness.verdicts.enforce import enforce
from lora_harness.verdicts.outcome import Policy, Verdict, decide


def check_verdict(result: CheckResult, *, gated: bool) -> Verdict:
    """Broken inputs are errors, a broken rule fails, a judge absent here leaves the check incomplete."""
    findings = [
        *(("error", f"error: {e}") for e in result.errors),
        *(("fail", f"FAIL: {f}") for f in result.failures),
        *(("incomplete", f"not judged: {u}") for u in sorted(set(result.unavailable))),
    ]
    verdict = decide(findings, gated=gated)  # type: ignore[arg-type]
    return Verdict(verdict.decision, gated, (*verdict.lines, *result.lines))


class GatedCheck:
    def __init__(self, result: CheckResult, *, gated: bool, policy: Policy = Policy()) -> None:
        self.result = result
        self.gated = gated
        self.policy = policy

    @property
    def verdict(self) -> Verdict:
        return check_verdict(self.result, gated=self.gated)

    def check(self) -> None:
        __tracebackhide__ = True
        enforce(self.verdict, f"{self.result.check} of {self.result.checkpoint.key}", self.policy)
