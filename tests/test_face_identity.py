"""face_identity with the real dlib models that ship in `face_recognition_models`: real signal on public-domain
faces (scikit-image's astronaut and LFW subset, composites of them), face choice, small faces, the
calibrated distance/match scale, no-face handling, reference problems, bad input, missing or wrong models."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from face_images import (
    ASTRONAUT_FACE_PX,
    astronaut,
    astronaut_crop,
    canvas_with_face,
    legacy_largest_face,
    lfw_face,
    two_faces,
)
from lora_harness.judges import JudgeContext, Score, create_judge
from lora_harness.judges.embedding import ReferencePhotoError
from lora_harness.judges.face_dlib import detection_scale
from lora_harness.judges.face_identity import METRICS, MODEL_FILES, FaceIdentityJudge, default_model_dir
from lora_harness.judges.model_loading import ModelError, ModelUnavailable

pytest.importorskip("dlib", reason="face_identity needs the `face` extra (dlib-bin, face_recognition_models)")



def stranger() -> np.ndarray:
    """A different person: LFW face 74 (grey, the detector is sure of it: score ~3). scikit-image's
    cameraman is not used: dlib's detector finds his face only at some scales (scores 0.01-0.08)."""
    return lfw_face(74)[:, :, 0]


def by_metric(scores: list[Score]) -> dict[str, Score]:
    return {s.metric: s for s in scores}


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def overlap(a: list[int], b: list[int]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


@pytest.fixture(scope="module")
def judge() -> FaceIdentityJudge:
    return create_judge("face_identity")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def context() -> JudgeContext:
    return JudgeContext(reference_images=[astronaut()], reference_paths=[Path("astronaut.png")])


@pytest.mark.slow
def test_same_person_scores_higher_than_a_different_person(judge: FaceIdentityJudge, context: JudgeContext) -> None:
    flipped = np.ascontiguousarray(astronaut()[:, ::-1])
    results = judge.judge_batch([(None, astronaut_crop()), (None, flipped), (None, stranger())], context)  # type: ignore[misc]
    crop, flip, cam = map(by_metric, results)
    assert [r["face_detected"].value for r in (crop, flip, cam)] == [1.0, 1.0, 1.0]
    assert crop["face_identity_mean"].value > 0.99 and flip["face_identity_mean"].value > 0.95
    assert cam["face_identity_mean"].value < 0.9
    # The calibrated scale: dlib's distance, and a match at its published operating point 0.6.
    assert crop["face_distance"].value < 0.3 and flip["face_distance"].value < 0.3
    assert cam["face_distance"].value > 0.6
    assert (crop["face_match"].value, flip["face_match"].value, cam["face_match"].value) == (1.0, 1.0, 0.0)
    assert crop["face_distance"].value == pytest.approx(crop["face_distance"].raw["distances"]["astronaut.png"])
    assert flip["face_match"].raw["same_person_votes"] == 1 and cam["face_match"].raw["same_person_votes"] == 0
    assert cam["face_identity_mean"].raw["input"] == "grayscale converted to RGB"
    assert crop["face_identity_max"].value == crop["face_identity_mean"].value  # one reference: mean = max


def test_no_face_is_detected_zero_and_the_rest_missing_not_zero(judge: FaceIdentityJudge, context: JudgeContext) -> None:
    scores = judge.judge(None, data.chelsea(), context)  # type: ignore[arg-type]
    assert [s.metric for s in scores] == list(METRICS)
    detected, *rest = scores
    assert (detected.metric, detected.value, detected.error) == ("face_detected", 0.0, None)
    assert detected.raw["faces_found"] == 0
    for score in rest:
        assert score.value is None and score.error is None
        assert score.raw["missing"] == "no face detected"


def test_mean_and_max_over_several_reference_faces(judge: FaceIdentityJudge) -> None:
    flipped = np.ascontiguousarray(astronaut()[:, ::-1])
    context = JudgeContext(
        reference_images=[astronaut(), stranger(), data.chelsea()],
        reference_paths=[Path("astronaut.png"), Path("stranger.png"), Path("cat.png")],
    )
    s = by_metric(judge.judge(None, flipped, context))  # type: ignore[arg-type]
    per_ref, distances = s["face_identity_mean"].raw["per_reference"], s["face_distance"].raw["distances"]
    assert list(per_ref) == ["astronaut.png", "stranger.png"]  # the cat has no face and is left out
    assert s["face_identity_mean"].raw["references_without_face"] == {"cat.png": "no face detected"}
    assert s["face_identity_mean"].value == pytest.approx((per_ref["astronaut.png"] + per_ref["stranger.png"]) / 2)
    assert s["face_identity_max"].value == pytest.approx(per_ref["astronaut.png"])
    assert per_ref["astronaut.png"] > per_ref["stranger.png"]
    # face_distance is the mean distance; one of the two references is the same person.
    assert s["face_distance"].value == pytest.approx(np.mean(list(distances.values())))
    assert distances["astronaut.png"] < 0.6 < distances["stranger.png"]
    assert s["face_match"].raw["same_person_votes"] == 1


def test_primary_face_beats_a_bigger_false_box(judge: FaceIdentityJudge, context: JudgeContext) -> None:
    """At 576 px the HOG detector also returns a weak box in the spacesuit, as large as the face: the old
    'largest box' rule took it; the most confident face is the real one."""
    scene = np.asarray(Image.fromarray(astronaut()).resize((576, 576), Image.Resampling.LANCZOS))
    s = by_metric(judge.judge(None, scene, context))  # type: ignore[arg-type]
    raw = s["face_detected"].raw
    assert raw["faces_found"] == 2
    face, false_box = sorted(raw["faces"], key=lambda f: -f["confidence"])
    assert face["confidence"] > 1.0 and 0.0 <= false_box["confidence"] < 0.2
    area = lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])  # noqa: E731
    assert area(false_box) > area(face)  # the largest box is the false one
    assert false_box["box"][1] > face["box"][3]  # ... below the face, in the suit
    legacy_box, _ = legacy_largest_face(judge._faces.get(), scene)  # the old rule took it
    assert overlap(list(legacy_box), false_box["box"]) > 0.6
    expected = [round(v * 576 / 512) for v in (175, 76, 266, 167)]  # the face's box in the 512 px photo
    assert overlap(raw["box"], expected) > 0.6 and raw["box"] == face["box"]
    assert s["face_match"].value == 1.0 and s["face_distance"].value < 0.2
    # A confidence floor above the false box's score drops it altogether.
    strict = create_judge("face_identity", {"min_detector_score": 0.5})
    assert strict.judge(None, scene, context)[0].raw["faces_found"] == 1  # type: ignore[arg-type]


@pytest.mark.slow
def test_face_policy_with_two_people(context: JudgeContext) -> None:
    """The subject among bystanders: `primary` takes the clearest face, `best_match` the most similar one."""
    primary = create_judge("face_identity")
    best = create_judge("face_identity", {"face": "best_match"})
    unsure_bystander = two_faces(subject_px=80, bystander=43, bystander_px=160)  # bigger, detector unsure (0.27)
    sure_bystander = two_faces(subject_px=80, bystander=74, bystander_px=160)  # bigger, detector sure (3.1)
    p1 = by_metric(primary.judge(None, unsure_bystander, context))  # type: ignore[arg-type]
    faces = p1["face_detected"].raw["faces"]
    assert len(faces) == 2 and faces[1]["face_px"] > faces[0]["face_px"]
    assert p1["face_match"].value == 1.0 and p1["face_detected"].raw["face_px"] < 100  # the subject, not the bigger face
    p2 = by_metric(primary.judge(None, sure_bystander, context))  # type: ignore[arg-type]
    b2 = by_metric(best.judge(None, sure_bystander, context))  # type: ignore[arg-type]
    assert p2["face_match"].value == 0.0 and p2["face_distance"].value > 0.6  # the confident stranger
    assert b2["face_match"].value == 1.0 and b2["face_distance"].value < 0.2  # the subject, found among both
    assert b2["face_detected"].raw["face_policy"] == "best_match"
    assert [f["distance"] for f in b2["face_detected"].raw["faces"]] == [f["distance"] for f in p2["face_detected"].raw["faces"]]


@pytest.mark.slow
@pytest.mark.parametrize("side, face_px", [(1024, 40), (2048, 60), (512, 34)])
def test_small_faces_in_large_images_are_found(judge: FaceIdentityJudge, context: JudgeContext, side: int, face_px: int) -> None:
    canvas = canvas_with_face(side, face_px)
    s = by_metric(judge.judge(None, canvas, context))  # type: ignore[arg-type]
    assert s["face_detected"].value == 1.0, f"{face_px} px face in a {side} px image not found"
    assert abs(s["face_detected"].raw["face_px"] - face_px) < 0.35 * face_px
    assert s["face_match"].value == 1.0
    if side == 1024:  # the old pipeline (640 px copy, one up-step) missed it
        assert legacy_largest_face(judge._faces.get(), canvas) is None


def test_detection_scale() -> None:
    assert detection_scale(1024, 1024, 40, 1024, 2560) == pytest.approx(1.5)  # a 40 px face is 60 px to HOG
    assert detection_scale(2048, 1536, 40, 1024, 2560) == pytest.approx(1.25)  # capped at 2560 px
    assert detection_scale(512, 384, 40, 1024, 2560) == pytest.approx(2.0)  # at least 1024 px
    assert detection_scale(1024, 1024, 60, 64, 640) == pytest.approx(0.625)  # the old 640 px copy


@pytest.mark.slow
def test_augmentations_of_the_astronaut_all_match(judge: FaceIdentityJudge, context: JudgeContext) -> None:
    photo = astronaut()
    augmented = {
        "crop": astronaut_crop(),
        "flip": np.ascontiguousarray(photo[:, ::-1]),
        "jpeg q20": jpeg(photo, 20),
        "resize 256": np.asarray(Image.fromarray(photo).resize((256, 256), Image.Resampling.LANCZOS)),
        "resize 1024": np.asarray(Image.fromarray(photo).resize((1024, 1024), Image.Resampling.LANCZOS)),
        "grey": np.asarray(Image.fromarray(photo).convert("L")),
        "darker": (photo * 0.6).astype(np.uint8),
    }
    results = judge.judge_batch([(None, image) for image in augmented.values()], context)  # type: ignore[misc]
    for name, scores in zip(augmented, map(by_metric, results)):
        assert scores["face_match"].value == 1.0, f"{name}: distance {scores['face_distance'].value}"
        assert scores["face_distance"].value < 0.45, name


@pytest.mark.slow
def test_lfw_strangers_never_match_the_astronaut(judge: FaceIdentityJudge, context: JudgeContext) -> None:
    """92 of the 100 LFW faces are detected; none is within dlib's 0.6, while their cosines overlap the
    range a cosine threshold would need (up to ~0.9), which is why the gate uses the distance."""
    results = [by_metric(r) for r in judge.judge_batch([(None, lfw_face(i)) for i in range(100)], context)]  # type: ignore[misc]
    found = [r for r in results if r["face_detected"].value == 1.0]
    assert len(found) >= 90
    distances = [r["face_distance"].value for r in found]
    assert sum(r["face_match"].value for r in found) == 0
    assert min(distances) > 0.6
    cosines = [r["face_identity_max"].value for r in found]
    assert max(cosines) > 0.88  # same-person cosines are 0.98-1.0: a 0.9 cosine gate is a thin margin
    own = by_metric(judge.judge(None, astronaut_crop(), context))  # type: ignore[arg-type]
    assert own["face_distance"].value < min(distances) - 0.4


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
    face = astronaut_crop()
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


def test_box_and_landmarks_are_in_input_pixels_whatever_the_detection_scale(context: JudgeContext) -> None:
    small = create_judge("face_identity", {"detect_min_side": 64, "detect_max_side": 400})
    full = create_judge("face_identity", {"detect_max_side": 1024})
    raw_small = small.judge(None, astronaut(), context)[0].raw  # type: ignore[arg-type]
    raw_full = full.judge(None, astronaut(), context)[0].raw  # type: ignore[arg-type]
    assert np.abs(np.subtract(raw_small["box"], raw_full["box"])).max() < 25  # same face, same place
    assert abs(raw_full["face_px"] - ASTRONAUT_FACE_PX) < 15
    left, top, right, bottom = raw_full["box"]
    assert len(raw_full["landmarks"]) == 5
    assert all(left - 5 <= x <= right + 5 and top - 5 <= y <= bottom + 5 for x, y in raw_full["landmarks"])


def test_model_files_missing_or_wrong(tmp_path: Path, context: JudgeContext) -> None:
    missing = create_judge("face_identity", {"model_dir": str(tmp_path)})
    with pytest.raises(ModelUnavailable, match=r"shape_predictor_5_face_landmarks.dat, dlib_face_recognition.*not found"):
        missing.judge(None, astronaut(), context)  # type: ignore[arg-type]
    for name in MODEL_FILES.values():
        (tmp_path / name).write_bytes(b"not a dlib model")
    with pytest.raises(ModelError, match="is not a usable dlib model file"):
        create_judge("face_identity", {"model_dir": str(tmp_path)}).judge(None, astronaut(), context)  # type: ignore[arg-type]
    assert (default_model_dir() / MODEL_FILES["recognition"]).is_file()


def test_match_distance_option_moves_the_decision(context: JudgeContext) -> None:
    strict = create_judge("face_identity", {"match_distance": 0.05})
    s = by_metric(strict.judge(None, np.ascontiguousarray(astronaut()[:, ::-1]), context))  # type: ignore[arg-type]
    assert s["face_distance"].value > 0.05 and s["face_match"].value == 0.0
    assert s["face_match"].raw["match_distance"] == 0.05


@pytest.mark.parametrize(
    "options, message",
    [
        ({"backend": "insightface"}, "option 'backend' = 'insightface' is invalid: expected one of dlib, arcface"),
        ({"backend": "arcface", "device": "tpu"}, "option 'device' = 'tpu' is invalid: expected one of cpu, cuda, auto"),
        ({"upsample": 5}, r"option 'upsample' = 5 is invalid: expected an integer in \[0, 2\]"),
        ({"face": "largest"}, "option 'face' = 'largest' is invalid: expected one of primary, best_match"),
        ({"min_detector_score": "high"}, "option 'min_detector_score' = 'high' is invalid: expected a number"),
        ({"match_distance": True}, "option 'match_distance' = True is invalid: expected a number"),
        ({"min_face_px": 2}, r"option 'min_face_px' = 2 is invalid: expected an integer in \[8, 1024\]"),
        ({"landmarks": 68}, "unknown option"),
        ({"device": "cuda"}, r"option\(s\) device apply to backend 'arcface' only, and backend is 'dlib'"),
        ({"backend": "arcface", "min_face_px": 30}, r"option\(s\) min_face_px apply to backend 'dlib' only"),
    ],
)
def test_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_judge("face_identity", options)
