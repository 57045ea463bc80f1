"""The one home of each case rule: sweep order, latest checkpoint per LoRA, case role."""

from __future__ import annotations

from pathlib import Path

from lora_harness.core.cases import Checkpoint, EvalCase, Prompt, case_order, checkpoint_order, latest_per_lora
from lora_harness.verdicts.thresholds import gated_checkpoints


def _case(lora: str, step: int, prompt: str = "00", seed: int | None = None, **kw) -> EvalCase:
    return EvalCase(lora, step, Prompt(prompt, "p"), Path("x.png"), seed=seed, **kw)


def test_checkpoint_order_is_lora_then_kind_then_numeric_step() -> None:
    found = [Checkpoint("b", 200), Checkpoint("a", 1000), Checkpoint("a", 200), Checkpoint("a", 3, "epoch")]
    assert sorted(found, key=checkpoint_order) == [
        Checkpoint("a", 3, "epoch"), Checkpoint("a", 200), Checkpoint("a", 1000), Checkpoint("b", 200)]


def test_case_order_adds_prompt_and_seed_with_no_seed_first() -> None:
    cases = [_case("a", 200, "01"), _case("a", 200, "00", 7), _case("a", 200, "00"), _case("a", 100, "05")]
    assert [(c.training_step, c.prompt_id, c.seed) for c in sorted(cases, key=case_order)] == [
        (100, "05", None), (200, "00", None), (200, "00", 7), (200, "01", None)]


def test_latest_per_lora_takes_each_loras_highest_step() -> None:
    found = [Checkpoint("a", 200), Checkpoint("a", 1000), Checkpoint("b", 400), Checkpoint("a", 800)]
    assert latest_per_lora(found) == {"a": Checkpoint("a", 1000), "b": Checkpoint("b", 400)}
    assert latest_per_lora([]) == {}
    # the gate "latest" is that rule, minus the baselines
    assert gated_checkpoints(found, "latest", baselines={"b"}) == {Checkpoint("a", 1000)}


def test_role_is_a_typed_field_with_lora_as_default() -> None:
    assert _case("a", 1).role == "lora" and not _case("a", 1).is_baseline and not _case("a", 1).is_check
    assert _case("base", 0, role="baseline").is_baseline
    assert _case("a-leakage", 1, role="leakage").is_check and _case("a-scale0.5", 1, role="strength").is_check
