"""Real public-domain faces that ship with scikit-image, and composites of them with known answers.

* `astronaut()`: Eileen Collins (NASA photo, public domain); her face is ~91 px in the 512 px photo.
* `lfw_faces()`: the 100 face crops of `skimage.data.lfw_subset()` (Labeled Faces in the Wild: public
  figures, none of them the astronaut), 25x25 grey, upscaled so a face is ~100 px, with a grey margin.
* `canvas_with_face()`: the astronaut's face pasted at a given size into a large face-free background
  (scikit-image's coffee cup), for small-face detection in FLUX-sized images.

No photographs of private people: only images that scikit-image distributes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from skimage import data

ASTRONAUT_FACE_PX = 91  # dlib's box side for her face in the 512 px photo
FACE_CROP = (30, 330, 80, 380)  # rows, cols: a 300 px head-and-shoulders crop around that face


def astronaut() -> np.ndarray:
    return data.astronaut()


def astronaut_crop() -> np.ndarray:
    top, bottom, left, right = FACE_CROP
    return np.ascontiguousarray(data.astronaut()[top:bottom, left:right])


@lru_cache(maxsize=1)
def _lfw() -> np.ndarray:
    return data.lfw_subset()[:100]  # the first 100 are faces, the rest non-faces


def lfw_face(index: int, face_px: int = 100, margin: int = 50) -> np.ndarray:
    """LFW face `index` (0..99) as RGB: the 25 px crop upscaled to `face_px`, on a grey margin."""
    grey = Image.fromarray((_lfw()[index] * 255).round().astype(np.uint8))
    face = grey.resize((face_px, face_px), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (face_px + 2 * margin,) * 2, 128)
    canvas.paste(face, (margin, margin))
    return np.asarray(canvas.convert("RGB"))


def lfw_faces() -> list[np.ndarray]:
    return [lfw_face(i) for i in range(100)]


def background(side: int) -> Image.Image:
    """A face-free photo (scikit-image's coffee cup) stretched to a square canvas."""
    return Image.fromarray(data.coffee()).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)


def scaled_astronaut_crop(face_px: int) -> Image.Image:
    side = max(8, round(astronaut_crop().shape[0] * face_px / ASTRONAUT_FACE_PX))
    return Image.fromarray(astronaut_crop()).resize((side, side), Image.Resampling.LANCZOS)


def canvas_with_face(side: int, face_px: int, at: tuple[int, int] | None = None) -> np.ndarray:
    """The astronaut's face at about `face_px` px pasted into a `side` px face-free canvas."""
    canvas = background(side)
    canvas.paste(scaled_astronaut_crop(face_px), at if at is not None else (side // 3, side // 4))
    return np.asarray(canvas)


def two_faces(subject_px: int, bystander: int, bystander_px: int, side: int = 1024) -> np.ndarray:
    """The astronaut (left) and LFW face `bystander` (right) in one scene."""
    canvas = background(side)
    canvas.paste(scaled_astronaut_crop(subject_px), (side // 10, side // 4))
    other = Image.fromarray(lfw_face(bystander, bystander_px, margin=bystander_px // 3))
    canvas.paste(other, (side // 2, side // 5))
    return np.asarray(canvas)


def legacy_largest_face(backend, rgb: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The face_identity pipeline before issue 13, verbatim, on a loaded `DlibFaces`: detection on an RGB copy
    at most 640 px with one dlib up-step and adjust threshold 0, the largest box, one descriptor.
    Kept for side-by-side comparisons (tests, benchmarks/embedding_judges.py)."""
    height, width = rgb.shape[:2]
    scale = min(1.0, 640 / max(height, width))
    small = rgb
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    boxes, _, _ = backend.detector.run(np.ascontiguousarray(small), 1, 0.0)
    if len(boxes) == 0:
        return None
    box = boxes[max(range(len(boxes)), key=lambda i: boxes[i].area())]
    left, top = max(0, round(box.left() / scale)), max(0, round(box.top() / scale))
    right, bottom = min(width - 1, round(box.right() / scale)), min(height - 1, round(box.bottom() / scale))
    shape = backend.landmarks(rgb, backend.dlib.rectangle(left, top, right, bottom))
    descriptor = np.asarray(backend.recognizer.compute_face_descriptor(rgb, shape, 0, 0.25))
    return (left, top, right, bottom), descriptor
