"""Fast units of the LoRA checks: the pixel_similarity judge and config validation (no pipeline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lora_harness.core.config import ConfigError, parse_config
from lora_harness.run.harness import Harness
from lora_harness.judges import JudgeContext, create_judge


def portrait() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def test_pixel_similarity_known_answers() -> None:
    judge = create_judge("pixel_similarity")
    face, camera = portrait(), np.stack([__import__("skimage").data.camera()] * 3, axis=-1)
    context = JudgeContext(reference_images=[camera, face], reference_paths=[Path("/t/camera.png"), Path("/t/face.png")])
    brighter = np.clip(face.astype(int) * 0.8 + 30, 0, 255).astype(np.uint8)
    half = face[::2, ::2]
    results = judge.judge_batch([(None, face), (None, brighter), (None, half), (None, 255 - face)], context)
    best = [scores[1] for scores in results]
    assert best[0].value == pytest.approx(1.0) and best[0].raw["best_reference"] == "/t/face.png"
    assert best[1].value > 0.999 and best[2].value > 0.98  # brightness/contrast and scale invariant
    assert best[0].raw["per_reference"]["/t/camera.png"] < 0.5  # unrelated photo
    assert best[3].raw["per_reference"]["/t/face.png"] == pytest.approx(-1.0, abs=1e-4)  # inverted (up to uint8 rounding)
    assert results[0][0].value == pytest.approx((1.0 + best[0].raw["per_reference"]["/t/camera.png"]) / 2)


def test_pixel_similarity_without_references_and_bad_options() -> None:
    judge = create_judge("pixel_similarity", {"size": 16})
    (mean, best), = judge.judge_batch([(None, portrait())], JudgeContext())
    assert best.value is None and "no reference images" in best.error
    with pytest.raises(ValueError, match="size must be an integer from 8 to 512"):
        create_judge("pixel_similarity", {"size": 2})
    with pytest.raises(ValueError, match="unknown option"):
        create_judge("pixel_similarity", {"sizes": 16})


DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo" / "samples" / "personal-lora-demo-r4"


def base(tmp_path: Path, **sections) -> dict:
    return {"sources": [{"path": str(DEMO)}], "judges": [{"name": "pixel_similarity"}], **sections}


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"leakage": {"prompts": ["a man"], "max_identity": 0.5}}, r"leakage.metric names metric\(s\) face_identity_max"),
        ({"strength": {"scales": [0.5, 1.0]}}, r"low/high scale\(s\) \[0.0\] are not in scales"),
        ({"strength": {"scales": [0, 0, 1]}}, "scales must be distinct"),
        ({"leakage": {"prompts": [" "], "max_identity": 0.5}}, "no prompts"),
        ({"leakage": {"prompts": ["a"], "max_identity": 0.5, "maximum": 1}}, "unknown key"),
        ({"memorization": {"training_dir": "nowhere"}}, "memorization.training_dir .*nowhere is not a folder"),
        ({"memorization": {"training_dir": ".", "judges": ["pixel_simlarity"]}}, "unknown judge"),
        ({"memorization": {"training_dir": ".", "max_similarity": {"clip_i_max": 0.9}}}, "memorization.max_similarity names"),
    ],
)
def test_bad_check_sections_are_config_errors(tmp_path: Path, sections: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Harness(parse_config(base(tmp_path, **sections), base_dir=tmp_path), run_id="r")


def test_end_of_run_table_does_not_apply_trigger_thresholds_to_leakage_images() -> None:
    from lora_harness.core.cases import EvalCase, Prompt
    from lora_harness.core.config import Threshold
    from lora_harness.judges import Score
    from lora_harness.run.store import ScoreRow
    from lora_harness.report.view import Rules, build_view

    def row(loraname: str, variant: str | None, value: float) -> ScoreRow:
        case = EvalCase(loraname, 10, Prompt("L00", "a man in a park"), Path("x.png"), seed=1, variant=variant)
        return ScoreRow.of(case, Score("face_identity_max", value), judge="face_identity", judge_version="1", run_id="r", worker="w")

    rows = [row("me", None, 0.2), row("me-leakage", "leakage", 0.2)]
    view = build_view(rows, Rules(thresholds={"face_identity_max": Threshold(image=0.9)}))
    failures = {(ck.loraname, ck.cells["face_identity_max"].failures) for ck in view.checkpoints}
    assert failures == {("me", 1), ("me-leakage", 0)}
    assert {c.loraname: c.status for c in view.cases} == {"me": "fail", "me-leakage": "pass"}  # me is gated (latest)


def test_best_checkpoint_from_rows_ignores_check_rows() -> None:
    from lora_harness.verdicts.best_checkpoint import means_from_rows
    from lora_harness.core.cases import Checkpoint, EvalCase, Prompt
    from lora_harness.judges import Score
    from lora_harness.run.store import ScoreRow

    def row(loraname: str, variant: str | None, metric: str, judge: str) -> ScoreRow:
        case = EvalCase(loraname, 10, Prompt("00", "p"), Path("x.png"), seed=1, variant=variant)
        return ScoreRow.of(case, Score(metric, 0.5), judge=judge, judge_version="1", run_id="r", worker="w")

    means = means_from_rows([
        row("me", None, "spectral_score", "image_stats"), row("me", None, "memorization_pixel_similarity_max", "memorization"),
        row("me-leakage", "leakage", "spectral_score", "image_stats"),
    ])
    assert means == {Checkpoint("me", 10): {"spectral_score": 0.5}}


def test_strength_verdict_default_margin_and_direction_per_metric() -> None:
    """Issue 14: a LoRA that changes nothing (gain 0.0) fails with the default margin; identity must rise,
    artifact scores may move either way, an explicit direction overrides."""
    from lora_harness.checks.settings import DEFAULT_STRENGTH_MARGIN, StrengthConfig
    from lora_harness.checks.strength import strength_direction, strength_verdict

    config = StrengthConfig()
    assert config.margin == DEFAULT_STRENGTH_MARGIN == 0.05 and config.direction == "auto"
    with pytest.raises(ValueError, match="greater than 0"):
        StrengthConfig(margin=0)
    assert strength_direction("face_identity_max") == "rise" and strength_direction("clip_score") == "rise"
    assert strength_direction("spectral_score") == "any" and strength_direction("spectral_score", "fall") == "fall"
    assert strength_direction("face_distance") == "fall"  # declared lower-is-better by the face judge

    def verdict(metric, low, high, direction="auto"):
        return strength_verdict(metric, low, high, low_scale=0, high_scale=1, margin=config.margin, direction=direction)

    passed, line = verdict("face_identity_max", 0.4, 0.4)  # no effect: was a pass with margin 0
    assert not passed and "= 0.0000 < margin 0.05" in line and "barely changes face_identity_max at scale 1" in line
    assert not verdict("face_identity_max", 0.6, 0.3)[0]  # identity falling is not a gain
    assert verdict("face_identity_max", 0.3, 0.6)[0]
    assert verdict("spectral_score", 0.9, 0.7)[0]  # an artifact score may fall
    assert not verdict("spectral_score", 0.9, 0.88)[0]
    assert verdict("spectral_score", 0.9, 0.7, "fall")[0] and not verdict("spectral_score", 0.7, 0.9, "fall")[0]
