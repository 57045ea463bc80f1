"""A metric's direction (higher / lower / none) is declared by its judge, and the baseline comparison and the
best-checkpoint choice follow it: a rise of `face_distance` is a loss, `face_yaw_abs` is never compared."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import pytest

from lora_harness.core.cases import Checkpoint
from lora_harness.core.config import BaselineConfig, BestConfig, ConfigError, parse_config
from lora_harness.judges.base import create_judge, judge_directions, metric_direction
from lora_harness.judges.face_identity import METRICS, POSE_METRICS
from lora_harness.run.harness import Harness
from lora_harness.verdicts.baseline import BaselinePlan, Observation, compare_observations, compare_paired
from lora_harness.verdicts.best_checkpoint import choose_best, validate_best_section

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"
R4 = DEMO / "samples" / "personal-lora-demo-r4"

LOWER = {"face_distance", "face_distance_frontal", "face_distance_profile"}


def test_the_face_judge_declares_its_directions() -> None:
    judge = create_judge("face_identity", {"pose_bands": True})
    directions = judge_directions(judge)
    assert set(directions) == set(METRICS) | set(POSE_METRICS)
    assert {m for m, d in directions.items() if d == "lower"} == LOWER
    assert {m for m, d in directions.items() if d == "none"} == {"face_yaw_abs"}
    assert directions["face_identity_mean"] == directions["face_match"] == directions["face_detected"] == "higher"
    # the same answer without an instance (a report read back from stored rows), and "higher" by default
    assert metric_direction("face_distance") == "lower" and metric_direction("face_yaw_abs") == "none"
    assert metric_direction("spectral_score") == "higher" and metric_direction("no_such_metric") == "higher"
    assert metric_direction("face_distance", {"face_distance": "higher"}) == "higher"  # the run's declaration wins
    assert metric_direction("face_distance", {"face_match": "higher"}) == "lower"  # else the registered judge's


def test_a_judge_declaring_an_unknown_direction_is_refused() -> None:
    class Odd:
        name = "odd"
        metrics = ["m"]
        directions = {"m": "down"}

    with pytest.raises(ValueError, match="judge 'odd' declares direction\\(s\\) \\{'m': 'down'\\}"):
        judge_directions(Odd())


def observations(lora: str, values: list[float]) -> list[Observation]:
    return [Observation(lora, 800, "step", f"{i:02d}", 42, "face_distance", v) for i, v in enumerate(values)]


BASE = [0.40, 0.42, 0.38, 0.41, 0.39, 0.40]


def test_a_clearly_higher_face_distance_fails_the_baseline_comparison() -> None:
    worse = observations("cand", [v + 0.15 for v in BASE])
    result = compare_observations(worse, observations("base", BASE), metric="face_distance", margin=0.05, direction="lower")
    assert result.decision == "fail"
    message = result.describe()
    assert message.startswith("face_distance (lower is better): candidate vs baseline baseline: improvement (baseline - candidate) -0.1500")
    assert "FAILS" in message and "the candidate's values rose beyond the margin, and lower is better" in message
    assert "worst cases (largest rises; lower is better): p00-s42: 0.5500 vs 0.4000 (+0.1500)" in message
    assert "means: candidate 0.5500, baseline 0.4000" in message


def test_a_clearly_lower_face_distance_passes_the_baseline_comparison() -> None:
    better = {i: [v - 0.15] for i, v in enumerate(BASE)}
    base = {i: [v] for i, v in enumerate(BASE)}
    result = compare_paired(better, base, metric="face_distance", margin=0.05, direction="lower")
    assert result.decision == "pass"
    assert result.margin == 0.05 and result.gain.mean == pytest.approx(0.15)
    assert "no paired case rose (lower is better)" in result.describe()
    # the default margin keeps the metric's own scale (values in [0, 1]: the score margin)
    assert compare_paired(better, base, metric="face_distance", margin=None, direction="lower").margin == 0.05
    with pytest.raises(ValueError, match="no better or worse"):
        compare_paired(better, base, metric="face_yaw_abs", margin=0.05, direction="none")  # type: ignore[arg-type]


CKPTS = [Checkpoint(name, 800) for name in ("base", "cand")]
PRODUCED = [*METRICS, *POSE_METRICS]


def test_the_plan_leaves_out_undirected_metrics_and_refuses_them_by_name() -> None:
    plan = BaselinePlan(BaselineConfig(lora="base"), CKPTS, PRODUCED)
    assert "face_yaw_abs" not in plan.metrics and "face_distance" in plan.metrics
    assert plan.direction("face_distance") == "lower"
    with pytest.raises(ConfigError, match="baseline.metrics names face_yaw_abs: its judge declares no better or worse"):
        BaselinePlan(BaselineConfig(lora="base", metrics=["face_distance", "face_yaw_abs"]), CKPTS, PRODUCED)
    with pytest.raises(ConfigError, match="baseline.margins names face_yaw_abs"):
        BaselinePlan(BaselineConfig(lora="base", margins={"face_yaw_abs": 1.0}), CKPTS, PRODUCED)


def test_a_harness_with_the_face_judge_knows_its_directions(tmp_path: Path) -> None:
    for name in ("base", "cand"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "sample_prompts.txt").write_bytes((R4 / "sample_prompts.txt").read_bytes())
        source = sorted(R4.glob("personal-lora-demo-r4_000800_*.png"))[0]
        (folder / f"{name}_000800_00_20250101120000.png").write_bytes(source.read_bytes())
    text = f"""[run]
name = "direction"
report_dir = "reports"

[[sources]]
path = "base"

[[sources]]
path = "cand"

[person]
references = ["{DEMO / 'reference'}"]

[[judges]]
name = "face_identity"
options = {{ pose_bands = true }}

[baseline]
lora = "base"
"""
    harness = Harness(parse_config(tomllib.loads(text), base_dir=tmp_path), run_id="t")
    assert harness.directions["face_distance"] == "lower"
    assert harness.directions["face_yaw_abs"] == "none"
    assert harness.directions["face_match"] == "higher"
    assert harness.baseline is not None
    assert "face_yaw_abs" not in harness.baseline.metrics
    assert harness.baseline.direction("face_distance_profile") == "lower"


def test_best_checkpoint_without_weights_prefers_the_lower_face_distance() -> None:
    means = {
        Checkpoint("l", 400): {"face_match": 0.8, "face_distance": 0.35, "face_yaw_abs": 5.0},
        Checkpoint("l", 800): {"face_match": 0.8, "face_distance": 0.55, "face_yaw_abs": 30.0},  # later, but worse
    }
    choice = choose_best(means)["l"]
    assert choice.weights == {"face_distance": -1.0, "face_match": 1.0}  # face_yaw_abs: no weight
    assert choice.best.checkpoint == Checkpoint("l", 400)
    assert choice.best.objective == pytest.approx(0.8 - 0.35)
    # the run's judges' directions, when given, decide
    flipped = choose_best(means, directions={"face_distance": "higher", "face_yaw_abs": "none", "face_match": "higher"})["l"]
    assert flipped.best.checkpoint == Checkpoint("l", 800)


def test_best_section_warns_on_a_rewarded_worse_value_and_refuses_a_minimum_on_a_lower_metric() -> None:
    with pytest.warns(UserWarning, match="best.weights.face_distance = 1 rewards a worse value"):
        validate_best_section(BestConfig(weights={"face_distance": 1.0}), PRODUCED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_best_section(BestConfig(weights={"face_distance": -1.0, "face_match": 1.0}), PRODUCED)
    with pytest.raises(ConfigError, match="best.minimums names face_distance, which is better when lower.*"
                                          "\\[thresholds.face_distance\\] checkpoint_max"):
        validate_best_section(BestConfig(minimums={"face_distance": 0.5}), PRODUCED)


def test_pixel_similarity_has_no_better_or_worse() -> None:
    """Layout similarity to the references is memorization's concern, not quality: never a default comparison."""
    judge = create_judge("pixel_similarity", {})
    assert judge_directions(judge) == {"pixel_similarity_mean": "none", "pixel_similarity_max": "none"}
    assert metric_direction("pixel_similarity_max") == "none"  # from the registered class, as the report reads it
