"""What a gated or ungated test does with findings: fail, or report them as an expected failure.

Broken inputs (an image that cannot be decoded, a judge that crashed) fail whether gated or not: hiding
them would make a sweep look better than it is.
"""

from __future__ import annotations

import pytest

from lora_harness.cases import Checkpoint, EvalCase
from lora_harness.config import EvalConfig
from lora_harness.verdicts.gates import Finding
from lora_harness.harness import Harness


class Gate:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    def check_image(self, case: EvalCase) -> None:
        __tracebackhide__ = True
        findings = self.harness.image_findings(case)
        self._conclude(findings, Checkpoint.of(case), f"{case.key} ({case.image_path})")
        self._skip_if_unavailable([case])

    def check_checkpoint(self, checkpoint: Checkpoint) -> None:
        __tracebackhide__ = True
        findings, values = self.harness.checkpoint_findings(checkpoint)
        counts = ", ".join(f"{m}: n={sum(v is not None for v in vs)}" for m, vs in values.items())
        self._conclude(findings, checkpoint, f"checkpoint {checkpoint.key} ({counts})")
        self._skip_if_unavailable(self.harness.cases_of(checkpoint))

    def _skip_if_unavailable(self, cases: list[EvalCase]) -> None:
        """Nothing failed, but a judge could not run here (model or package missing): skip, saying what to
        install, rather than pass on the metrics that were never computed."""
        reasons = self.harness.unavailable(cases)
        if reasons:
            pytest.skip("not fully judged: " + " | ".join(reasons))

    def _conclude(self, findings: list[Finding], checkpoint: Checkpoint, where: str) -> None:
        __tracebackhide__ = True
        if not findings:
            return
        message = f"{where}:\n  " + "\n  ".join(f.describe() for f in findings)
        if any(f.error is not None and f.value is None and f.minimum is None for f in findings):
            raise AssertionError(message)
        if not self.harness.is_gated(checkpoint):
            one_line = "; ".join(f.describe() for f in findings)  # xfail reasons are shown one per line
            pytest.xfail(f"not gated ({gate_label(self.harness.config)}): {one_line} — {where}")
        raise AssertionError(message)


def gate_label(config: EvalConfig) -> str:
    spec = config.gate.checkpoints
    return f"gate = {spec!r}" if isinstance(spec, str) else f"gate = steps {spec}"
