"""Aggregate statistics: hand-computed answers, bootstrap intervals checked by an independent resampler, and
the `on = "ci_low"` checkpoint threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lora_harness.cases import Checkpoint
from lora_harness.config import StatsConfig, Threshold
from lora_harness.verdicts.gates import checkpoint_findings
from lora_harness.verdicts.stats import CheckpointAggregates, aggregate, mean_ci, paired_difference


def numpy_percentile_bootstrap(data: np.ndarray, *, resamples: int, seed: int, confidence: float = 0.95) -> tuple[float, float]:
    """An independent percentile bootstrap of the mean: plain numpy, its own random stream."""
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.percentile(means, 100 * alpha)), float(np.percentile(means, 100 * (1 - alpha)))


def test_mean_std_n_by_hand() -> None:
    result = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert result.mean == 2.5
    assert result.std == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, ddof=1
    assert result.n == 4
    assert result.low < 2.5 < result.high
    assert 1.0 <= result.low and result.high <= 4.0


def test_two_point_bootstrap_interval_is_its_whole_range() -> None:
    # resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: both 2.5% tails hit the ends
    result = mean_ci([0.0, 1.0])
    assert (result.low, result.high) == (0.0, 1.0)


def test_one_low_outlier_drags_the_lower_bound_to_a_known_value() -> None:
    # [0.2, 1, 1, 1]: a resample's mean is 1 - 0.2k with k ~ Binomial(4, 1/4) copies of 0.2.
    # P(k = 4) = 0.0039 < 2.5% <= P(k >= 3) = 0.0508, so the 2.5th percentile is k = 3: 0.4.
    result = mean_ci([0.2, 1.0, 1.0, 1.0])
    assert result.mean == pytest.approx(0.8)
    assert result.low == pytest.approx(0.4)
    assert result.high == pytest.approx(1.0)


def test_interval_matches_an_independent_numpy_bootstrap() -> None:
    data = np.random.default_rng(7).beta(4, 2, size=40)
    ours = mean_ci(data, n_resamples=20000, seed=1)
    low, high = numpy_percentile_bootstrap(data, resamples=20000, seed=99)
    assert ours.low == pytest.approx(low, abs=0.005)
    assert ours.high == pytest.approx(high, abs=0.005)
    # and roughly the normal-theory interval for a sample this size
    half = 1.96 * data.std(ddof=1) / math.sqrt(data.size)
    assert ours.high - ours.low == pytest.approx(2 * half, rel=0.15)


def test_fixed_seed_reproduces_and_other_seeds_move_little() -> None:
    data = [0.1, 0.9, 0.4, 0.7, 0.35, 0.8]
    assert mean_ci(data, seed=3) == mean_ci(data, seed=3)
    other = mean_ci(data, seed=4)
    assert other.low == pytest.approx(mean_ci(data, seed=3).low, abs=0.05)


def test_missing_values_are_left_out_not_counted_as_zero() -> None:
    result = mean_ci([1.0, None, float("nan"), 0.5])
    assert (result.mean, result.n) == (0.75, 2)


def test_degenerate_inputs() -> None:
    empty = mean_ci([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.low)
    single = mean_ci([0.3])
    assert (single.mean, single.std, single.low, single.high) == (0.3, 0.0, 0.3, 0.3)
    constant = mean_ci([0.5, 0.5, 0.5])
    assert (constant.low, constant.high) == (0.5, 0.5)


def test_aggregate_and_json_form() -> None:
    aggregates = aggregate({"a": [1.0, 0.0], "b": [None, None]})
    assert aggregates["a"].mean == 0.5 and aggregates["b"].n == 0
    record = CheckpointAggregates(Checkpoint("lora", 800), aggregates).as_dict(digits=3)
    assert record["checkpoint"] == "lora-step000800" and record["training_step"] == 800
    assert record["metrics"]["a"] == {"mean": 0.5, "std": 0.707, "n": 2, "ci_low": 0.0, "ci_high": 1.0}
    assert record["metrics"]["b"]["mean"] is None  # NaN is not JSON
    assert CheckpointAggregates(Checkpoint("lora", 800), aggregates).means() == {"a": 0.5, "b": None}


def test_paired_difference_by_hand() -> None:
    result = paired_difference([0.9, 0.8, 0.7, 0.6, None], [0.8, 0.8, 0.8, 0.8, 0.1])
    assert result.n == 4  # the pair without a candidate value is dropped
    assert result.diff.mean == pytest.approx(-0.05)  # diffs 0.1, 0, -0.1, -0.2
    assert result.candidate_mean == pytest.approx(0.75) and result.baseline_mean == pytest.approx(0.8)
    assert result.diff.low < -0.05 < result.diff.high


def test_identical_sides_have_a_zero_width_interval_at_zero() -> None:
    values = [0.3, 0.9, 0.5]
    result = paired_difference(values, values)
    assert (result.diff.mean, result.diff.low, result.diff.high) == (0.0, 0.0, 0.0)


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


def test_checkpoint_threshold_on_ci_low_fails_where_the_mean_passes() -> None:
    values = {"score": [0.2, 1.0, 1.0, 1.0]}
    assert checkpoint_findings(values, {"score": Threshold(checkpoint=0.6)}) == []
    findings = checkpoint_findings(values, {"score": Threshold(checkpoint=0.6, on="ci_low")}, StatsConfig())
    assert len(findings) == 1
    finding = findings[0]
    assert (finding.statistic, finding.value, finding.minimum) == ("ci_low", pytest.approx(0.4), 0.6)
    message = finding.describe()
    assert "score CI low = 0.4000 < 0.6000" in message
    assert "mean 0.8000, 95% CI [0.4000, 1.0000], n=4" in message


def test_checkpoint_threshold_on_ci_low_passes_when_confidently_above() -> None:
    values = {"score": [0.9, 0.95, 0.92, 0.97, 0.93]}
    assert checkpoint_findings(values, {"score": Threshold(checkpoint=0.85, on="ci_low")}) == []
