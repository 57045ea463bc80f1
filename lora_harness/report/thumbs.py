"""JPEG thumbnails of the evaluated images, cached under `<run>/thumbs/<size>/`.

The cache makes rebuilding a report cheap, and it is what `link` mode points to, so a run folder stays a
portable unit (copy or zip it, the images come along). It also lets a merged run show images from another
machine: `merge` copies each input's thumbnails, and a thumbnail whose source image is absent here is used
as it is.
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import os
import queue
import threading
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from lora_harness.core.cases import safe_id
from lora_harness.core.images import DEFAULT_PIXEL_LIMIT, allow_pixels, bomb_pixels, oversize_message

THUMBS_DIRNAME = "thumbs"
JPEG_QUALITY = 82
PROCESS_THRESHOLD = 64  # fewer missing thumbnails than this: starting worker processes costs more than it saves


@dataclass(frozen=True)
class Thumbnail:
    key: str
    path: Path | None  # None: no image (CSV input) or not decodable; `problem` says which
    problem: str | None = None

    def data_uri(self) -> str | None:
        if self.path is None:
            return None
        return "data:image/jpeg;base64," + base64.b64encode(self.path.read_bytes()).decode("ascii")


def thumbs_dir(run_dir: Path, max_px: int) -> Path:
    return Path(run_dir) / THUMBS_DIRNAME / str(max_px)


def thumbnail_name(case_key: str) -> str:
    """Readable and collision-free: safe_id folds odd characters together, the hash tells such keys apart."""
    digest = hashlib.sha1(case_key.encode("utf-8")).hexdigest()[:8]
    return f"{safe_id(case_key)[:100]}-{digest}.jpg"


def make_thumbnail(source: Path, target: Path, max_px: int, *, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> None:
    """Decode `source` (reduced while decoding where the format allows) and write a JPEG thumbnail."""
    allow_pixels(pixel_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(oversize_message(source, pixel_limit, pixels=bomb_pixels(exc))) from None
        with img:
            if img.width * img.height > pixel_limit:
                raise ValueError(oversize_message(source, pixel_limit, size=(img.width, img.height)))
            img.draft("RGB", (max_px, max_px))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGBA") if "A" in img.mode or "transparency" in img.info else img.convert("RGB")
                if img.mode == "RGBA":
                    background = Image.new("RGB", img.size, (255, 255, 255))
                    background.paste(img, mask=img.getchannel("A"))
                    img = background
            _save(img, target, max_px)


def thumbnail_from_pixels(pixels: np.ndarray, target: Path, max_px: int) -> None:
    """A thumbnail from an image already decoded (an RGB uint8 array, as judges get it): no second decode."""
    _save(Image.fromarray(pixels), target, max_px)


def _save(img: Image.Image, target: Path, max_px: int) -> None:
    factor = max(img.size) // max_px
    if factor >= 2:  # box-average by an integer factor first: cheap, and no aliasing
        img = img.reduce(factor)
    img.thumbnail((max_px, max_px), Image.Resampling.BILINEAR)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    img.convert("RGB").save(tmp, "JPEG", quality=JPEG_QUALITY)
    tmp.replace(target)


def is_fresh(target: Path, source: Path) -> bool:
    """The cached thumbnail exists and is not older than its image."""
    try:
        return target.stat().st_mtime >= source.stat().st_mtime
    except OSError:
        return False


def thumbnail_while_judging(
    case_key: str, image: Path, pixels: Callable[[], np.ndarray], run_dir: Path, max_px: int
) -> Path | None:
    """Called by the eval worker right after a case is judged, while its pixels are at hand: the report at
    the end of the run then finds every thumbnail made (spread over the workers) instead of decoding every
    image again, one after another, at the end. Returns the thumbnail, or None when it could not be made
    (the report build tries again and shows why)."""
    target = thumbs_dir(run_dir, max_px) / thumbnail_name(case_key)
    if is_fresh(target, image):
        return target
    try:
        thumbnail_from_pixels(pixels(), target, max_px)
    except (OSError, ValueError):
        return None
    return target


def _make(key: str, source: Path, target: Path, max_px: int, pixel_limit: int) -> Thumbnail:
    try:
        make_thumbnail(source, target, max_px, pixel_limit=pixel_limit)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Thumbnail(key, None, f"cannot decode {source}: {exc}")
    return Thumbnail(key, target)


def _make_batch(batch: list[tuple[str, Path, Path]], max_px: int, pixel_limit: int) -> list[Thumbnail]:
    """Runs in a worker process: a batch amortises the inter-process round trip."""
    return [_make(key, source, target, max_px, pixel_limit) for key, source, target in batch]


def build_thumbnails(
    items: Iterable[tuple[str, str]],
    run_dir: Path,
    max_px: int,
    *,
    pixel_limit: int = DEFAULT_PIXEL_LIMIT,
    processes: int | None = None,
) -> dict[str, Thumbnail]:
    """Thumbnails for (case key, image path) pairs, made where missing or older than their image.

    Many missing thumbnails are made in worker processes (`spawn`, safe inside pytest and its threads):
    decoding in threads of this process would fight the report's own Python work for the GIL.
    """
    folder = thumbs_dir(run_dir, max_px)
    results: dict[str, Thumbnail] = {}
    todo: list[tuple[str, Path, Path]] = []
    for key, image in items:
        target = folder / thumbnail_name(key)
        source = Path(image) if image else None
        if source is None or not source.is_file():
            if target.is_file():  # copied in by `merge`, or the original was moved away since
                results[key] = Thumbnail(key, target)
            else:
                results[key] = Thumbnail(key, None, "no image file" if source is None else f"image not found: {source}")
        elif is_fresh(target, source):
            results[key] = Thumbnail(key, target)
        else:
            todo.append((key, source, target))
    # As many workers as cores: the report's own work (view, plots) runs meanwhile, and once it waits for
    # the thumbnails every core decodes.
    workers = processes if processes is not None else (os.cpu_count() or 1)
    if len(todo) < PROCESS_THRESHOLD or workers < 1:
        made = [_make(key, source, target, max_px, pixel_limit) for key, source, target in todo]
    else:
        size = max(8, len(todo) // (workers * 4))
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            made = [t for batch in pool.map(_make_batch, batches, repeat(max_px), repeat(pixel_limit)) for t in batch]
    results.update((thumb.key, thumb) for thumb in made)
    return results


def start_thumbnails(
    items: Iterable[tuple[str, str]], run_dir: Path, max_px: int, *, pixel_limit: int = DEFAULT_PIXEL_LIMIT
) -> "Future[dict[str, Thumbnail]]":
    """`build_thumbnails` in the background; the caller does other work and takes `.result()` later."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lora-harness-thumbnails")
    future = executor.submit(build_thumbnails, list(items), run_dir, max_px, pixel_limit=pixel_limit)
    executor.shutdown(wait=False)  # the thread ends with its one job
    return future


class ThumbnailWriter:
    """`thumbnail_while_judging` on one background thread: a test hands over the pixels it already has and
    goes on, while the JPEG encoding (PIL releases the GIL) and the file creation (a filesystem's slowest
    step) overlap the next tests. At most `max_pending` images wait, so memory stays bounded; `close()`
    waits for the rest, and the report build comes after it. Failures are ignored as before: the report
    build makes what is missing and says why."""

    def __init__(self, max_pending: int = 64) -> None:
        self._queue: "queue.Queue[tuple[str, Path, np.ndarray, Path, int] | None]" = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None

    def submit(self, case_key: str, image: Path, pixels: np.ndarray, run_dir: Path, max_px: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lora-harness-thumbnails", daemon=True)
            self._thread.start()
        self._queue.put((case_key, image, pixels, run_dir, max_px))

    def close(self) -> None:
        """Wait until every submitted thumbnail is written (or has failed); the writer can be used again."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            case_key, image, pixels, run_dir, max_px = job
            try:
                thumbnail_while_judging(case_key, image, lambda: pixels, run_dir, max_px)
            except Exception:  # noqa: BLE001 - never a test's problem; the report build retries and says why
                pass
