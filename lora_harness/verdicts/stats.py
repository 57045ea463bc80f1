"""Intervals for a checkpoint's mean and for paired differences, chosen per kind of metric.

A gate sees few images (kohya samples: 2-8 prompts, often one seed) scored by noisy, coarse judges, so the
interval must keep its promise at n = 3. Each method here was checked by simulation against that promise
(`benchmarks/verdict_stability.py`, `tests/test_verdict_statistics.py`); what was tried and dropped is in
the README ("Verdict statistics"):

- 0/1 metrics (every value is 0 or 1: person present, face detected, yes/no LLM answers): the exact
  Clopper-Pearson interval (`scipy.stats.binomtest(...).proportion_ci(method="exact")`). Wilson and
  Jeffreys intervals cover well on average but let a checkpoint truly at its threshold pass up to 6-9% of
  the time at some n; the exact interval never does.
- Other metrics: the Student t interval of the mean (the studentized interval; `scipy.stats.t`), with the
  standard deviation floored at `sd_floor` for scores a judge gives on a grid (multiples of 0.05, as LLM
  judges answer), so three equal LLM scores do not give a zero-width interval "with confidence", and
  clipped to [0, 1] for scores in that range. The percentile bootstrap
  covered only 73-85% at n = 3-6 and BCa is degenerate on equal values, so neither is used for verdicts.
- Paired differences (candidate - baseline on the same prompt and seed): the paired t interval for scores;
  for 0/1 metrics an exact unconditional interval over the pairs' discordant counts (the nuisance parameter
  maximised over a grid), because a t interval on {-1, 0, 1} differences collapses when no pair disagrees.

Every value is sorted before use, so an interval never depends on the order rows arrive in (xdist workers).
Judge repeats are averaged per image before they get here (an image is the unit), so they never count as
extra images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as _scipy_stats
from scipy.special import gammaln, xlogy

from lora_harness.core.cases import Checkpoint

DEFAULT_CONFIDENCE = 0.98
DEFAULT_SD_FLOOR = 0.02

METHOD_EXACT = "clopper-pearson"
METHOD_T = "student-t"
METHOD_PAIRED_EXACT = "exact-paired-binary"
METHOD_NONE = "none"


@dataclass(frozen=True)
class MeanCI:
    """Mean, sample standard deviation, count and a confidence interval of the mean (NaN bounds: none)."""

    mean: float
    std: float
    n: int
    low: float
    high: float
    confidence: float = DEFAULT_CONFIDENCE
    method: str = METHOD_T

    def as_dict(self, digits: int = 6) -> dict[str, Any]:
        """JSON-friendly, rounded (NaN and infinities become None) so stored files diff cleanly."""

        def clean(value: float) -> float | None:
            return None if value is None or not math.isfinite(value) else round(float(value), digits)

        return {"mean": clean(self.mean), "std": clean(self.std), "n": self.n, "ci_low": clean(self.low), "ci_high": clean(self.high)}

    def describe(self) -> str:
        if self.n == 0:
            return "no value"
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"mean {self.mean:.4f}, n={self.n}: one value has no interval"
        return f"mean {self.mean:.4f}, {self.confidence:.0%} CI [{self.low:.4f}, {self.high:.4f}], n={self.n}"


def finite_sorted(values: Iterable[float | None]) -> np.ndarray:
    """The values that exist (None and NaN left out: not scored is not 0), sorted."""
    return np.sort(np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float))


def is_binary(data: np.ndarray) -> bool:
    return data.size > 0 and bool(np.all((data == 0.0) | (data == 1.0)))


def _unit(data: np.ndarray) -> bool:
    return data.size > 0 and float(data.min()) >= 0.0 and float(data.max()) <= 1.0


GRID = 0.05  # LLM judges answer in steps of 0.05 or 0.1


def on_grid(data: np.ndarray) -> bool:
    """Scores a judge gives on a coarse grid (multiples of 0.05): equal values there are rounding, not
    certainty, so their spread is floored. Continuous judges (embeddings, face distance) are not."""
    return data.size > 0 and bool(np.all(np.abs(data / GRID - np.round(data / GRID)) < 1e-6))


def mean_ci(
    values: Sequence[float | None], *, confidence: float = DEFAULT_CONFIDENCE, sd_floor: float = DEFAULT_SD_FLOOR
) -> MeanCI:
    """The interval that fits the values: exact binomial for 0/1 values, else Student t (see module doc).

    One value has no interval (bounds -inf, inf): a gate on it is inconclusive, never a pass by luck.
    """
    data = finite_sorted(values)
    n = int(data.size)
    nan = float("nan")
    if n == 0:
        return MeanCI(nan, nan, 0, nan, nan, confidence, METHOD_NONE)
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if n > 1 else 0.0
    if is_binary(data):
        ci = _scipy_stats.binomtest(int(data.sum()), n).proportion_ci(confidence, method="exact")
        return MeanCI(mean, std, n, float(ci.low), float(ci.high), confidence, METHOD_EXACT)
    if n < 2:
        return MeanCI(mean, std, n, -math.inf, math.inf, confidence, METHOD_T)
    unit = _unit(data)
    spread = max(std, sd_floor) if unit and on_grid(data) else std
    half = _t_quantile(confidence, n - 1) * spread / math.sqrt(n)
    low, high = mean - half, mean + half
    if unit:
        low, high = max(low, 0.0), min(high, 1.0)
    return MeanCI(mean, std, n, low, high, confidence, METHOD_T)


@lru_cache(maxsize=1024)
def _t_quantile(confidence: float, df: int) -> float:
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, df))


def aggregate(
    values_by_metric: Mapping[str, Sequence[float | None]], *, confidence: float = DEFAULT_CONFIDENCE,
    sd_floor: float = DEFAULT_SD_FLOOR,
) -> dict[str, MeanCI]:
    """One `MeanCI` per metric over a checkpoint's images."""
    return {m: mean_ci(v, confidence=confidence, sd_floor=sd_floor) for m, v in values_by_metric.items()}


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


# --- paired differences ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus baseline over paired cases: the means and an interval of the mean difference."""

    n: int  # pairs where both sides have a value
    candidate_mean: float
    baseline_mean: float
    diff: MeanCI  # of the per-pair differences (candidate - baseline)


def paired_difference(
    candidate: Sequence[float | None],
    baseline: Sequence[float | None],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    sd_floor: float = DEFAULT_SD_FLOOR,
) -> PairedDifference:
    """Mean difference with a paired interval: per-prompt difficulty, shared by both sides, cancels out.
    Position i of both sequences must be the same case."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired samples differ in length: {len(candidate)} candidate vs {len(baseline)} baseline values")
    pairs = sorted(
        (float(c), float(b))
        for c, b in zip(candidate, baseline)
        if c is not None and b is not None and not math.isnan(c) and not math.isnan(b)
    )
    nan = float("nan")
    if not pairs:
        return PairedDifference(0, nan, nan, MeanCI(nan, nan, 0, nan, nan, confidence, METHOD_NONE))
    cand = np.asarray([c for c, _ in pairs])
    base = np.asarray([b for _, b in pairs])
    if is_binary(cand) and is_binary(base):
        diff = _paired_binary_ci(cand, base, confidence)
    else:
        floor = sd_floor if _unit(cand) and _unit(base) and on_grid(cand) and on_grid(base) else 0.0
        diff = _paired_t_ci(cand - base, confidence, floor, bounded=_unit(cand) and _unit(base))
    return PairedDifference(len(pairs), float(cand.mean()), float(base.mean()), diff)


def _paired_t_ci(d: np.ndarray, confidence: float, sd_floor: float, *, bounded: bool) -> MeanCI:
    n = int(d.size)
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    if n < 2:
        return MeanCI(mean, std, n, -math.inf, math.inf, confidence, METHOD_T)
    half = _t_quantile(confidence, n - 1) * max(std, sd_floor) / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounded:  # a difference of two scores in [0, 1]
        low, high = max(low, -1.0), min(high, 1.0)
    return MeanCI(mean, std, n, low, high, confidence, METHOD_T)


def _paired_binary_ci(cand: np.ndarray, base: np.ndarray, confidence: float) -> MeanCI:
    """Exact unconditional interval for p(candidate) - p(baseline) from 0/1 pairs.

    Only the discordant pairs carry information: b pairs where the candidate alone scores 1, c where the
    baseline alone does. For a difference delta the p-value of (b, c) is the largest, over the share of
    discordant pairs (the nuisance parameter), probability of an outcome at least as extreme under a
    Wald-type ordering; the interval is every delta neither tail rejects at (1 - confidence) / 2.
    """
    n = int(cand.size)
    b = int(np.sum((cand == 1) & (base == 0)))
    c = int(np.sum((cand == 0) & (base == 1)))
    d = cand - base
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    alpha = (1 - confidence) / 2
    low = _boundary(lambda delta: _tail_max(n, b, c, delta, upper=True) <= alpha, mean, -1.0)
    high = _boundary(lambda delta: _tail_max(n, b, c, delta, upper=False) <= alpha, mean, 1.0)
    return MeanCI(mean, std, n, low, high, confidence, METHOD_PAIRED_EXACT)


def paired_binary_pvalues(n: int, b: int, c: int, delta: float) -> tuple[float, float]:
    """(P of a result at least this good, P of one at least this bad) maximised over the nuisance, at
    true difference `delta`: the one-sided p-values a non-inferiority pass and fail are decided with."""
    return _tail_max(n, b, c, delta, upper=True), _tail_max(n, b, c, delta, upper=False)


@lru_cache(maxsize=64)
def _outcomes(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (b, c) with b + c <= n and its log multinomial coefficient."""
    bs, cs = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = bs + cs <= n
    bs, cs = bs[keep].astype(float), cs[keep].astype(float)
    logcoef = gammaln(n + 1) - gammaln(bs + 1) - gammaln(cs + 1) - gammaln(n - bs - cs + 1)
    return bs, cs, logcoef


def _wald(n: int, bs: np.ndarray, cs: np.ndarray, delta: float) -> np.ndarray:
    diff = (bs - cs) / n
    var = ((bs + cs) / n - diff**2) / n
    return (diff - delta) / np.sqrt(np.maximum(var, 0.25 / n**2))


def _tail_max(n: int, b: int, c: int, delta: float, upper: bool) -> float:
    bs, cs, logcoef = _outcomes(n)
    stat = _wald(n, bs, cs, delta)
    observed = float(_wald(n, np.array([b], float), np.array([c], float), delta)[0])
    extreme = stat >= observed - 1e-12 if upper else stat <= observed + 1e-12
    # nuisance: q- = P(baseline alone scores 1) from max(0, -delta) to (1 - delta) / 2 (q+ = q- + delta)
    qm = np.linspace(max(0.0, -delta), (1.0 - delta) / 2, 61)[:, None]
    qp = np.clip(qm + delta, 0.0, 1.0)
    q0 = np.clip(1.0 - qp - qm, 0.0, 1.0)
    bs_, cs_, rest = bs[extreme], cs[extreme], n - bs[extreme] - cs[extreme]
    logp = logcoef[extreme] + xlogy(bs_, qp) + xlogy(cs_, qm) + xlogy(rest, q0)
    return float(min(np.exp(logp).sum(axis=1).max(initial=0.0), 1.0))


def _boundary(rejects: Any, inside: float, outside: float, *, steps: int = 16) -> float:
    """The edge between the deltas the test keeps (towards `inside`, the estimate) and rejects (towards
    `outside`, -1 or 1), bisected; the rejected side is returned, so the interval errs wide, never narrow."""
    if not rejects(outside):
        return outside
    for _ in range(steps):
        mid = (inside + outside) / 2
        inside, outside = (inside, mid) if rejects(mid) else (mid, outside)
    return outside
