"""Images as JPEG data URLs, the way the study sent them, downscaled to a configurable longest side.

Vision APIs resize large images anyway (and bill by tiles), so sending more pixels than `max_side` costs
upload time and tokens without changing the answer. Hashing for the cache uses the pixels, not the JPEG
bytes, so a cache lookup never pays for encoding.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image


def fit_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (area filter) so that the longer side is at most `max_side`; never upscale."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def jpeg_data_url(image: np.ndarray, *, max_side: int, quality: int) -> str:
    """`data:image/jpeg;base64,...` of an RGB (H, W, 3) or grey (H, W) uint8 image."""
    pixels = fit_max_side(np.ascontiguousarray(image), max_side)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pixel_hash(image: np.ndarray) -> str:
    """Content hash of an image's pixels (shape and dtype included). xxh3-128: ~15 GB/s, so a cached rerun
    of hundreds of images spends microseconds here rather than the milliseconds sha256 would."""
    import xxhash  # extra `llm`; the judges check it is installed before they hash anything

    array = np.ascontiguousarray(image)
    digest = xxhash.xxh3_128(f"{array.shape}|{array.dtype}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def estimated_image_tokens(height: int, width: int, *, max_side: int, detail: str) -> int:
    """OpenAI's published vision-token formula for the image as sent (85 base + 170 per 512 px tile).

    Only an estimate for rate limiting before the call; the usage the API returns is what gets recorded.
    """
    if detail == "low":
        return 85
    scale = min(1.0, max_side / max(height, width))
    h, w = height * scale, width * scale
    fit = min(1.0, 2048 / max(h, w))
    h, w = h * fit, w * fit
    shrink = min(1.0, 768 / min(h, w))
    h, w = h * shrink, w * shrink
    return 85 + 170 * math.ceil(h / 512) * math.ceil(w / 512)
