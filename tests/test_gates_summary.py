"""Thresholds, gated checkpoints, the end-of-run table and the mean's confidence interval: known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lora_harness.core.cases import Checkpoint, EvalCase, Prompt
from lora_harness.core.config import Threshold
from lora_harness.verdicts.thresholds import Finding, checkpoint_findings, gated_checkpoints, image_findings
from lora_harness.judges.base import Score
from lora_harness.verdicts.stats import mean_ci
from lora_harness.run.store import ScoreRow
from lora_harness.plugin.terminal_table import format_table, verdict_line

THRESHOLDS = {
    "spectral_score": Threshold(image=0.5, checkpoint=0.6),
    "magnitude_score": Threshold(image=0.4),
    "clip_score": Threshold(checkpoint=25.0),
}


# --- per image -----------------------------------------------------------------------------------------


def test_image_passing_every_threshold_has_no_findings():
    scores = {"spectral_score": Score("spectral_score", 0.5), "magnitude_score": Score("magnitude_score", 0.9)}
    assert image_findings(scores, THRESHOLDS) == []  # exactly at the minimum passes


def test_image_findings_below_minimum():
    scores = {"spectral_score": Score("spectral_score", 0.25), "magnitude_score": Score("magnitude_score", 0.39)}
    findings = image_findings(scores, THRESHOLDS)
    assert findings == [
        Finding("spectral_score", 0.25, 0.5, "image"),
        Finding("magnitude_score", 0.39, 0.4, "image"),
    ]
    assert findings[0].describe() == "spectral_score = 0.2500 < 0.5000 (per-image minimum)"


def test_image_findings_report_judge_errors_even_without_a_threshold():
    scores = {
        "spectral_score": Score("spectral_score", None, error="image_stats: cannot decode"),
        "other": Score("other", None, error="llm: timeout"),
        "magnitude_score": Score("magnitude_score", 0.1),
    }
    findings = image_findings(scores, THRESHOLDS)
    assert [(f.metric, f.error) for f in findings if f.error] == [
        ("spectral_score", "image_stats: cannot decode"),
        ("other", "llm: timeout"),
    ]
    assert Finding("magnitude_score", 0.1, 0.4, "image") in findings
    assert len(findings) == 3
    assert findings[0].describe() == "spectral_score: no score (image_stats: cannot decode)"


def test_nan_score_is_a_finding_not_a_pass():
    [finding] = image_findings({"spectral_score": Score("spectral_score", float("nan"))}, THRESHOLDS)
    assert (finding.metric, finding.value, finding.error) == ("spectral_score", None, "the judge returned NaN")
    assert finding.describe() == "spectral_score: no score (the judge returned NaN)"


def test_metrics_without_image_threshold_or_score_are_not_findings():
    assert image_findings({"clip_score": Score("clip_score", 1.0)}, THRESHOLDS) == []
    assert image_findings({}, THRESHOLDS) == []


# --- per checkpoint ------------------------------------------------------------------------------------


def test_checkpoint_findings_known_answers():
    values = {
        "spectral_score": [0.9, 0.5, 0.3],  # mean 0.5667 < 0.6, but 3 spread values cannot tell
        "magnitude_score": [0.0, 0.0],  # no checkpoint minimum: ignored here
        "clip_score": [30.0, 20.0, None, float("nan")],  # mean 25.0 on the minimum: inconclusive too
    }
    spectral, clip = checkpoint_findings(values, THRESHOLDS)
    assert (spectral.metric, spectral.decision) == ("spectral_score", "inconclusive")
    assert spectral.value == pytest.approx(1.7 / 3)
    assert (spectral.minimum, spectral.level) == (0.6, "checkpoint")
    assert spectral.describe().startswith("spectral_score: inconclusive: mean 0.5667, 98% CI [0.0000, 1.0000], n=3 straddles 0.6")
    assert "images would decide" in spectral.describe()
    assert (clip.metric, clip.decision) == ("clip_score", "inconclusive")
    assert "the mean sits on the minimum" in clip.describe()
    # on = "mean": the point estimate alone decides (flip-prone near the minimum)
    [on_mean] = checkpoint_findings(values, {"spectral_score": Threshold(checkpoint=0.6, on="mean")})
    assert on_mean.describe() == "spectral_score = 0.5667 < 0.6000 (per-checkpoint minimum)"


def test_checkpoint_clearly_below_fails_and_clearly_above_passes():
    low = [0.30, 0.32, 0.35, 0.31, 0.29, 0.33]
    [finding] = checkpoint_findings({"spectral_score": low}, {"spectral_score": Threshold(checkpoint=0.6)})
    assert finding.decision == "fail" and finding.statistic == "ci"
    assert finding.describe().startswith("spectral_score CI high = 0.3")
    high = [0.90, 0.92, 0.95, 0.91, 0.89, 0.93]
    assert checkpoint_findings({"spectral_score": high}, {"spectral_score": Threshold(checkpoint=0.6)}) == []


def test_checkpoint_without_any_value_is_incomplete():
    findings = checkpoint_findings({"spectral_score": [None, None]}, THRESHOLDS)
    assert [(f.metric, f.error, f.decision) for f in findings] == [
        ("spectral_score", "no image has a value", "incomplete"),
        ("clip_score", "no image has a value", "incomplete"),
    ]


def test_checkpoint_passing():
    values = {"spectral_score": [0.8, 0.8, 0.8], "clip_score": [29.0, 30.0, 31.0]}
    assert checkpoint_findings(values, THRESHOLDS) == []


# --- which checkpoints are gated ------------------------------------------------------------------------

CHECKPOINTS = [
    Checkpoint("a", 200),
    Checkpoint("a", 800),
    Checkpoint("a", 400),
    Checkpoint("b", 200),
    Checkpoint("b", 1000),
]


def test_gate_latest_is_the_highest_step_per_lora():
    assert gated_checkpoints(CHECKPOINTS, "latest") == {Checkpoint("a", 800), Checkpoint("b", 1000)}


def test_gate_all():
    assert gated_checkpoints(CHECKPOINTS, "all") == set(CHECKPOINTS)


def test_gate_list_of_steps_applies_to_every_lora():
    assert gated_checkpoints(CHECKPOINTS, [200, 1000]) == {
        Checkpoint("a", 200), Checkpoint("b", 200), Checkpoint("b", 1000),
    }
    assert gated_checkpoints(CHECKPOINTS, [999]) == set()


def test_gate_latest_with_epochs():
    epochs = [Checkpoint("a", 2, "epoch"), Checkpoint("a", 10, "epoch"), Checkpoint("a", 9, "epoch")]
    assert gated_checkpoints(epochs, "latest") == {Checkpoint("a", 10, "epoch")}
    assert gated_checkpoints([], "latest") == set()


# --- summary table --------------------------------------------------------------------------------------


def make_row(lora: str, step: int, prompt: str, metric: str, value: float | None) -> ScoreRow:
    case = EvalCase(lora, step, Prompt(prompt, "p"), Path(f"/s/{lora}_{step:06d}_{prompt}_20250101000000.png"))
    score = Score(metric, value, error=None if value is not None else "judge: failed")
    return ScoreRow.of(case, score, judge="j", judge_version="1", run_id="r", worker="main")


ROWS = [
    make_row("lora-a", 200, "00", "spectral_score", 0.2),
    make_row("lora-a", 200, "01", "spectral_score", 0.4),
    make_row("lora-a", 200, "02", "spectral_score", None),
    make_row("lora-a", 200, "00", "magnitude_score", 0.9),
    make_row("lora-a", 800, "00", "spectral_score", 0.95),
    make_row("lora-a", 800, "01", "spectral_score", 0.85),
    make_row("lora-a", 800, "00", "magnitude_score", 0.3),
    make_row("lora-a", 800, "01", "magnitude_score", 0.7),
]


def _view(rows, thresholds, gated=()):
    from lora_harness.report.view import Rules, build_view

    return build_view(rows, Rules(thresholds=thresholds, gated_keys=frozenset(gated)))


def test_format_table_marks_gated_failing_and_the_verdict():
    judged = {m: t for m, t in THRESHOLDS.items() if m != "clip_score"}
    table = format_table(_view(ROWS, judged, gated={"lora-a-step000800"}))
    lines = table.splitlines()
    assert lines[0].split() == ["checkpoint", "verdict", "magnitude_score", "spectral_score"]
    early = next(line for line in lines if "000200" in line)
    late = next(line for line in lines if "000800" in line)
    assert early.startswith("  lora-a 000200")  # not gated
    assert late.startswith("* lora-a 000800")  # gated
    assert early.split()[2] == "xfail"  # inconclusive, not gated
    assert late.split()[3] == "inconclusive"  # gated: two images cannot show 0.9 > 0.6 at 98%
    assert "?0.300 n=2 fail=2 err=1" in early  # two images: the interval straddles the minimum
    assert "0.900 n=1" in early  # magnitude: one image
    assert "0.500 n=2 fail=1" in late
    assert "?0.900 n=2" in late and "!0.900" not in late
    assert lines[-1].startswith("* gated checkpoint")
    # columns line up: every row is as wide as the header
    assert len({len(line) for line in lines[:-1]}) == 1


def test_format_table_fail_mark_and_verdict_line():
    rows = [make_row("lora-a", 800, f"{i:02d}", "spectral_score", v) for i, v in enumerate([0.3, 0.31, 0.32, 0.3])]
    view = _view(rows, {"spectral_score": THRESHOLDS["spectral_score"]}, gated={"lora-a-step000800"})
    table = format_table(view)
    assert "!0.307 n=4" in table
    assert verdict_line(view) == "verdict: FAIL (lora-a 000800: fail)"


def test_a_gated_metric_never_judged_makes_the_checkpoint_and_the_run_incomplete():
    rows = [make_row("lora-a", 800, f"{i:02d}", "spectral_score", 0.9) for i in range(4)]
    view = _view(rows, THRESHOLDS, gated={"lora-a-step000800"})  # clip_score has a minimum, no value
    assert view.checkpoints[0].status == "incomplete"
    assert view.badge == "incomplete"
    assert verdict_line(view) == "verdict: INCOMPLETE (lora-a 000800: incomplete)"


def test_format_table_missing_cells_and_all_errors():
    rows = [make_row("a", 200, "00", "spectral_score", 0.8), make_row("a", 400, "00", "magnitude_score", None)]
    table = format_table(_view(rows, {}))
    row_200 = next(line for line in table.splitlines() if "a 000200" in line)
    row_400 = next(line for line in table.splitlines() if "a 000400" in line)
    assert row_200.split() == ["a", "000200", "pass", "-", "0.800", "n=1"]  # magnitude, spectral
    assert row_400.split() == ["a", "000400", "skipped", "error", "x1", "-"]  # nothing judged, not gated


def test_format_table_of_nothing():
    assert format_table(_view([], {})) == "(no scores recorded)"


# --- mean and confidence interval -----------------------------------------------------------------------


def test_mean_ci_constant_scores_keep_a_width_from_the_sd_floor():
    ci = mean_ci([0.7, 0.7, 0.7, 0.7])
    half = 4.5407 * 0.02 / 2  # t(0.99, 3) x sd floor / sqrt(4)
    assert (ci.mean, ci.std, ci.n) == (pytest.approx(0.7), 0.0, 4)
    assert (ci.low, ci.high) == (pytest.approx(0.7 - half, abs=1e-4), pytest.approx(0.7 + half, abs=1e-4))


def test_mean_ci_single_value_has_no_interval():
    ci = mean_ci([0.4])
    assert (ci.mean, ci.std, ci.n, ci.low, ci.high) == (0.4, 0.0, 1, -math.inf, math.inf)
    assert ci.as_dict()["ci_low"] is None


def test_mean_ci_all_ones_is_not_certain():
    """0/1 values: the exact interval; three 1s do not show with confidence that the rate is above 0.5."""
    ci = mean_ci([1, 1, 1])
    assert ci.method == "clopper-pearson"
    assert ci.high == 1.0 and ci.low == pytest.approx(0.01 ** (1 / 3), abs=1e-6)  # (alpha/2)^(1/n)


@pytest.mark.parametrize("values", [[], [None, float("nan")]])
def test_mean_ci_no_data_is_nan(values):
    ci = mean_ci(values)
    assert ci.n == 0
    assert all(math.isnan(x) for x in (ci.mean, ci.std, ci.low, ci.high))


def test_mean_ci_known_mean_and_std_and_t_interval():
    values = [0.1, 0.4, 0.5, 0.9, 0.6, 0.3, 0.8, 0.2]
    ci = mean_ci(values)
    assert ci.mean == pytest.approx(0.475)
    assert ci.std == pytest.approx(float(np.std(values, ddof=1)))
    assert ci.n == 8 and ci.confidence == 0.98 and ci.method == "student-t"
    half = 2.99795 * ci.std / math.sqrt(8)  # t(0.99, 7)
    assert (ci.low, ci.high) == (pytest.approx(0.475 - half, abs=1e-4), pytest.approx(0.475 + half, abs=1e-4))


def test_mean_ci_ignores_missing_values():
    assert mean_ci([1.0, None, float("nan"), 3.0]).mean == 2.0


def test_mean_ci_does_not_depend_on_order_and_narrows_at_lower_confidence():
    values = np.random.default_rng(3).normal(0.5, 0.1, 30).tolist()
    a = mean_ci(values)
    b = mean_ci(list(reversed(values)))
    assert (a.low, a.high) == (b.low, b.high)
    narrow = mean_ci(values, confidence=0.5)
    assert a.low < narrow.low < narrow.high < a.high


def test_summary_verdict_follows_the_threshold_rule_like_the_checkpoint_test():
    """Mean 0.6 passes a 0.5 minimum on the mean; the CI's lower bound does not clear it (fail with
    ci_low, inconclusive with the default ci)."""
    rows = [make_row("lora", 800, f"{i:02d}", "m", v) for i, v in enumerate([0.2, 1.0, 0.2, 1.0, 0.6])]
    gated = {"lora-step000800"}
    on_mean = _view(rows, {"m": Threshold(checkpoint=0.5, on="mean")}, gated).checkpoints[0]
    on_ci_low = _view(rows, {"m": Threshold(checkpoint=0.5, on="ci_low")}, gated).checkpoints[0]
    on_ci = _view(rows, {"m": Threshold(checkpoint=0.5)}, gated).checkpoints[0]
    assert on_mean.cells["m"].mean == pytest.approx(0.6)
    assert (on_mean.status, on_mean.cells["m"].ok) == ("pass", True)
    assert (on_ci_low.status, on_ci_low.cells["m"].ok) == ("fail", False)
    assert (on_ci.status, on_ci.cells["m"].undecided) == ("inconclusive", True)
    assert checkpoint_findings({"m": [0.2, 1.0, 0.2, 1.0, 0.6]}, {"m": Threshold(checkpoint=0.5, on="ci_low")})
