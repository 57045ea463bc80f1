"""What the regression tests are parametrized over, and which checkpoints must be judged in one process.

Snapshot and baseline tests are about gated checkpoints. With `gate = "latest"` (or a list of steps, or
"all") those are known at collection; with `gate = "best"` they are chosen from scores, so the parameter is
the LoRA and the checkpoint is resolved when the test runs. Ids are stable across reruns: `<lora>-latest`
and `<lora>-best` do not change when a longer training adds steps, so a stored snapshot keeps its name.

Under xdist a test may only read scores its own worker produces (or another worker already stored);
otherwise two workers would judge the same images twice (double cost for API judges). `xdist_groups` puts
every checkpoint a test needs on one worker: all of a LoRA's checkpoints when its best one must be chosen,
and a candidate checkpoint together with the in-run baseline checkpoint it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lora_harness.core.cases import Checkpoint, checkpoint_order, safe_id

if TYPE_CHECKING:
    from lora_harness.run.harness import Harness


@dataclass(frozen=True)
class GateTarget:
    """A gated checkpoint as a test parameter; `checkpoint` is None while gate 'best' is not yet chosen."""

    loraname: str
    rule: str  # "latest", "best" or "step" (a listed step, or every step with gate = "all")
    checkpoint: Checkpoint | None = None

    @property
    def test_id(self) -> str:
        if self.rule in ("latest", "best"):
            return safe_id(f"{self.loraname}-{self.rule}")
        assert self.checkpoint is not None
        return self.checkpoint.test_id


@dataclass(frozen=True)
class MetricTarget:
    """One baseline comparison: a gated target and one metric."""

    target: GateTarget
    metric: str

    @property
    def test_id(self) -> str:
        return f"{self.target.test_id}-{safe_id(self.metric)}"


def gate_targets(harness: "Harness") -> list[GateTarget]:
    """The gated checkpoints of the run as stable test parameters (no scoring needed)."""
    spec = harness.config.gate.checkpoints
    names = sorted({c.loraname for c in harness.checkpoints})
    if spec == "best":
        return [GateTarget(name, "best") for name in names]
    gated = sorted(harness.gated, key=checkpoint_order)
    rule = "latest" if spec == "latest" else "step"
    return [GateTarget(c.loraname, rule, c) for c in gated]


def resolve(harness: "Harness", target: GateTarget) -> Checkpoint:
    """The checkpoint a target means now: fixed at collection, or the LoRA's best (scores its sweep)."""
    if target.checkpoint is not None:
        return target.checkpoint
    choice = harness.best_choice(target.loraname)
    if choice.best is None:
        raise AssertionError(choice.describe())
    return choice.best.checkpoint


def xdist_groups(harness: "Harness") -> dict[Checkpoint, str]:
    """Group name per checkpoint: connected checkpoints (see the module doc) share one group."""
    parent: dict[Checkpoint, Checkpoint] = {c: c for c in harness.checkpoints}

    def find(c: Checkpoint) -> Checkpoint:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    def union(a: Checkpoint, b: Checkpoint) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb, key=checkpoint_order)] = min(ra, rb, key=checkpoint_order)

    by_lora: dict[str, list[Checkpoint]] = {}
    for c in harness.checkpoints:
        by_lora.setdefault(c.loraname, []).append(c)
    best = harness.config.gate.checkpoints == "best"
    if best:
        for group in by_lora.values():
            for c in group[1:]:
                union(group[0], c)
    plan = harness.baseline
    if plan is not None and plan.config.lora is not None:
        base_name = plan.config.lora
        for name in plan.candidates:
            if best:
                union(by_lora[name][0], by_lora[base_name][0])
                continue
            for candidate in harness.gated_of(name):
                union(candidate, plan.baseline_checkpoint(candidate, harness.gated_of))
    return {c: find(c).key for c in harness.checkpoints}


def comparison_targets(harness: "Harness") -> list[MetricTarget]:
    """One baseline comparison per gated target of a candidate LoRA and per compared metric."""
    plan = harness.baseline
    if plan is None:
        return []
    return [
        MetricTarget(target, metric)
        for target in gate_targets(harness)
        if target.loraname in plan.candidates
        for metric in plan.metrics
    ]


def group_of(param: object, groups: dict[Checkpoint, str], checkpoints: list[Checkpoint]) -> str | None:
    """The xdist group of a test parameter (a checkpoint, a target, a metric target), or None."""
    if isinstance(param, MetricTarget):
        param = param.target
    if isinstance(param, GateTarget):
        # 'best' is not chosen yet, but all of the LoRA's checkpoints share one group then
        param = param.checkpoint or next(c for c in checkpoints if c.loraname == param.loraname)
    if isinstance(param, Checkpoint):
        return groups.get(param, param.key)
    return None
