"""Shared pieces of the embedding judges (clip_score, clip_i, dino, face_identity), torch-free.

* `prepare_image`: every way an array can arrive (grayscale, RGBA, 16-bit, float, tiny, huge) either
  becomes RGB uint8 of a bounded size, with a note of what was converted, or raises `ImageInputError`
  with a message saying what is wrong; the judges turn that into an error for that case only.
* `cosine_matrix` and `mean_max`: the similarity math, small enough to check by hand.
* `Lazy`: load a model at first use and remember a failure, so a missing model is reported once per
  process with the same message instead of being retried for every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image


T = TypeVar("T")


class ImageInputError(ValueError):
    """An image array a judge cannot use (wrong shape, dtype, too small)."""


class ReferencePhotoError(ValueError):
    """The reference photos cannot be used (none configured, one unusable, no face in any of them)."""


@dataclass(frozen=True)
class PreparedImage:
    """An RGB uint8 array ready for a model, and what was done to get there (for `Score.raw`)."""

    array: np.ndarray
    notes: tuple[str, ...] = ()
    original_size: tuple[int, int] = (0, 0)  # (width, height) before any downscaling


def prepare_image(image: Any, *, min_side: int = 32, max_side: int | None = 1024) -> PreparedImage:
    """Convert `image` to RGB uint8 with its longer side at most `max_side`.

    Accepted: (H, W) grey, (H, W, 1), (H, W, 3) RGB, (H, W, 4) RGBA (composited on white, like
    `lora_harness.core.images.load_rgb`); uint8, 16-bit (scaled by 65535 when any value exceeds 255, as the
    decoder does), bool, and float in [0, 1]. Images smaller than `min_side` on either side are refused:
    models resize them up to their input size and score the interpolation, not the picture.
    Huge images are box-reduced first, so memory stays bounded whatever the input.
    """
    array = np.asarray(image)
    notes: list[str] = []
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageInputError(
            f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}"
        )
    array = _to_uint8(array, notes)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
        notes.append("grayscale converted to RGB")
    elif array.shape[2] == 4:
        rgb = array[:, :, :3].astype(np.float32)
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = np.clip(rgb * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
        notes.append("RGBA composited on white")
    height, width = array.shape[:2]
    if min(height, width) < min_side:
        raise ImageInputError(
            f"image is {width}x{height} px; at least {min_side} px per side is needed (judge option min_side)"
        )
    if max_side is not None and max(height, width) > max_side:
        pil = Image.fromarray(array)
        pil.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        array = np.asarray(pil)
        notes.append(f"downscaled from {width}x{height} to {array.shape[1]}x{array.shape[0]}")
    return PreparedImage(np.ascontiguousarray(array), tuple(notes), (int(width), int(height)))


def _to_uint8(array: np.ndarray, notes: list[str]) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        notes.append("boolean image scaled to 0/255")
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.size and int(array.min()) < 0:
            raise ImageInputError(f"integer image of dtype {array.dtype} has negative values")
        peak = 65535.0 if array.size and int(array.max()) > 255 else 255.0
        if array.size and int(array.max()) > 65535:
            raise ImageInputError(f"integer image of dtype {array.dtype} has values above 65535")
        notes.append(f"{array.dtype} image scaled to 8-bit" if peak > 255 else f"{array.dtype} image cast to 8-bit")
        return np.clip(array.astype(np.float64) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not np.isfinite(array).all():
            raise ImageInputError("float image contains NaN or infinite values")
        if array.size and (float(array.min()) < 0.0 or float(array.max()) > 1.0):
            raise ImageInputError(
                f"float image values must lie in [0, 1], got [{float(array.min()):g}, {float(array.max()):g}]"
            )
        notes.append("float image scaled to 8-bit")
        return np.clip(array.astype(np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise ImageInputError(f"unsupported image dtype {array.dtype}; expected uint8, uint16 or float in [0, 1]")


# --- similarity math ---------------------------------------------------------------------------------------


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero (its cosine to anything is then 0)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-D array of row vectors, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of `a` (n, d) with every row of `b` (m, d): shape (n, m), in [-1, 1]."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"cosine_matrix needs (n, d) and (m, d) arrays, got {a.shape} and {b.shape}")
    return np.clip(l2_normalize(a) @ l2_normalize(b).T, -1.0, 1.0)


def mean_max(similarities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row (one generated image): the mean and the max over columns (the reference photos).

    Mean says how much the image looks like the person overall; max says whether it matches at least one
    reference (a profile view can only match the profile references).
    """
    similarities = np.asarray(similarities, dtype=np.float64)
    if similarities.ndim != 2 or similarities.shape[1] == 0:
        raise ValueError(f"need at least one reference column, got shape {similarities.shape}")
    return similarities.mean(axis=1), similarities.max(axis=1)


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- lazy loading ------------------------------------------------------------------------------------------


class Lazy(Generic[T]):
    """A value built on first `get()`; a failure is remembered and raised again on every later call."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._error: BaseException | None = None
        self._done = False

    def get(self) -> T:
        if self._error is not None:
            raise self._error
        if not self._done:
            try:
                self._value = self._factory()
            except Exception as exc:
                self._error = exc
                raise
            self._done = True
        return self._value  # type: ignore[return-value]
