"""Aggregate statistics over a checkpoint's cases: mean with a bootstrap confidence interval, and paired
differences between a candidate and a baseline.

LLM judges are noisy and prompts differ in difficulty, so a mean alone over a handful of images says
little; the interval says how much the mean would move with other prompts and seeds. Comparing two LoRAs
on the *same* prompts and seeds (paired) removes the prompt-difficulty part of that noise: the interval is
computed on per-case differences, which is why a paired comparison needs far fewer images than comparing
two independent means.

Every interval is a percentile bootstrap (scipy) with a fixed seed, so a rerun on the same scores gives the
same interval and a gate never flips on resampling noise alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as _scipy_stats

from lora_harness.cases import Checkpoint


@dataclass(frozen=True)
class MeanCI:
    """Mean, sample standard deviation, count and a bootstrap CI of the mean."""

    mean: float
    std: float
    n: int
    low: float
    high: float
    confidence: float = 0.95

    def as_dict(self, digits: int = 6) -> dict[str, Any]:
        """JSON-friendly, rounded (NaN becomes None) so stored files diff cleanly."""

        def clean(value: float) -> float | None:
            return None if value is None or math.isnan(value) else round(float(value), digits)

        return {"mean": clean(self.mean), "std": clean(self.std), "n": self.n, "ci_low": clean(self.low), "ci_high": clean(self.high)}


def _finite(values: Iterable[float | None]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)


def mean_ci(values: Sequence[float | None], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> MeanCI:
    """Mean, sample standard deviation and a percentile-bootstrap CI (degenerate for n < 2 or constant data).

    Missing values (None, NaN: a judge that could not score an image) are left out, not counted as 0.
    """
    data = _finite(values)
    n = int(data.size)
    if n == 0:
        nan = float("nan")
        return MeanCI(nan, nan, 0, nan, nan, confidence)
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if n > 1 else 0.0
    if n < 2 or np.all(data == data[0]):
        return MeanCI(mean, std, n, mean, mean, confidence)
    result = _scipy_stats.bootstrap(
        (data,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return MeanCI(mean, std, n, float(result.confidence_interval.low), float(result.confidence_interval.high), confidence)


def aggregate(
    values_by_metric: Mapping[str, Sequence[float | None]], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> dict[str, MeanCI]:
    """One `MeanCI` per metric over all of a checkpoint's observations (prompts x seeds x judge repeats)."""
    return {
        metric: mean_ci(values, confidence=confidence, n_resamples=n_resamples, seed=seed)
        for metric, values in values_by_metric.items()
    }


@dataclass(frozen=True)
class CheckpointAggregates:
    """The aggregate scores of one checkpoint: what snapshots store and the best-checkpoint choice reads."""

    checkpoint: Checkpoint
    metrics: dict[str, MeanCI]

    def means(self) -> dict[str, float | None]:
        return {m: (None if math.isnan(a.mean) else a.mean) for m, a in self.metrics.items()}

    def as_dict(self, digits: int = 6) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint.key,
            "loraname": self.checkpoint.loraname,
            "training_step": self.checkpoint.training_step,
            "step_kind": self.checkpoint.step_kind,
            "metrics": {metric: self.metrics[metric].as_dict(digits) for metric in sorted(self.metrics)},
        }


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus baseline over paired cases: the means and a bootstrap CI of the mean difference."""

    n: int  # pairs where both sides have a value
    candidate_mean: float
    baseline_mean: float
    diff: MeanCI  # of the per-pair differences (candidate - baseline)


def paired_difference(
    candidate: Sequence[float | None],
    baseline: Sequence[float | None],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedDifference:
    """Mean difference with a paired bootstrap CI: whole pairs are resampled, so per-prompt difficulty,
    which both sides share, cancels out. Position i of both sequences must be the same case."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired samples differ in length: {len(candidate)} candidate vs {len(baseline)} baseline values")
    pairs = [
        (float(c), float(b))
        for c, b in zip(candidate, baseline)
        if c is not None and b is not None and not math.isnan(c) and not math.isnan(b)
    ]
    cand = np.asarray([c for c, _ in pairs], dtype=float)
    base = np.asarray([b for _, b in pairs], dtype=float)
    diff = mean_ci(cand - base, confidence=confidence, n_resamples=n_resamples, seed=seed)
    nan = float("nan")
    return PairedDifference(
        n=len(pairs),
        candidate_mean=float(cand.mean()) if pairs else nan,
        baseline_mean=float(base.mean()) if pairs else nan,
        diff=diff,
    )
