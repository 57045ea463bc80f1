"""Aggregate statistics over a checkpoint's cases: mean with a bootstrap confidence interval.

LLM judges are noisy and prompts differ in difficulty, so a mean alone over a handful of images says
little; the interval says how much the mean would move with other prompts and seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class MeanCI:
    mean: float
    std: float
    n: int
    low: float
    high: float
    confidence: float = 0.95


def mean_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> MeanCI:
    """Mean, sample standard deviation and a percentile-bootstrap CI (degenerate for n < 2 or constant data)."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
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
