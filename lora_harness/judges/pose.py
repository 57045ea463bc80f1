"""Head pose (yaw, pitch, roll) of a detected face from the 5 landmarks the face backend already computed.

Why: a LoRA can keep the likeness in frontal portraits and lose it in profile (MirrorMetrics plots identity
against head yaw). Detection and landmarks already exist per face (`faces.DetectedFace`), so the pose costs
one small PnP solve, no model and no second detection.

Method: `cv2.solvePnP` (SQPnP, which needs 3+ points and finds the global minimum) fits a generic 3D face
(millimetres, average adult proportions) to the 5 image landmarks with a pinhole camera whose focal length
is the image's longer side (about 53 degrees of field of view) and whose centre is the image centre. The
landmarks differ per backend:

* dlib: outer and inner corners of both eyes and the base of the nose (subnasale). The nose base sits 20-35
  mm in front of the eye corners; its sideways shift against the eyes is what carries the yaw.
* ArcFace (SCRFD): both eye centres, the nose tip and both mouth corners.

Angles in degrees, as the viewer sees the face: ``yaw`` > 0 when the face turns towards the image's right
(the nose moves right of the eyes' midpoint), ``pitch`` > 0 when it tilts up, ``roll`` > 0 when it leans
clockwise in the image. A generic model on 5 points is an estimate: synthetic faces of the model's own
shape come back exactly (tests), real faces within roughly 5-10 degrees (individual proportions differ);
pitch is less certain than yaw, because the eye-to-nose height varies between people. Use |yaw| bands
(frontal below 20, profile from 30-45) rather than single degrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Generic face, millimetres, OpenCV camera axes for a face looking at the camera: x right (image right),
# y down, z away from the camera (so points nearer the camera have smaller z).
DLIB_MODEL = np.array(
    [
        [45.0, -48.0, 35.0],  # 0: outer corner of the eye on the image's right
        [16.0, -48.0, 22.0],  # 1: inner corner of that eye
        [-45.0, -48.0, 35.0],  # 2: outer corner of the eye on the image's left
        [-16.0, -48.0, 22.0],  # 3: inner corner of that eye
        [0.0, 0.0, 0.0],  # 4: base of the nose (subnasale)
    ]
)
ARCFACE_MODEL = np.array(
    [
        [-31.0, -34.0, 27.0],  # 0: centre of the eye on the image's left
        [31.0, -34.0, 27.0],  # 1: centre of the eye on the image's right
        [0.0, 0.0, 0.0],  # 2: nose tip
        [-25.0, 30.0, 25.0],  # 3: mouth corner on the image's left
        [25.0, 30.0, 25.0],  # 4: mouth corner on the image's right
    ]
)
MODELS = {"dlib": DLIB_MODEL, "arcface": ARCFACE_MODEL}


@dataclass(frozen=True)
class HeadPose:
    yaw: float
    pitch: float
    roll: float

    def as_raw(self) -> dict[str, float]:
        return {"yaw": round(self.yaw, 1), "pitch": round(self.pitch, 1), "roll": round(self.roll, 1)}


def camera_matrix(width: int, height: int) -> np.ndarray:
    focal = float(max(width, height))
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def rotation_to_angles(rotation: np.ndarray) -> HeadPose:
    """R = Ry(-yaw) Rx(-pitch) Rz(roll) decomposed (the inverse of `rotation`), in the viewer's convention.

    In these axes a face turning to the image's right is a negative turn about +y, and a positive turn
    about +x moves the eyes (behind the nose) up relative to the nose: the face tilts down.
    """
    r = np.asarray(rotation, dtype=np.float64)
    pitch = np.degrees(np.arcsin(np.clip(-r[1, 2], -1.0, 1.0)))
    yaw = np.degrees(np.arctan2(r[0, 2], r[2, 2]))
    roll = np.degrees(np.arctan2(r[1, 0], r[1, 1]))
    return HeadPose(float(-yaw), float(-pitch), float(roll))


def head_pose(landmarks: Sequence[Sequence[float]], backend: str, width: int, height: int) -> HeadPose | None:
    """The pose of a face from its 5 landmarks (in the image's pixels); None when they cannot be used (or
    OpenCV is not installed: the identity metrics must not depend on the pose)."""
    try:
        import cv2
    except ImportError:
        return None
    model = MODELS.get(backend)
    points = np.asarray(landmarks, dtype=np.float64)
    if model is None or points.shape != (len(model), 2) or not np.isfinite(points).all():
        return None
    try:
        ok, rvec, _ = cv2.solvePnP(model, points, camera_matrix(width, height), None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:  # degenerate landmarks (all on one point or line)
        return None
    if not ok:
        return None
    rotation, _ = cv2.Rodrigues(rvec)
    return rotation_to_angles(rotation)


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """The rotation `rotation_to_angles` inverts (viewer's convention): for synthetic faces in tests."""
    y, p, r = np.radians([-yaw, -pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), np.sin(-r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def project(model: np.ndarray, rot: np.ndarray, distance: float, width: int, height: int) -> np.ndarray:
    """Pixel positions of a rotated model placed `distance` mm in front of the camera (tests, synthetic faces)."""
    camera = camera_matrix(width, height)
    points = model @ rot.T + np.array([0.0, 0.0, distance])
    uv = points @ camera.T
    return uv[:, :2] / uv[:, 2:3]
