"""`Harness` driven directly, without pytest: recording, reuse of stored scores, unavailable metrics, gated sets.

The judges here are registered test doubles that count their calls, so each test can tell "judged now" from
"read from the store", and their values are fixed so verdicts are known in advance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lora_harness.core.cases import Checkpoint
from lora_harness.core.config import ConfigError, parse_config
from lora_harness.run.harness import Harness
from lora_harness.judges.base import Score, register
from lora_harness.judges.model_loading import UNAVAILABLE_KEY, ModelUnavailable
from lora_harness.run.store import read_rows

CALLS: dict[str, int] = {}
VALUE_BY_STEP = {100: 0.2, 200: 0.9, 300: 0.6}  # step 200 is the best checkpoint of every LoRA


@register("counting_unit_judge")
class CountingJudge:
    """Scores by training step (so checkpoint means are known) and counts every image it sees."""

    name, version, metrics = "counting_unit_judge", "1", ["quality"]

    def judge(self, case, image, context):
        CALLS[self.name] = CALLS.get(self.name, 0) + 1
        return [Score("quality", VALUE_BY_STEP[case.training_step], {"step": case.training_step})]


@register("absent_model_unit_judge")
class AbsentModelJudge:
    """A judge whose model is not installed here: its metric must be missing with the reason, not an error."""

    name, version, metrics = "absent_model_unit_judge", "1", ["faceness"]

    def judge(self, case, image, context):
        raise ModelUnavailable("faceness needs the 'face' extra: pip install 'lora-harness[face]'")


@register("crashing_unit_judge")
class CrashingJudge:
    name, version, metrics = "crashing_unit_judge", "1", ["crash_a", "crash_b"]

    def judge_batch(self, items, context):
        raise ValueError("boom")


def _folder(tmp_path: Path, steps: tuple[int, ...] = (100, 200, 300), loras: tuple[str, ...] = ("lora",), prompts: int = 2) -> Path:
    folder = tmp_path / "samples"
    folder.mkdir(exist_ok=True)
    (folder / "sample_prompts.txt").write_text("".join(f"<phigep> portrait {i}\n" for i in range(prompts)))
    rng = np.random.default_rng(0)
    for lora in loras:
        for step in steps:
            for p in range(prompts):
                pixels = (rng.random((24, 24, 3)) * 60 + 90).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{lora}_{step:06d}_{p:02d}_20250101120000.png")
    return folder


def _harness(tmp_path: Path, judges: list[str], *, gate: Any = "latest", thresholds: dict | None = None,
             run_id: str = "r1", worker: str = "main", **folder: Any) -> Harness:
    config = parse_config(
        {"run": {"report_dir": str(tmp_path / "reports")}, "sources": [{"path": str(_folder(tmp_path, **folder))}],
         "judges": [{"name": name} for name in judges], "gate": {"checkpoints": gate},
         "thresholds": thresholds or {}},
        base_dir=tmp_path,
    )
    return Harness(config, run_id=run_id, worker=worker)


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def test_scoring_one_case_judges_its_whole_checkpoint_once_and_records_every_score(tmp_path: Path) -> None:
    harness = _harness(tmp_path, ["counting_unit_judge", "image_stats"])
    first, second = harness.cases_of(Checkpoint("lora", 200))
    assert harness.known_scores(first) == {}  # nothing judged at construction
    scores = harness.score(first)
    assert scores["quality"].value == 0.9 and scores["spectral_score"].value is not None
    assert CALLS["counting_unit_judge"] == 2  # the checkpoint's two images in one go
    harness.score(second)
    assert CALLS["counting_unit_judge"] == 2  # the second case was judged with the first
    rows = list(read_rows(harness.config.run_dir))
    assert sorted((r.case_key, r.metric) for r in rows) == sorted(
        (c.key, m) for c in (first, second) for m in ("quality", "spectral_score", "magnitude_score"))
    assert {r.judge for r in rows} == {"counting_unit_judge", "image_stats"} and {r.worker for r in rows} == {"main"}


def test_another_process_reuses_stored_scores_instead_of_judging_again(tmp_path: Path) -> None:
    one = _harness(tmp_path, ["counting_unit_judge"], worker="gw0")
    case = one.cases[0]
    one.score(case)
    judged = CALLS["counting_unit_judge"]
    other = Harness(one.config, run_id="r1", worker="gw1")
    assert other.score(case)["quality"].value == one.score(case)["quality"].value
    assert CALLS["counting_unit_judge"] == judged
    rerun = Harness(one.config, run_id="r2", worker="main")  # another run id: judged afresh
    rerun.score(case)
    assert CALLS["counting_unit_judge"] == judged + 2


def test_a_crashing_judge_costs_only_its_own_metrics(tmp_path: Path) -> None:
    harness = _harness(tmp_path, ["crashing_unit_judge", "counting_unit_judge"])
    scores = harness.score(harness.cases[0])
    assert scores["crash_a"].error == scores["crash_b"].error == "crashing_unit_judge: failed: ValueError: boom"
    assert scores["quality"].value == 0.2 and scores["quality"].error is None
    stored = {r.metric: r for r in read_rows(harness.config.run_dir) if r.case_key == harness.cases[0].key}
    assert stored["crash_a"].error and stored["quality"].value == 0.2


def test_a_recorded_score_joins_the_judged_ones_without_stopping_the_judges(tmp_path: Path) -> None:
    harness = _harness(tmp_path, ["counting_unit_judge"])
    case = harness.cases[0]
    harness.record(case, Score("mine", 0.5), source="test:mine")
    assert set(harness.score(case)) == {"quality", "mine"} and CALLS["counting_unit_judge"] == 2
    harness.record(case, Score("later", 0.75), source="test:later")
    assert harness.known_scores(case)["later"].value == 0.75


def test_an_unavailable_model_gives_missing_scores_with_the_reason_and_skips_not_fails(tmp_path: Path) -> None:
    harness = _harness(tmp_path, ["counting_unit_judge", "absent_model_unit_judge"],
                       thresholds={"faceness": {"image": 0.5, "checkpoint": 0.5}, "quality": {"image": 0.1}})
    case = harness.cases_of(Checkpoint("lora", 300))[0]
    scores = harness.score(case)
    assert scores["faceness"].value is None and scores["faceness"].error is None
    assert "pip install" in scores["faceness"].raw[UNAVAILABLE_KEY]
    assert harness.unavailable([case]) == ["faceness needs the 'face' extra: pip install 'lora-harness[face]'"]
    assert harness.unavailable_reason([case], "faceness") is not None and harness.unavailable_reason([case], "quality") is None
    verdict, _ = harness.image_verdict(case)
    assert verdict.gated and verdict.decision == "incomplete" and verdict.outcome(harness.policy) == "fail"
    allowed = Harness(harness.config, run_id="r1", allow_incomplete=True)
    assert allowed.image_verdict(case)[0].outcome(allowed.policy) == "skipped"
    ckpt_verdict, _, values = harness.checkpoint_verdict(Checkpoint("lora", 300))
    assert ckpt_verdict.decision == "incomplete" and values["quality"] == [0.6, 0.6]


@pytest.mark.parametrize(
    ("gate", "gated"),
    [("latest", {("a", 300), ("b", 300)}), ("all", {(n, s) for n in "ab" for s in (100, 200, 300)}),
     ([100, 300], {("a", 100), ("a", 300), ("b", 100), ("b", 300)}), ("best", {("a", 200), ("b", 200)})],
)
def test_gated_sets_follow_the_gate(tmp_path: Path, gate: Any, gated: set[tuple[str, int]]) -> None:
    harness = _harness(tmp_path, ["counting_unit_judge"], gate=gate, loras=("a", "b"), prompts=1)
    assert {(c.loraname, c.training_step) for c in harness.gated} == gated
    assert [c.training_step for c in harness.gated_of("a")] == sorted(s for n, s in gated if n == "a")
    for ckpt in harness.checkpoints:
        assert harness.is_gated(ckpt) == ((ckpt.loraname, ckpt.training_step) in gated)
    if gate == "best":
        assert CALLS["counting_unit_judge"] == 6  # "best" is chosen from scores: every checkpoint judged
    else:
        assert "counting_unit_judge" not in CALLS  # a fixed gate needs no scores


def test_a_gate_step_no_source_has_is_a_config_error_naming_the_steps_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"step\(s\) \[150\] that no source has; steps found: \[100, 200, 300\]"):
        _harness(tmp_path, ["counting_unit_judge"], gate=[100, 150])
