"""What a face backend returns and how one face is chosen from several: shared by the dlib and ArcFace backends.

Every detected face (box, detector confidence, 5 landmarks, identity descriptor) is kept in one
`DetectedFace`, so later judges (pose, reference audit) read the same data instead of detecting again.
Face choice is a policy, not an accident of box size: the largest box used to win, and a weak false
detection in a spacesuit or a bystander's bigger face then replaced the subject.

* ``primary``: the most confident face, ties broken by size. The subject of a portrait or scene is the
  clearest frontal face; false boxes are weak (dlib scores 0.03-0.17 on the astronaut's suit, faces 1.1-1.5).
* ``best_match``: the face closest to the reference faces (smallest mean distance). What leakage needs: a
  leaked likeness can be any face in the scene, not only the most prominent one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from lora_harness.judges.embedding import cosine_matrix

FACE_POLICIES = ("primary", "best_match")


@dataclass(frozen=True)
class DetectedFace:
    """One face in an image, in the input image's pixels; `descriptor` is the backend's identity vector."""

    box: tuple[int, int, int, int]  # left, top, right, bottom
    confidence: float  # the detector's score (dlib: SVM margin, 0 = operating point; SCRFD: probability)
    landmarks: tuple[tuple[float, float], ...]  # 5 points: dlib's or ArcFace's order, as the backend gives them
    descriptor: np.ndarray

    @property
    def size(self) -> int:
        """The shorter side of the box: what "a 40 px face" means."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def describe(self) -> dict[str, Any]:
        """JSON-friendly facts for `Score.raw` (the descriptor stays out: it is large and means nothing to read)."""
        return {
            "box": [int(v) for v in self.box],
            "confidence": round(float(self.confidence), 4),
            "face_px": int(self.size),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
        }


class FaceBackend(Protocol):
    """Detects faces and describes each one; descriptors of one backend are comparable with each other."""

    name: str

    def faces(self, rgb: np.ndarray) -> list[DetectedFace]: ...


@dataclass(frozen=True)
class Comparison:
    """One face against the reference faces: cosine and Euclidean distance per reference."""

    cosines: np.ndarray  # (references,)
    distances: np.ndarray  # (references,)

    @property
    def mean_distance(self) -> float:
        return float(self.distances.mean())


def compare(face: DetectedFace, references: np.ndarray) -> Comparison:
    """Cosine (the literature's scale) and Euclidean distance (dlib's calibrated scale) to each reference."""
    descriptor = np.asarray(face.descriptor, dtype=np.float64)[None, :]
    cosines = cosine_matrix(descriptor, references)[0]
    distances = np.linalg.norm(np.asarray(references, dtype=np.float64) - descriptor, axis=1)
    return Comparison(cosines, distances)


def primary_index(faces: Sequence[DetectedFace]) -> int:
    """The most confident face; equal confidence: the larger one."""
    if not faces:
        raise ValueError("no faces to choose from")
    return max(range(len(faces)), key=lambda i: (faces[i].confidence, faces[i].size))


def choose_face(faces: Sequence[DetectedFace], comparisons: Sequence[Comparison], policy: str) -> int:
    """Index of the face the identity metrics are about, under `policy` (see the module docstring)."""
    if policy == "primary":
        return primary_index(faces)
    if policy == "best_match":
        return min(range(len(faces)), key=lambda i: (comparisons[i].mean_distance, -faces[i].confidence))
    raise ValueError(f"unknown face policy {policy!r}; expected one of {', '.join(FACE_POLICIES)}")
