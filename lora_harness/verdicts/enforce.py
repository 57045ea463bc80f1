"""Turning a verdict into what pytest shows: pass, fail, xfail or skip, with the message that says why.

The only module of the verdict layer that imports pytest; the decision itself is `outcome.decide`'s.
"""

from __future__ import annotations

import warnings
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import pytest

from lora_harness.core.cases import Checkpoint, EvalCase
from lora_harness.verdicts.outcome import Policy, Verdict

if TYPE_CHECKING:
    from lora_harness.core.config import EvalConfig
    from lora_harness.run.harness import Harness


VERDICT_PROPERTY = "lora_verdict"
# The running test's `user_properties` (set by the plugin around each test call): every verdict a test
# enforces is recorded there, so the controller (xdist) sees it and run.json / the report badge include it.
current_properties: ContextVar[list[tuple[str, Any]] | None] = ContextVar("lora_current_properties", default=None)


def enforce(verdict: Verdict, where: str, policy: Policy = Policy(), *, label: str = "not gated") -> None:
    """Raise the pytest outcome the verdict leads to (nothing for a pass)."""
    __tracebackhide__ = True
    outcome = verdict.outcome(policy)
    properties = current_properties.get()
    if properties is not None:
        properties.append((VERDICT_PROPERTY, {"where": where, "decision": verdict.decision, "gated": verdict.gated}))
    if outcome == "pass":
        if verdict.decision == "inconclusive":  # `[gate] inconclusive = "pass"`: passes, and says so
            warnings.warn(f"lora-harness: passed by `[gate] inconclusive = \"pass\"`: {verdict.message(where)}", stacklevel=2)
        return
    message = verdict.message(where)
    if outcome == "xfail":
        reason = message if verdict.gated else f"{label}: {message}"
        pytest.xfail(reason.replace("\n  ", "; "))  # xfail reasons are shown one per line
    if outcome == "skipped":
        hint = "" if not verdict.gated else " (accepted by --allow-incomplete)"
        pytest.skip(f"not fully judged{hint}: {message}".replace("\n  ", "; "))
    if verdict.decision == "incomplete":
        message += "\n  a gated metric was not judged: install or download what the reason names, or pass --allow-incomplete"
    elif verdict.decision == "inconclusive":
        message += "\n  the evidence cannot decide; [gate] inconclusive = \"fail\" fails it (\"xfail\" or \"pass\" to accept)"
    raise AssertionError(message)


def incomplete(where: str, reason: str, policy: Policy = Policy()) -> None:
    """A gated test whose evidence could not be gathered here (a judge's model or package absent)."""
    __tracebackhide__ = True
    enforce(Verdict("incomplete", True, (f"not judged: {reason}",)), where, policy)


class Unjudged:
    """What a regression fixture returns when its evidence could not be gathered here: the test's own
    `.check()` (or snapshot comparison) then reports it as incomplete, a test failure rather than a fixture
    error, or a skip under --allow-incomplete."""

    def __init__(self, where: str, reason: str, policy: Policy = Policy()) -> None:
        self.where, self.reason, self.policy = where, reason, policy

    def check(self) -> None:
        __tracebackhide__ = True
        incomplete(self.where, self.reason, self.policy)

    def __eq__(self, other: object) -> bool:  # `assert snapshot_lora == summary`
        __tracebackhide__ = True
        self.check()
        return False

    __hash__ = None  # type: ignore[assignment]


class Gate:
    """`lora_gate`: the image and checkpoint tests' assertions, deciding as the report and table do."""

    def __init__(self, harness: "Harness", policy: Policy = Policy()) -> None:
        self.harness = harness
        self.policy = policy

    def check_image(self, case: EvalCase) -> None:
        __tracebackhide__ = True
        verdict, _ = self.harness.image_verdict(case)
        enforce(verdict, f"{case.key} ({case.image_path})", self.policy, label=self._label())

    def check_checkpoint(self, checkpoint: Checkpoint) -> None:
        __tracebackhide__ = True
        verdict, _, values = self.harness.checkpoint_verdict(checkpoint)
        counts = ", ".join(f"{m}: n={sum(v is not None for v in vs)}" for m, vs in values.items())
        enforce(verdict, f"checkpoint {checkpoint.key} ({counts})", self.policy, label=self._label())

    def _label(self) -> str:
        return f"not gated ({gate_label(self.harness.config)})"


def gate_label(config: EvalConfig) -> str:
    spec = config.gate.checkpoints
    return f"gate = {spec!r}" if isinstance(spec, str) else f"gate = steps {spec}"
