"""face_identity's ArcFace backend (insightface-style ONNX on onnxruntime), offline: tiny ONNX graphs with
buffalo_l's inputs and outputs (tests/tiny_onnx.py) exercise loading, letterboxing, anchor decoding, NMS,
5-point alignment to 112x112, normalisation and the cosine/distance path; no real weights are needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_images import astronaut_crop, lfw_face
from lora_harness.judges import JudgeContext, create_judge
from lora_harness.judges.face_arcface import (
    ARCFACE_TEMPLATE,
    align_face,
    nms,
    onnx_providers,
    similarity_transform,
)
from lora_harness.judges.model_loading import ModelError, ModelUnavailable, clear_cache

pytest.importorskip("onnx", reason="the tiny test models are built with onnx.helper (pip install onnx)")
pytest.importorskip("onnxruntime", reason="the arcface backend needs the `arcface` extra (onnxruntime)")

from tiny_onnx import FakeFace, expected_embedding, save_tiny_detector, save_tiny_recognizer  # noqa: E402

OFFSET = np.array([200.0, 150.0])  # where the 112 px face is pasted in the 640x480 scene


def face_112(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("RGB").resize((112, 112), Image.Resampling.LANCZOS))


ASTRONAUT = face_112(astronaut_crop()[60:220, 70:230])
STRANGER = face_112(lfw_face(74, 100, margin=0))


def scene(*faces: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A 640x480 grey scene with 112 px faces pasted at the given top-left corners."""
    canvas = np.full((480, 640, 3), 90, np.uint8)
    for face, at in faces:
        x, y = int(at[0]), int(at[1])
        canvas[y : y + 112, x : x + 112] = face
    return canvas


def fake(at: np.ndarray, score: float, scale: float = 1.0, **kw) -> FakeFace:
    """The face whose 112 px crop sits at `at` (input px), as the detector reports it at `scale`."""
    x, y = at * scale
    return FakeFace((x, y, x + 112 * scale, y + 112 * scale), (ARCFACE_TEMPLATE + at) * scale, score, **kw)


def models(folder: Path, faces: list[FakeFace], **kw) -> Path:
    save_tiny_recognizer(folder / "w600k_r50.onnx")
    save_tiny_detector(folder / "det_10g.onnx", faces, **kw)
    clear_cache()  # the backend is cached per folder: each test's folder has its own faces
    return folder


def arcface(folder: Path, **options):
    return create_judge("face_identity", {"backend": "arcface", "model_dir": str(folder), **options})


def test_similarity_transform_and_alignment_recover_the_crop_exactly() -> None:
    matrix = similarity_transform(ARCFACE_TEMPLATE * 2 + 5, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(matrix, [[0.5, 0, -2.5], [0, 0.5, -2.5]], atol=1e-9)
    with pytest.raises(ValueError, match="landmarks coincide"):
        similarity_transform(np.full((5, 2), 40.0), ARCFACE_TEMPLATE)
    # Translation: the face pasted at an integer offset comes back pixel for pixel.
    image = scene((ASTRONAUT, OFFSET))
    assert np.array_equal(align_face(image, ARCFACE_TEMPLATE + OFFSET), ASTRONAUT)
    # Rotation by 90 degrees: the landmarks rotate with the image, the crop is upright again.
    rotated = np.ascontiguousarray(np.rot90(image))  # counter-clockwise: (x, y) -> (y, W - 1 - x)
    points = ARCFACE_TEMPLATE + OFFSET
    rotated_points = np.stack([points[:, 1], image.shape[1] - 1 - points[:, 0]], axis=1)
    assert np.abs(align_face(rotated, rotated_points).astype(int) - ASTRONAUT).max() <= 1
    # Scale: a face twice as large (nearest-neighbour 2x) is sampled back down to 112 px.
    big = np.repeat(np.repeat(ASTRONAUT, 2, axis=0), 2, axis=1)
    canvas = np.zeros((400, 400, 3), np.uint8)
    canvas[50:274, 60:284] = big
    assert np.abs(align_face(canvas, ARCFACE_TEMPLATE * 2 + [60, 50]).astype(int) - ASTRONAUT).max() <= 1


def test_nms_keeps_the_most_confident_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [200, 200, 260, 260]], float)
    assert nms(boxes, np.array([0.7, 0.9, 0.8]), 0.4) == [1, 2]


def test_same_face_matches_and_the_embedding_is_the_aligned_normalised_crop(tmp_path: Path) -> None:
    folder = models(tmp_path / "buffalo", [fake(OFFSET, 0.92)])
    judge = arcface(folder)
    context = JudgeContext(reference_images=[scene((ASTRONAUT, OFFSET))], reference_paths=[Path("ref.png")])
    same, other = judge.judge_batch([(None, scene((ASTRONAUT, OFFSET))), (None, scene((STRANGER, OFFSET)))], context)  # type: ignore[misc]
    s, o = {x.metric: x for x in same}, {x.metric: x for x in other}
    assert s["face_detected"].value == 1.0 and s["face_detected"].raw["backend"] == "arcface"
    assert s["face_identity_mean"].value == pytest.approx(1.0, abs=1e-6)
    assert s["face_distance"].value == pytest.approx(0.0, abs=1e-3) and s["face_match"].value == 1.0
    assert s["face_detected"].raw["box"] == [200, 150, 312, 262]
    np.testing.assert_allclose(s["face_detected"].raw["landmarks"], np.round(ARCFACE_TEMPLATE + OFFSET, 1), atol=0.06)
    assert s["face_detected"].raw["confidence"] == pytest.approx(0.92, abs=1e-4)
    # Another face at the same place: a different embedding, on the unit-vector distance scale.
    cosine = o["face_identity_mean"].value
    assert cosine < 0.99 and o["face_distance"].value == pytest.approx(np.sqrt(2 - 2 * cosine), abs=1e-6)
    # The descriptor is exactly the tiny recognizer applied to (crop - 127.5) / 127.5, made unit length.
    backend = judge._faces.get()
    descriptor = backend.faces(scene((ASTRONAUT, OFFSET)))[0].descriptor
    np.testing.assert_allclose(descriptor, expected_embedding(ASTRONAUT), atol=1e-5)
    np.testing.assert_allclose(
        backend.faces(scene((STRANGER, OFFSET)))[0].descriptor @ expected_embedding(ASTRONAUT), cosine, atol=1e-5
    )


def test_letterbox_scale_and_nms_map_detections_back_to_input_pixels(tmp_path: Path) -> None:
    """A 1280x960 image is shrunk to 640x480 inside the 640 px detector input: the detector's coordinates are
    half the input's. Two overlapping anchors on one face become one detection; a weak box is dropped."""
    big = np.repeat(np.repeat(ASTRONAUT, 2, axis=0), 2, axis=1)
    image = np.full((960, 1280, 3), 90, np.uint8)
    image[300:524, 400:624] = big
    at = np.array([400.0, 300.0])
    x, y = at * 0.5
    two_anchors = [
        FakeFace((x, y, x + 112, y + 112), (ARCFACE_TEMPLATE * 2 + at) * 0.5, 0.9, anchor=0),
        FakeFace((x + 2, y + 2, x + 114, y + 114), (ARCFACE_TEMPLATE * 2 + at) * 0.5, 0.8, anchor=1),
        FakeFace((20, 20, 60, 60), ARCFACE_TEMPLATE * 40 / 112 + 20, 0.3, stride=8),  # below the 0.5 floor
    ]
    judge = arcface(models(tmp_path / "m", two_anchors))
    faces, _ = judge.detect(judge._faces.get(), image)
    assert len(faces) == 1
    face = faces[0]
    assert np.abs(np.subtract(face.box, [400, 300, 624, 524])).max() <= 1 and face.confidence == pytest.approx(0.9)
    np.testing.assert_allclose(face.landmarks, ARCFACE_TEMPLATE * 2 + at, atol=0.05)
    np.testing.assert_allclose(face.descriptor, expected_embedding(ASTRONAUT), atol=1e-3)
    lenient = arcface(tmp_path / "m", min_detector_score=0.2)
    assert len(lenient.detect(lenient._faces.get(), image)[0]) == 2  # the weak box now counts


def test_face_policies_with_two_faces(tmp_path: Path) -> None:
    """The tiny detector reports the same two spots in every image: the subject at OFFSET (score 0.6) and a
    more confident face at `other` (0.95). The reference photo holds the astronaut at both spots."""
    other = np.array([420.0, 100.0])
    folder = models(tmp_path / "m", [fake(OFFSET, 0.6), fake(other, 0.95)])
    image = scene((ASTRONAUT, OFFSET), (STRANGER, other))
    context = JudgeContext(reference_images=[scene((ASTRONAUT, OFFSET), (ASTRONAUT, other))], reference_paths=[Path("ref.png")])
    results = {}
    for policy in ("primary", "best_match"):
        scores = {s.metric: s for s in arcface(folder, face=policy).judge(None, image, context)}  # type: ignore[arg-type]
        raw = scores["face_detected"].raw
        assert raw["faces_found"] == 2 and raw["face_policy"] == policy
        assert [round(f["confidence"], 2) for f in raw["faces"]] == [0.95, 0.6]  # NMS order: most confident first
        results[policy] = (raw["box"], scores["face_match"].value, scores["face_distance"].value)
    assert results["primary"][:2] == ([420, 100, 532, 212], 0.0)  # the confident stranger
    assert results["best_match"][:2] == ([200, 150, 312, 262], 1.0)  # the subject, found among both
    assert results["best_match"][2] < 1e-3 < results["primary"][2]


def test_dynamic_input_detector_uses_det_size(tmp_path: Path) -> None:
    folder = models(tmp_path / "m", [fake(OFFSET, 0.9)], dynamic=True)
    judge = arcface(folder, det_size=640)
    faces, _ = judge.detect(judge._faces.get(), scene((ASTRONAUT, OFFSET)))
    assert len(faces) == 1 and list(faces[0].box) == [200, 150, 312, 262]
    with pytest.raises(ValueError, match="'det_size' = 650 is invalid: expected a multiple of 32"):
        arcface(folder, det_size=650)


def test_missing_or_incomplete_model_folder_is_unavailable_with_how_to_get_it(tmp_path: Path) -> None:
    context = JudgeContext(reference_images=[scene((ASTRONAUT, OFFSET))])
    absent = tmp_path / "buffalo_l"
    with pytest.raises(ModelUnavailable, match=rf"model folder {absent} does not exist; download insightface's buffalo_l"):
        arcface(absent).judge(None, scene((ASTRONAUT, OFFSET)), context)  # type: ignore[arg-type]
    absent.mkdir()
    with pytest.raises(ModelUnavailable, match="has no .onnx files"):
        arcface(absent).judge(None, scene((ASTRONAUT, OFFSET)), context)  # type: ignore[arg-type]
    save_tiny_recognizer(absent / "w600k_r50.onnx")
    clear_cache()
    with pytest.raises(ModelUnavailable, match=r"no ONNX detector \(SCRFD, 9 outputs, e.g. det_10g.onnx\) in .*buffalo_l"):
        arcface(absent).judge(None, scene((ASTRONAUT, OFFSET)), context)  # type: ignore[arg-type]
    (absent / "det_10g.onnx").write_bytes(b"not an onnx model")
    clear_cache()
    with pytest.raises(ModelError, match="det_10g.onnx is not a usable ONNX model"):
        arcface(absent).judge(None, scene((ASTRONAUT, OFFSET)), context)  # type: ignore[arg-type]


def test_default_folder_is_insightfaces_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    judge = create_judge("face_identity", {"backend": "arcface"})
    with pytest.raises(ModelUnavailable, match=r"\.insightface/models/buffalo_l does not exist"):
        judge.judge(None, scene((ASTRONAUT, OFFSET)), JudgeContext(reference_images=[ASTRONAUT]))  # type: ignore[arg-type]
    assert judge.match_distance == pytest.approx(np.sqrt(2 - 2 * 0.3), abs=1e-3) and judge.min_detector_score == 0.5


def test_device_choice() -> None:
    assert onnx_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert onnx_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert onnx_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ModelUnavailable, match="install onnxruntime-gpu"):
        onnx_providers("cuda", ["CPUExecutionProvider"])


@pytest.mark.slow
def test_missing_arcface_folder_leaves_the_gated_tests_incomplete_with_the_folder_and_how_to_get_it(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    from test_embedding_e2e import run, write_suite

    folder = tmp_path / "buffalo_l"
    judges = f'[[judges]]\nname = "image_stats"\n\n[[judges]]\nname = "face_identity"\noptions = {{ backend = "arcface", model_dir = "{folder}" }}\n'
    write_suite(pytester.path, judges, "[thresholds.face_match]\nimage = 1\n")
    result = run(pytester, "-k", "step000800", "-rs")
    result.assert_outcomes(failed=4)  # gated and not judged: incomplete, never a pass
    result.stdout.fnmatch_lines([f"E * face_match: not judged (face_identity (backend arcface): model folder {folder} does not exist; download insightface's buffalo_l*"])
    accepted = run(pytester, "-k", "step000800", "-rs", "--allow-incomplete")
    accepted.assert_outcomes(skipped=4)
    accepted.stdout.fnmatch_lines([f"SKIPPED*face_identity (backend arcface): model folder {folder} does not exist; download insightface's buffalo_l*"])
