"""dlib face backend: HOG frontal detector, 5-point landmarks, ResNet 128-d descriptor (offline weights).

Detection scale. dlib's HOG detector finds faces down to about 60 px at the scale it runs at (measured on
the astronaut pasted into 1024 and 2048 px canvases: 56-60 px). The old pipeline shrank every image to
640 px and up-sampled once, so in a 1024 px FLUX image faces under ~50 px were "no face". Now the copy the
detector sees is scaled so that a face of `min_face_px` input pixels is `HOG_MIN_FACE_PX` there, with its
longer side at least `detect_min_side` (small images are cheap: a 512 px image keeps the old 2x up-step,
which found 34 px faces there) and at most `detect_max_side` (the cost grows with its area). With the
defaults (40 px, 1024 px, 2560 px) a 512 px image is detected at 1024 px, 1024 at 1536, 2048 at 2560.
Landmarks and descriptors always use the input image at its own resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lora_harness.judges.faces import DetectedFace
from lora_harness.judges.model_loading import ModelError, require

FACE_EXTRA = "pip install 'lora-harness[face]'  (dlib-bin, face_recognition_models)"
MODEL_FILES = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}
HOG_MIN_FACE_PX = 60  # face side at detection scale that dlib's HOG detector finds (56-60 px measured)
DLIB_SAME_PERSON_DISTANCE = 0.6  # dlib's published operating point for its descriptors (99.38% on LFW)


@dataclass(frozen=True)
class DlibSettings:
    """The dlib backend's options (validated by the judge)."""

    min_detector_score: float = 0.0  # dlib's trained operating point: adjust_threshold 0
    min_face_px: int = 40
    detect_min_side: int = 1024
    detect_max_side: int = 2560
    upsample: int = 0  # dlib's own pyramid up-steps on top of the scaling (each: 2x side, ~4x cost)
    num_jitters: int = 0


def detection_scale(height: int, width: int, min_face_px: int, detect_min_side: int, detect_max_side: int) -> float:
    """Factor from input pixels to the detector's copy: `min_face_px` becomes HOG_MIN_FACE_PX there, and the
    copy's longer side stays within [detect_min_side, detect_max_side] (the maximum wins)."""
    side = max(height, width)
    return min(max(HOG_MIN_FACE_PX / min_face_px, detect_min_side / side), detect_max_side / side)


class DlibFaces:
    """dlib's detector, 5-point landmarks and ResNet descriptor; one instance per process and model folder."""

    name = "dlib"

    def __init__(self, model_dir: Path, settings: DlibSettings = DlibSettings()) -> None:
        dlib = require("dlib", judge="face_identity", install=FACE_EXTRA)
        self.dlib = dlib
        self.settings = settings
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = _load_dat(dlib.shape_predictor, model_dir / MODEL_FILES["landmarks"])
        self.recognizer = _load_dat(dlib.face_recognition_model_v1, model_dir / MODEL_FILES["recognition"])

    def with_settings(self, settings: DlibSettings) -> "DlibFaces":
        """The same loaded models under other options (models are cached per folder, options per judge)."""
        clone = object.__new__(DlibFaces)
        clone.__dict__.update(self.__dict__, settings=settings)
        return clone

    def detect(self, rgb: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """Boxes (input pixels) and scores of every detection at or above `min_detector_score`."""
        s = self.settings
        height, width = rgb.shape[:2]
        scale = detection_scale(height, width, s.min_face_px, s.detect_min_side, s.detect_max_side)
        grey = Image.fromarray(rgb).convert("L")  # HOG on one channel: ~20% faster, a third of the resize cost
        if abs(scale - 1.0) > 1e-3:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            grey = grey.resize(size, Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR)
        else:
            scale = 1.0
        copy = np.asarray(grey)
        boxes, scores, _ = self.detector.run(np.ascontiguousarray(copy), s.upsample, s.min_detector_score)
        found = []
        for box, score in zip(boxes, scores):
            left, top = max(0, round(box.left() / scale)), max(0, round(box.top() / scale))
            right, bottom = min(width - 1, round(box.right() / scale)), min(height - 1, round(box.bottom() / scale))
            if right > left and bottom > top and score >= s.min_detector_score:
                found.append(((left, top, right, bottom), float(score)))
        return found

    def faces(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Every face above the confidence floor with landmarks and descriptor, in the detector's order."""
        result = []
        for box, score in self.detect(rgb):
            rect = self.dlib.rectangle(*box)
            shape = self.landmarks(rgb, rect)
            points = tuple((float(shape.part(i).x), float(shape.part(i).y)) for i in range(shape.num_parts))
            descriptor = np.asarray(
                self.recognizer.compute_face_descriptor(rgb, shape, self.settings.num_jitters, 0.25), dtype=np.float64
            )
            result.append(DetectedFace(box, score, points, descriptor))
        return result


def _load_dat(loader: Any, path: Path) -> Any:
    try:
        return loader(str(path))
    except RuntimeError as exc:  # dlib's deserialization error for a wrong or corrupt file
        raise ModelError(f"face_identity: {path} is not a usable dlib model file ({exc}); "
                         f"use the files from the face_recognition_models package") from None
