"""The one rule that turns findings into a verdict, and a verdict into a test outcome and a run badge.

Every gate test (image, checkpoint, baseline, snapshot, leakage, strength, memorization, pairwise, best),
the terminal table, `run.json` and `report.html` call `decide`; nothing else spells the rule, so they can
never disagree. A gate never passes on missing or undecidable evidence:

- **error**: an input is broken (an image that cannot be decoded, a judge that crashed). Always fails.
- **fail**: the evidence shows the rule is broken (the whole interval is below a minimum or above a maximum).
- **incomplete**: a gated metric was not judged (a judge's model or package absent, no image has a value).
- **inconclusive**: judged, but the interval straddles the minimum, maximum or margin: more evidence would decide.
- **pass**: every rule is met with confidence.

Gating then decides what a test does with that: ungated checkpoints (a sweep is information) report fail
and inconclusive as xfail and incomplete as a skip; gated ones fail, or follow `[gate] inconclusive` and
`--allow-incomplete`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

Decision = Literal["pass", "fail", "inconclusive", "incomplete", "error"]
TestOutcome = Literal["pass", "fail", "xfail", "skipped", "error"]
Badge = Literal["pass", "fail", "inconclusive", "incomplete", "scored"]

# Worst first: the decision of a set of findings is the worst of theirs.
SEVERITY: tuple[Decision, ...] = ("error", "fail", "incomplete", "inconclusive", "pass")


@dataclass(frozen=True)
class Policy:
    """What gated tests do with undecided evidence: `[gate] inconclusive` and `--allow-incomplete`."""

    inconclusive: Literal["fail", "pass", "xfail"] = "fail"
    allow_incomplete: bool = False


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    gated: bool
    lines: tuple[str, ...] = ()  # why, one finding a line

    def outcome(self, policy: Policy = Policy()) -> TestOutcome:
        """What the test does: the same for the test itself, the report and the terminal table."""
        d = self.decision
        if d in ("error", "pass"):
            return d
        if not self.gated:
            return "skipped" if d == "incomplete" else "xfail"
        if d == "fail":
            return "fail"
        if d == "incomplete":
            return "skipped" if policy.allow_incomplete else "fail"
        return {"fail": "fail", "pass": "pass", "xfail": "xfail"}[policy.inconclusive]  # type: ignore[return-value]

    @property
    def shown(self) -> str:
        """The status the report and table show: the decision for gated tests, the test outcome otherwise."""
        if self.gated or self.decision in ("error", "pass"):
            return self.decision
        return "skipped" if self.decision == "incomplete" else "xfail"

    def message(self, where: str) -> str:
        head = f"{where}: {self.decision.upper()}" if self.decision != "pass" else f"{where}: pass"
        return "\n  ".join([head, *self.lines])


def decide(decisions: Iterable[tuple[Decision, str]], *, gated: bool) -> Verdict:
    """The verdict of a test from its findings, each a (decision, line) pair; none at all is a pass."""
    found = [(d, line) for d, line in decisions if d != "pass" or line]
    worst: Decision = "pass"
    for d, _ in found:
        if SEVERITY.index(d) < SEVERITY.index(worst):
            worst = d
    ordered = sorted(found, key=lambda item: SEVERITY.index(item[0]))
    return Verdict(worst, gated, tuple(line for _, line in ordered if line))


def run_badge(verdicts: Sequence[Verdict], *, has_rules: bool = True) -> Badge:
    """The run's word: FAIL if any test fails for real; else INCOMPLETE or INCONCLUSIVE when any gated
    decision is one (never PASS then, whatever `[gate] inconclusive` lets the tests do); PASS when there
    were rules to meet and gated decisions met them, INCOMPLETE when no gated decision was made at all,
    SCORED when there were no rules."""
    decisions = {v.decision for v in verdicts if v.gated} | {v.decision for v in verdicts if v.decision == "error"}
    for word in ("error", "fail", "incomplete", "inconclusive"):
        if word in decisions:
            return "fail" if word == "error" else word  # type: ignore[return-value]
    if not has_rules:
        return "scored"
    # rules, but no gated decision at all (no scores of a gated checkpoint): nothing was shown to pass
    return "pass" if any(v.gated for v in verdicts) else "incomplete"


def verdicts_of(records: Iterable[Mapping[str, Any]]) -> list[Verdict]:
    """Verdicts recorded by tests (`verdicts.enforce.enforce`, stored in run.json) back as Verdict objects."""
    return [
        Verdict(r["decision"], bool(r.get("gated")), (str(r.get("where", "")),))
        for r in records
        if r.get("decision") in SEVERITY
    ]
