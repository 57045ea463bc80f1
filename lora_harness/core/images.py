"""Decoding images for judges, with errors that say which file is bad and why.

Judges all want the same thing (RGB uint8), so conversion happens once here, and every way an image file
can be broken (empty, truncated, not an image, a decompression bomb, an odd mode) becomes one ImageError.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_PIXEL_LIMIT = 64_000_000  # 8000 x 8000; FLUX samples are at most ~4 MP


class ImageError(ValueError):
    pass


def allow_pixels(pixel_limit: int) -> None:
    """Make Pillow's own guard (`Image.MAX_IMAGE_PIXELS`, ~89 MP) at least `pixel_limit`.

    Pillow checks the header size inside `Image.open`, before our check, so without this
    `run.image_pixel_limit` could not be raised above Pillow's limit, and a huge header got Pillow's
    message instead of ours. Only ever raised: a lower limit of another caller in the process stays safe
    because every load also applies its own limit.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < pixel_limit:
        Image.MAX_IMAGE_PIXELS = pixel_limit


def oversize_message(path: Path, pixel_limit: int, *, size: tuple[int, int] | None = None, pixels: int | None = None) -> str:
    """One wording for every image over the limit, whoever noticed (our check or Pillow's guard)."""
    what = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else f"{pixels:,} pixels" if pixels else "its size"
    return (
        f"{path}: {what} exceeds the limit of {pixel_limit:,}; raise `run.image_pixel_limit` if the image is genuine"
    )


def bomb_pixels(exc: BaseException) -> int | None:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return int(match[1]) if match else None


def load_rgb(path: Path, *, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> np.ndarray:
    """Decode `path` into an (H, W, 3) uint8 array; alpha is composited on white, 16-bit scaled down."""
    allow_pixels(pixel_limit)
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes); the trainer was probably interrupted while writing it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > pixel_limit:
                    raise ImageError(oversize_message(path, pixel_limit, size=(width, height)))
                img.load()
                return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image (unknown format despite the suffix)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(oversize_message(path, pixel_limit, pixels=bomb_pixels(exc))) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc}); the file is truncated or corrupt") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float64)
        # I;16 is 16-bit by definition (a dark one must stay dark); bare "I" may hold 8-bit values.
        peak = 65535.0 if img.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        grey = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))
