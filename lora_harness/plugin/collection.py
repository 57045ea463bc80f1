"""Collection: which lora fixtures a test asks for and what each is parametrized over (ids stable with and
without -n), tests deselected on a config error, and the checkpoints a test must be judged with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from lora_harness.checks import registry as lora_checks
from lora_harness.core.cases import Checkpoint, EvalCase
from lora_harness.plugin.state import STATE, USER_ERRORS, add_unique, param, state_of
from lora_harness.run.harness import Harness
from lora_harness.run.regression_targets import comparison_targets, gate_targets, group_of, xdist_groups

PARAMETRIZED = (
    "lora_case", "lora_checkpoint", "lora_checkpoint_summary", "lora_baseline_comparison", "lora_pairwise_comparison",
    *lora_checks.FIXTURES,
)
# Fixtures that need a valid config: with a config error, tests asking for them are deselected.
NEEDS_CONFIG = frozenset({*PARAMETRIZED, "lora_harness"})


@dataclass(frozen=True)
class Parametrization:
    name: str
    values: list[Any]
    ids: list[str]
    indirect: bool


def parametrizations(harness: Harness, names: Any) -> list[Parametrization]:
    """What each lora fixture among `names` is parametrized over (shared by collection and the scheduler)."""
    found: list[Parametrization] = []
    if "lora_case" in names:
        found.append(Parametrization("lora_case", harness.cases, [c.test_id for c in harness.cases], False))
    if "lora_checkpoint" in names:
        found.append(Parametrization("lora_checkpoint", harness.checkpoints, [c.test_id for c in harness.checkpoints], False))
    if "lora_checkpoint_summary" in names:
        gated = gate_targets(harness)
        found.append(Parametrization("lora_checkpoint_summary", gated, [t.test_id for t in gated], True))
    if "lora_baseline_comparison" in names:
        comparisons = comparison_targets(harness)  # none configured: one case that skips, saying why
        ids = [t.test_id for t in comparisons] or ["no-baseline"]
        found.append(Parametrization("lora_baseline_comparison", comparisons or [None], ids, True))
    if "lora_pairwise_comparison" in names:
        pairwise = harness.pairwise_comparisons()  # none configured: one case that skips
        ids = [c.test_id for c in pairwise] or ["no-pairwise-judge"]
        found.append(Parametrization("lora_pairwise_comparison", pairwise or [None], ids, True))
    for fixture in lora_checks.FIXTURES:  # the registered LoRA checks (lora_harness.checks.registry)
        if fixture in names:
            values, ids = lora_checks.params(harness, fixture)
            found.append(Parametrization(fixture, values, ids, True))
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if not any(name in names for name in PARAMETRIZED):
        return
    state = state_of(metafunc.config)
    try:
        found = parametrizations(state.harness(), names)
    except USER_ERRORS as exc:
        # Not a collection error per test module (printed once per module and worker, exit 1 or 2): recorded,
        # the test deselected, and the run ends with pytest's usage-error code 4 (pytest_sessionfinish).
        add_unique(state.config_errors, [str(exc)])
        for name in PARAMETRIZED:
            if name in names:
                metafunc.parametrize(name, [None], ids=["config-error"])
        return
    for p in found:
        metafunc.parametrize(p.name, p.values, ids=p.ids, indirect=p.indirect)


def group_of_params(harness: Harness, params: dict[str, Any], groups: dict[Checkpoint, str]) -> str | None:
    target = next((params[name] for name in PARAMETRIZED if params.get(name) is not None), None)
    if isinstance(target, EvalCase):
        target = Checkpoint.of(target)
    return None if target is None else group_of(target, groups, harness.checkpoints)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With a config error, deselect the tests that need the config (the error ends the run with code 4)."""
    state = state_of(config)
    if not state.config_errors:
        return
    kept = [item for item in items if not NEEDS_CONFIG & set(getattr(item, "fixturenames", ()))]
    if len(kept) != len(items):
        deselected = [item for item in items if item not in kept]
        items[:] = kept
        config.hook.pytest_deselected(items=deselected)


def item_group(config: pytest.Config, item: pytest.Item) -> str | None:
    """The checkpoints an item must be judged with (see lora_harness.run.regression_targets), or None."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if not any(params.get(name) is not None for name in PARAMETRIZED):
        return None
    state = state_of(config)
    harness = state.harness()
    cache = config.stash.setdefault(_GROUPS, {})
    if "groups" not in cache:
        cache["groups"] = xdist_groups(harness)
    return group_of_params(harness, params, cache["groups"])


_GROUPS = pytest.StashKey[dict]()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Tell the harness which checkpoints this session tests, in test order (after -k and --shard), so
    judges that take work ahead (llm_rubric) judge the next ones while a test waits for its own."""
    state = session.config.stash.get(STATE, None)
    harness = state.harness_if_built if state is not None else None
    if harness is None:
        return
    order: dict[Checkpoint, None] = {}
    for item in session.items:
        case, checkpoint = param(item, "lora_case"), param(item, "lora_checkpoint")
        if isinstance(case, EvalCase):
            order.setdefault(Checkpoint.of(case))
        elif isinstance(checkpoint, Checkpoint):
            order.setdefault(checkpoint)
    harness.stream_order = list(order)

