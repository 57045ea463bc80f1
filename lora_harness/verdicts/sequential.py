"""Looking again without cheating: the confidence each look of adaptive judging decides at.

Adaptive judging (`[gate] adaptive = true`) asks for more evidence while a gated decision is inconclusive
and stops as soon as it is decided. Deciding every look at the full confidence would let a checkpoint truly
at its minimum pass more often than promised, since each look is another chance for a lucky interval. The
looks are planned up front (the evidence doubles each round, up to the budget), and the error is spent
evenly over them (Bonferroni): each look decides at `1 - (1 - confidence) / looks`, so the chance of any
wrongful decision over all looks stays under `1 - confidence`, however the data fall. Conservative, simple,
and checked by simulation in `benchmarks/verdict_stability.py`.
"""

from __future__ import annotations

from lora_harness.core.config import GateConfig, StatsConfig


def planned_rounds(start: int, budget: int) -> list[int]:
    """The evidence size at each look: start, then doubling, capped at the budget (which is always a look)."""
    if start < 1 or budget < start:
        raise ValueError(f"a budget of {budget} cannot follow a start of {start}")
    sizes = [start]
    while sizes[-1] < budget:
        sizes.append(min(sizes[-1] * 2, budget))
    return sizes


def look_confidence(confidence: float, looks: int) -> float:
    """The two-sided confidence each of `looks` planned looks decides at (Bonferroni over the looks)."""
    return 1.0 - (1.0 - confidence) / max(1, looks)


def repeat_rounds(gate: GateConfig) -> list[int]:
    """Judge repeats per image at each look of adaptive judging (1, 2, 4, ... up to `max_repeats`)."""
    return planned_rounds(1, gate.max_repeats) if gate.adaptive else [1]


def decision_stats(gate: GateConfig, stats: StatsConfig) -> StatsConfig:
    """The interval settings checkpoint verdicts are decided with: with adaptive judging every look (the
    first one too, and the report's recomputation) uses the spent confidence, so all agree."""
    looks = len(repeat_rounds(gate))
    return stats if looks == 1 else stats.model_copy(update={"confidence": look_confidence(stats.confidence, looks)})
