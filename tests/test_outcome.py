"""The one verdict rule (`verdicts.outcome`), as a table: findings -> decision -> test outcome -> badge."""

from __future__ import annotations

import pytest

from lora_harness.verdicts.outcome import Policy, Verdict, decide, run_badge, verdicts_of

FAIL = ("fail", "spectral_score CI high = 0.30 < 0.60")
UNDECIDED = ("inconclusive", "face_identity_max: inconclusive: ...")
UNJUDGED = ("incomplete", "clip_score: not judged (model absent)")
BROKEN = ("error", "spectral_score: no score (cannot decode)")

# findings, gated, policy -> (decision, test outcome, what the report shows)
TABLE = [
    ([], True, Policy(), "pass", "pass", "pass"),
    ([], False, Policy(), "pass", "pass", "pass"),
    ([FAIL], True, Policy(), "fail", "fail", "fail"),
    ([FAIL], False, Policy(), "fail", "xfail", "xfail"),
    ([UNDECIDED], True, Policy(), "inconclusive", "fail", "inconclusive"),
    ([UNDECIDED], True, Policy(inconclusive="xfail"), "inconclusive", "xfail", "inconclusive"),
    ([UNDECIDED], True, Policy(inconclusive="pass"), "inconclusive", "pass", "inconclusive"),
    ([UNDECIDED], False, Policy(), "inconclusive", "xfail", "xfail"),
    ([UNJUDGED], True, Policy(), "incomplete", "fail", "incomplete"),
    ([UNJUDGED], True, Policy(allow_incomplete=True), "incomplete", "skipped", "incomplete"),
    ([UNJUDGED], False, Policy(), "incomplete", "skipped", "skipped"),
    ([BROKEN], False, Policy(), "error", "error", "error"),
    ([BROKEN], True, Policy(allow_incomplete=True, inconclusive="pass"), "error", "error", "error"),
    # the worst finding decides: error > fail > incomplete > inconclusive > pass
    ([UNDECIDED, FAIL], True, Policy(), "fail", "fail", "fail"),
    ([UNDECIDED, UNJUDGED], True, Policy(inconclusive="pass"), "incomplete", "fail", "incomplete"),
    ([FAIL, BROKEN, UNJUDGED], True, Policy(), "error", "error", "error"),
]


@pytest.mark.parametrize("findings, gated, policy, decision, outcome, shown", TABLE)
def test_the_one_rule(findings, gated, policy, decision, outcome, shown) -> None:
    verdict = decide(findings, gated=gated)
    assert (verdict.decision, verdict.outcome(policy), verdict.shown) == (decision, outcome, shown)
    assert verdict.lines[:1] == tuple(line for d, line in sorted(findings, key=lambda f: ["error", "fail", "incomplete", "inconclusive"].index(f[0])))[:1]


@pytest.mark.parametrize("decisions, badge", [
    ([], "incomplete"),  # rules but no gated decision: no evidence, never pass
    ([("pass", True), ("fail", False)], "pass"),  # an ungated failure is information
    ([("pass", True), ("inconclusive", True)], "inconclusive"),
    ([("incomplete", True), ("inconclusive", True)], "incomplete"),
    ([("incomplete", True), ("fail", True)], "fail"),
    ([("pass", True), ("error", False)], "fail"),  # a broken input fails the run, gated or not
    ([("inconclusive", False), ("incomplete", False)], "incomplete"),  # nothing gated was decided
    ([("pass", True), ("inconclusive", False)], "pass"),
])
def test_the_run_badge_is_never_pass_on_an_undecided_gated_verdict(decisions, badge) -> None:
    verdicts = [Verdict(d, gated) for d, gated in decisions]
    assert run_badge(verdicts) == badge
    assert run_badge([], has_rules=False) == "scored"


def test_recorded_verdicts_round_trip() -> None:
    records = [{"where": "baseline comparison of m", "decision": "inconclusive", "gated": True}, {"decision": "bogus"}]
    [verdict] = verdicts_of(records)
    assert (verdict.decision, verdict.gated, verdict.lines) == ("inconclusive", True, ("baseline comparison of m",))
