"""Thresholds, gated checkpoints, the end-of-run table and the mean's confidence interval: known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lora_harness.cases import Checkpoint, EvalCase, Prompt
from lora_harness.config import Threshold
from lora_harness.verdicts.gates import Finding, checkpoint_findings, gated_checkpoints, image_findings
from lora_harness.judges.base import Score
from lora_harness.verdicts.stats import mean_ci
from lora_harness.store import ScoreRow
from lora_harness.summary import MetricSummary, format_table, summarize

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
        "spectral_score": [0.9, 0.5, 0.3],  # mean 0.5667 < 0.6
        "magnitude_score": [0.0, 0.0],  # no checkpoint minimum: ignored here
        "clip_score": [30.0, 20.0, None, float("nan")],  # mean of present values 25.0: passes
    }
    [finding] = checkpoint_findings(values, THRESHOLDS)
    assert finding.metric == "spectral_score"
    assert finding.value == pytest.approx(1.7 / 3)
    assert (finding.minimum, finding.level) == (0.6, "checkpoint")
    assert finding.describe() == "spectral_score = 0.5667 < 0.6000 (per-checkpoint minimum)"


def test_checkpoint_without_any_value_is_a_finding():
    findings = checkpoint_findings({"spectral_score": [None, None]}, THRESHOLDS)
    assert [(f.metric, f.error) for f in findings] == [
        ("spectral_score", "no image has a value"),
        ("clip_score", "no image has a value"),
    ]


def test_checkpoint_passing():
    assert checkpoint_findings({"spectral_score": [0.6, 0.6], "clip_score": [25.0]}, THRESHOLDS) == []


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


def test_summarize_known_answers():
    summaries = summarize(ROWS, THRESHOLDS)
    by_key = {(s.step, s.metric): s for s in summaries}
    assert [(s.step, s.metric) for s in summaries] == [
        ("000200", "magnitude_score"), ("000200", "spectral_score"),
        ("000800", "magnitude_score"), ("000800", "spectral_score"),
    ]
    early = by_key[("000200", "spectral_score")]
    assert early == MetricSummary("lora-a", "000200", "spectral_score", pytest.approx(0.3), 2, 2, 1, False)
    late = by_key[("000800", "spectral_score")]
    assert (late.mean, late.n, late.failures, late.errors, late.checkpoint_ok) == (pytest.approx(0.9), 2, 0, 0, True)
    magnitude = by_key[("000800", "magnitude_score")]
    assert (magnitude.mean, magnitude.failures, magnitude.checkpoint_ok) == (pytest.approx(0.5), 1, None)


def test_summarize_all_errors_gives_no_mean():
    [summary] = summarize([make_row("a", 200, "00", "spectral_score", None)], THRESHOLDS)
    assert (summary.mean, summary.n, summary.errors, summary.checkpoint_ok) == (None, 0, 1, None)


def test_format_table_marks_gated_and_failing():
    table = format_table(summarize(ROWS, THRESHOLDS), gated={("lora-a", "000800")})
    lines = table.splitlines()
    assert lines[0].split() == ["checkpoint", "magnitude_score", "spectral_score"]
    early = next(line for line in lines if "000200" in line)
    late = next(line for line in lines if "000800" in line)
    assert early.startswith("  lora-a 000200")  # not gated
    assert late.startswith("* lora-a 000800")  # gated
    assert "!0.300 n=2 fail=2 err=1" in early  # mean below the checkpoint minimum
    assert "0.900 n=1" in early  # magnitude: one image
    assert "0.500 n=2 fail=1" in late
    assert "0.900 n=2" in late and "!0.900" not in late
    assert lines[-1].startswith("* gated checkpoint")
    # columns line up: every row is as wide as the header
    assert len({len(line) for line in lines[:-1]}) == 1


def test_format_table_missing_cells_and_all_errors():
    rows = [make_row("a", 200, "00", "spectral_score", 0.8), make_row("a", 400, "00", "magnitude_score", None)]
    table = format_table(summarize(rows, {}))
    row_200 = next(line for line in table.splitlines() if "a 000200" in line)
    row_400 = next(line for line in table.splitlines() if "a 000400" in line)
    assert row_200.split() == ["a", "000200", "-", "0.800", "n=1"]  # magnitude, spectral
    assert row_400.split() == ["a", "000400", "error", "x1", "-"]


def test_format_table_of_nothing():
    assert format_table([]) == "(no scores recorded)"


# --- mean and confidence interval -----------------------------------------------------------------------


def test_mean_ci_constant_data_is_degenerate():
    ci = mean_ci([0.7, 0.7, 0.7, 0.7])
    assert (ci.mean, ci.std, ci.n, ci.low, ci.high) == (pytest.approx(0.7), 0.0, 4, pytest.approx(0.7), pytest.approx(0.7))


def test_mean_ci_single_value():
    ci = mean_ci([0.4])
    assert (ci.mean, ci.std, ci.n, ci.low, ci.high) == (0.4, 0.0, 1, 0.4, 0.4)


@pytest.mark.parametrize("values", [[], [None, float("nan")]])
def test_mean_ci_no_data_is_nan(values):
    ci = mean_ci(values)
    assert ci.n == 0
    assert all(math.isnan(x) for x in (ci.mean, ci.std, ci.low, ci.high))


def test_mean_ci_known_mean_and_std_and_interval_contains_mean():
    values = [0.1, 0.4, 0.5, 0.9, 0.6, 0.3, 0.8, 0.2]
    ci = mean_ci(values, n_resamples=1000)
    assert ci.mean == pytest.approx(0.475)
    assert ci.std == pytest.approx(float(np.std(values, ddof=1)))
    assert ci.n == 8 and ci.confidence == 0.95
    assert min(values) <= ci.low < ci.mean < ci.high <= max(values)
    # the bootstrap interval is close to the normal-theory one for this spread
    half = 1.96 * ci.std / math.sqrt(8)
    assert ci.high - ci.low == pytest.approx(2 * half, rel=0.35)


def test_mean_ci_ignores_missing_values():
    assert mean_ci([1.0, None, float("nan"), 3.0], n_resamples=200).mean == 2.0


def test_mean_ci_is_reproducible_by_seed_and_narrower_at_lower_confidence():
    values = np.random.default_rng(3).normal(0.5, 0.1, 30).tolist()
    a = mean_ci(values, n_resamples=500, seed=7)
    b = mean_ci(values, n_resamples=500, seed=7)
    c = mean_ci(values, n_resamples=500, seed=8)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    narrow = mean_ci(values, n_resamples=500, seed=7, confidence=0.5)
    assert a.low < narrow.low < narrow.high < a.high


def test_summary_verdict_follows_the_ci_low_rule_like_the_checkpoint_test():
    """Mean 0.6 passes a 0.5 minimum, but the CI's lower bound (0.2 with these values) does not."""
    rows = [make_row("lora", 800, f"{i:02d}", "m", v) for i, v in enumerate([0.2, 1.0, 0.2, 1.0, 0.6])]
    on_mean = summarize(rows, {"m": Threshold(checkpoint=0.5)})[0]
    on_ci_low = summarize(rows, {"m": Threshold(checkpoint=0.5, on="ci_low")})[0]
    assert on_mean.mean == pytest.approx(0.6)
    assert on_mean.checkpoint_ok is True
    assert on_ci_low.checkpoint_ok is False
    assert checkpoint_findings({"m": [0.2, 1.0, 0.2, 1.0, 0.6]}, {"m": Threshold(checkpoint=0.5, on="ci_low")})
