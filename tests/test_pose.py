"""Head pose from 5 landmarks: synthetic faces of known yaw/pitch/roll come back exactly (both backends'
landmark layouts), real public-domain faces are near frontal and a mirrored copy flips the yaw's sign;
face_identity keeps the pose in raw and, with pose_bands, scores identity per pose band."""

from __future__ import annotations

import numpy as np
import pytest

from face_images import astronaut, lfw_face
from lora_harness.judges import JudgeContext
from lora_harness.judges.pose import MODELS, head_pose, project, rotation


@pytest.mark.parametrize("backend", ["dlib", "arcface"])
@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (30, 0, 0), (-30, 0, 0), (0, 15, 0), (0, -15, 0), (20, 10, 5), (-55, -5, -8)])
def test_synthetic_face_pose_is_recovered(backend: str, yaw: float, pitch: float, roll: float) -> None:
    landmarks = project(MODELS[backend], rotation(yaw, pitch, roll), 600.0, 512, 512)
    pose = head_pose(landmarks, backend, 512, 512)
    assert pose is not None
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx((yaw, pitch, roll), abs=1e-6)


def test_yaw_sign_follows_the_nose() -> None:
    right = project(MODELS["arcface"], rotation(yaw=30), 600.0, 512, 512)
    assert right[2, 0] > right[:2, 0].mean()  # yaw > 0: the nose tip is right of the eyes' midpoint


def test_unusable_landmarks_give_no_pose() -> None:
    assert head_pose([(1.0, 2.0)] * 3, "dlib", 100, 100) is None
    assert head_pose([(np.nan, 1.0)] * 5, "dlib", 100, 100) is None
    assert head_pose([(1.0, 2.0)] * 5, "unknown", 100, 100) is None


@pytest.fixture(scope="module")
def judge():
    pytest.importorskip("dlib", reason="real-face poses need the `face` extra")
    from lora_harness.judges.face_identity import FaceIdentityJudge

    return FaceIdentityJudge(pose_bands=True, frontal_max_yaw=8.0, profile_min_yaw=10.0)


def test_real_faces_are_near_frontal_and_a_mirror_flips_the_yaw(judge) -> None:
    backend = judge.backend_models()
    poses = []
    for image in (astronaut(), np.ascontiguousarray(astronaut()[:, ::-1])):
        faces, _, (w, h) = judge.detect_sized(backend, image)
        poses.append(head_pose(faces[0].landmarks, "dlib", w, h))
    original, mirrored = poses
    assert abs(original.yaw) < 15 and abs(original.pitch) < 20  # a portrait facing the camera
    assert mirrored.yaw == pytest.approx(-original.yaw, abs=1.0)
    assert mirrored.roll == pytest.approx(-original.roll, abs=1.0)
    assert mirrored.pitch == pytest.approx(original.pitch, abs=1.0)


def test_face_identity_stores_pose_and_scores_bands(judge) -> None:
    context = JudgeContext(reference_images=[astronaut()])
    frontal, turned = lfw_face(10, face_px=140), lfw_face(74, face_px=140)  # |yaw| ~1 and ~11.5 (measured)
    results = judge.judge_batch([(None, astronaut()), (None, frontal), (None, turned)], context)
    by = [{s.metric: s for s in scores} for scores in results]
    for scores in by:
        raw = scores["face_detected"].raw
        assert {"yaw", "pitch", "roll", "pose_method"} <= set(raw) and all("yaw" in f for f in raw["faces"])
        assert scores["face_yaw_abs"].value == pytest.approx(abs(raw["yaw"]), abs=0.06)
    assert by[0]["face_match_frontal"].value == 1.0 and by[0]["face_match_profile"].value is None
    assert by[1]["face_match_frontal"].value == 0.0  # another person, frontal: counted in the frontal band
    assert by[1]["face_distance_profile"].value is None and "outside the profile band" in by[1]["face_distance_profile"].raw["missing"]
    assert by[2]["face_match_profile"].value == 0.0 and by[2]["face_match_frontal"].value is None
    assert by[2]["face_detected"].raw["yaw"] < -10  # turned to the image's left


def test_pose_band_options_are_checked() -> None:
    from lora_harness.judges.face_identity import FaceIdentityJudge

    with pytest.raises(ValueError, match="cannot overlap"):
        FaceIdentityJudge(frontal_max_yaw=40, profile_min_yaw=30)
    with pytest.raises(ValueError, match="pose_bands"):
        FaceIdentityJudge(pose_bands="yes")
    assert "face_match_profile" not in FaceIdentityJudge().metrics


def test_degenerate_landmarks_and_missing_opencv_give_no_pose(monkeypatch) -> None:
    import sys

    assert head_pose([(5.0, 5.0)] * 5, "dlib", 100, 100) is None  # all on one point
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    landmarks = project(MODELS["dlib"], rotation(yaw=10), 600.0, 512, 512)
    assert head_pose(landmarks, "dlib", 512, 512) is None
