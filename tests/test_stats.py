"""Intervals: hand-computed answers checked against scipy, and each method checked by simulation against
its promise (coverage; a checkpoint truly at its minimum passing at most (1 - confidence) / 2 of runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lora_harness.core.cases import Checkpoint
from lora_harness.core.config import StatsConfig, Threshold
from lora_harness.verdicts.thresholds import checkpoint_findings
from lora_harness.verdicts.stats import (
    CheckpointAggregates, aggregate, mean_ci, paired_binary_pvalues, paired_difference,
)


def test_mean_std_n_and_the_t_interval_by_hand() -> None:
    result = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert (result.mean, result.n) == (2.5, 4)
    assert result.std == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, ddof=1
    half = scipy_stats.t.ppf(0.99, 3) * math.sqrt(5 / 3) / 2
    assert (result.low, result.high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))  # not clipped: outside [0, 1]


def test_scores_in_unit_range_are_clipped_and_floored() -> None:
    result = mean_ci([0.95, 1.0, 0.9])
    assert result.high == 1.0 and result.low < 0.95
    floored = mean_ci([0.5, 0.5, 0.5], sd_floor=0.05)
    assert floored.high - floored.low == pytest.approx(2 * scipy_stats.t.ppf(0.99, 2) * 0.05 / math.sqrt(3))


def test_binary_values_get_the_exact_interval() -> None:
    result = mean_ci([1, 0, 1, 1, 1, 0, 1, 1, 1, 1])
    exact = scipy_stats.binomtest(8, 10).proportion_ci(0.98, method="exact")
    assert result.method == "clopper-pearson"
    assert (result.low, result.high) == (pytest.approx(exact.low), pytest.approx(exact.high))


def test_missing_values_are_left_out_not_counted_as_zero() -> None:
    result = mean_ci([1.0, None, float("nan"), 0.5])
    assert (result.mean, result.n) == (0.75, 2)


def test_degenerate_inputs() -> None:
    empty = mean_ci([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.low)
    single = mean_ci([0.3])
    assert (single.mean, single.std, single.low, single.high) == (0.3, 0.0, -math.inf, math.inf)


def test_aggregate_and_json_form() -> None:
    aggregates = aggregate({"a": [1.0, 0.0], "b": [None, None]})
    assert aggregates["a"].mean == 0.5 and aggregates["b"].n == 0
    record = CheckpointAggregates(Checkpoint("lora", 800), aggregates).as_dict(digits=3)
    assert record["checkpoint"] == "lora-step000800" and record["training_step"] == 800
    exact = scipy_stats.binomtest(1, 2).proportion_ci(0.98, method="exact")
    assert record["metrics"]["a"] == {"mean": 0.5, "std": 0.707, "n": 2, "ci_low": round(exact.low, 3), "ci_high": round(exact.high, 3)}
    assert record["metrics"]["b"]["mean"] is None  # NaN is not JSON
    assert CheckpointAggregates(Checkpoint("lora", 800), aggregates).means() == {"a": 0.5, "b": None}


def test_paired_difference_by_hand() -> None:
    result = paired_difference([0.9, 0.8, 0.7, 0.6, None], [0.8, 0.8, 0.8, 0.8, 0.1])
    assert result.n == 4  # the pair without a candidate value is dropped
    assert result.diff.mean == pytest.approx(-0.05)  # diffs 0.1, 0, -0.1, -0.2
    assert result.candidate_mean == pytest.approx(0.75) and result.baseline_mean == pytest.approx(0.8)
    sd = float(np.std([0.1, 0, -0.1, -0.2], ddof=1))
    half = scipy_stats.t.ppf(0.99, 3) * sd / 2
    assert (result.diff.low, result.diff.high) == (pytest.approx(-0.05 - half), pytest.approx(-0.05 + half))


def test_identical_sides_keep_an_interval_around_zero() -> None:
    values = [0.3, 0.9, 0.5]
    result = paired_difference(values, values)
    assert result.diff.mean == 0.0 and result.diff.low < 0 < result.diff.high


def test_identical_binary_sides_do_not_prove_non_inferiority() -> None:
    """Nine pairs that all agree cannot exclude a 5% loss: some pairs might disagree in the long run."""
    result = paired_difference([1] * 9, [1] * 9)
    assert result.diff.method == "exact-paired-binary"
    assert result.diff.low < -0.05 and result.diff.high > 0.05


def test_pairing_removes_prompt_difficulty() -> None:
    """A small consistent gain over prompts of very different difficulty: paired sees it, unpaired does not."""
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0.1, 0.9, size=30)
    candidate = baseline + 0.03 + rng.normal(0, 0.01, size=30)
    paired = paired_difference(candidate, baseline)
    assert paired.diff.low > 0  # the gain is significant when pairs are kept
    unpaired_width = mean_ci(candidate).high - mean_ci(candidate).low  # what comparing two means would see
    assert paired.diff.high - paired.diff.low < unpaired_width / 5


def test_paired_difference_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length: 2 candidate vs 1 baseline"):
        paired_difference([0.1, 0.2], [0.1])


def test_intervals_do_not_depend_on_the_order_of_the_values() -> None:
    rng = np.random.default_rng(5)
    values = rng.uniform(0, 1, 9).round(2).tolist()
    other = rng.uniform(0, 1, 9).round(2).tolist()
    order = rng.permutation(9)
    assert mean_ci(values) == mean_ci([values[i] for i in order])
    assert paired_difference(values, other) == paired_difference([values[i] for i in order], [other[i] for i in order])


def test_checkpoint_threshold_on_ci_low_fails_where_the_mean_passes() -> None:
    values = {"score": [0.2, 1.0, 1.0, 1.0]}
    assert checkpoint_findings(values, {"score": Threshold(checkpoint=0.6, on="mean")}) == []
    findings = checkpoint_findings(values, {"score": Threshold(checkpoint=0.6, on="ci_low")}, StatsConfig())
    assert len(findings) == 1
    finding = findings[0]
    assert (finding.statistic, finding.minimum) == ("ci_low", 0.6)
    assert finding.value == pytest.approx(mean_ci(values["score"]).low)
    assert "mean 0.8000, 98% CI [" in finding.describe()
    [default] = checkpoint_findings(values, {"score": Threshold(checkpoint=0.6)})
    assert default.decision == "inconclusive" and "straddles 0.6" in default.describe()


def test_checkpoint_threshold_passes_when_confidently_above() -> None:
    values = {"score": [0.9, 0.95, 0.92, 0.97, 0.93]}
    assert checkpoint_findings(values, {"score": Threshold(checkpoint=0.85)}) == []
    assert checkpoint_findings(values, {"score": Threshold(checkpoint=0.85, on="ci_low")}) == []


# --- simulation against the promises (small K here; benchmarks/verdict_stability.py runs the large one) ---


def _judge_scores(rng: np.random.Generator, mean: float, sd: float, runs: int, n: int) -> np.ndarray:
    return np.round(np.clip(rng.normal(mean, sd, (runs, n)), 0, 1) / 0.05) * 0.05


@pytest.mark.parametrize("n", [3, 6, 12])
def test_t_interval_coverage_and_wrongful_pass_by_simulation(n: int) -> None:
    rng = np.random.default_rng(n)
    runs = 600
    data = _judge_scores(rng, 0.6, 0.1, runs, n)
    truth = float(_judge_scores(np.random.default_rng(99), 0.6, 0.1, 1, 400_000).mean())
    cis = [mean_ci(row.tolist()) for row in data]
    coverage = np.mean([ci.low <= truth <= ci.high for ci in cis])
    passes = np.mean([ci.low >= truth for ci in cis])  # a checkpoint exactly at its minimum
    assert coverage >= 0.95  # promised 98%; K = 600 leaves room for chance
    assert passes <= 0.025


@pytest.mark.parametrize("n", [3, 9, 24])
def test_exact_binary_interval_never_passes_a_checkpoint_at_its_minimum_more_than_alpha(n: int) -> None:
    """Exact: the pass probability at p = minimum is a sum over the binomial outcomes, no simulation noise."""
    for p in (0.5, 0.6, 0.7, 0.8, 0.9):
        passing = [k for k in range(n + 1) if mean_ci([1] * k + [0] * (n - k)).low >= p]
        assert scipy_stats.binom.pmf(passing, n, p).sum() <= 0.01 + 1e-12  # (1 - 0.98) / 2


def test_exact_paired_binary_test_keeps_its_level_at_the_margin() -> None:
    """Exact over every (b, c) outcome: a candidate truly 0.1 worse passes non-inferiority at margin 0.1
    with probability <= 2.5% at 95% (the worst nuisance), here for n = 9 and two correlations."""
    n, margin = 9, 0.1
    for pb, p11 in ((0.7, 0.6 * 0.7 - 0.02), (0.7, 0.6 * 0.7 + 0.1)):
        pc = pb - margin
        p10, p01 = pc - p11, pb - p11
        total = 0.0
        for b in range(n + 1):
            for c in range(n + 1 - b):
                if paired_binary_pvalues(n, b, c, -margin)[0] <= 0.025:
                    total += scipy_stats.multinomial.pmf([b, c, n - b - c], n, [p10, p01, 1 - p10 - p01])
        assert total <= 0.025
