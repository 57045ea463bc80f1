"""Images as JPEG data URLs, the way the study sent them, downscaled to a configurable longest side.

Vision APIs resize large images anyway (and bill by tiles), so sending more pixels than `max_side` costs
upload time and tokens without changing the answer. Hashing for the cache uses the pixels, not the JPEG
bytes, so a cache lookup never pays for encoding.
"""

from __future__ import annotations

import base64
import math
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from PIL import Image


@contextmanager
def one_opencv_thread() -> Iterator[None]:
    """OpenCV without its own worker threads while the judge's encoder pool (one thread per core) runs.

    OpenCV splits Canny and friends across its pool and spin-waits for the parts: on top of an encoder
    pool that already keeps every core busy, that burns ~70% more CPU per edge map (measured: 2.3 ms
    instead of 1.4 ms at 512 px) for no gain. The previous setting is restored afterwards.
    """
    try:
        import cv2
    except ImportError:  # the judges report the missing extra themselves
        yield
        return
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def fit_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (area filter) so that the longer side is at most `max_side`; never upscale."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def jpeg_data_url(image: np.ndarray, *, max_side: int, quality: int) -> str:
    """`data:image/jpeg;base64,...` of an RGB (H, W, 3) or grey (H, W) uint8 image.

    Encoded by OpenCV (libjpeg-turbo, 4:2:0 like Pillow's default, same bytes size) because its calls
    release the GIL from start to end: the judge encodes on several threads while others send requests,
    and Pillow's array import holds the GIL for a full-image copy.
    """
    import cv2  # extra `llm`; the judges check it is installed before they encode anything

    pixels = fit_max_side(np.ascontiguousarray(image), max_side)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode a {pixels.dtype} {pixels.shape} image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def png_bilevel_data_url(mask: np.ndarray) -> str:
    """`data:image/png;base64,...` of a 0/255 uint8 mask (an edge map), stored as a lossless 1-bit PNG.

    Why not JPEG: an edge map is one-pixel lines on black, the worst case for JPEG. At 512 px its JPEG is
    ~7x the bytes of the 1-bit PNG (107 KB vs 15 KB) and rings around every line the model is meant to
    read; the smaller body is also less to serialise, send and parse on every request.
    """
    import cv2  # extra `llm`, like the edge map itself

    flags = [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, data = cv2.imencode(".png", np.ascontiguousarray(mask), flags)  # RLE: runs of black, ~25% faster
    if not ok:
        raise ValueError(f"could not encode a {mask.dtype} {mask.shape} mask as PNG")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


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
