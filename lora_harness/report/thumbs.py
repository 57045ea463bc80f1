"""JPEG thumbnails of the evaluated images, cached under `<run>/thumbs/<size>/`.

The cache makes rebuilding a report cheap, and it is what `link` mode points to, so a run folder stays a
portable unit (copy or zip it, the images come along). It also lets a merged run show images from another
machine: `merge` copies each input's thumbnails, and a thumbnail whose source image is absent here is used
as it is.

The cache holds two kinds of entries: JPEG files (`<name>.jpg`, made by a report build) and packs
(`<run id>.<worker>.thumbs`, see `thumb_pack`: what the eval processes made while judging, one file per
process instead of one per case). For each name the newest entry is used; a packed one is written out as
its `.jpg` file only where a report links to it (`Thumbnail.file`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import multiprocessing
import os
import queue
import stat
import threading
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from lora_harness.core.cases import safe_id
from lora_harness.core.images import DEFAULT_PIXEL_LIMIT, allow_pixels, bomb_pixels, oversize_message
from lora_harness.report.thumb_pack import PackAppender, PackedThumb, pack_path, read_packs, record

THUMBS_DIRNAME = "thumbs"
JPEG_QUALITY = 82
PROCESS_THRESHOLD = 64  # fewer missing thumbnails than this: starting worker processes costs more than it saves


@dataclass(frozen=True)
class Thumbnail:
    key: str
    path: Path | None  # None: no image (CSV input) or not decodable; `problem` says which
    problem: str | None = None
    packed: PackedThumb | None = None  # the JPEG lies in a pack; `path` is where `file()` writes it out

    def jpeg(self) -> bytes:
        if self.packed is not None:
            return self.packed.read()
        assert self.path is not None
        return self.path.read_bytes()

    def data_uri(self) -> str | None:
        if self.path is None:
            return None
        return "data:image/jpeg;base64," + base64.b64encode(self.jpeg()).decode("ascii")

    def file(self) -> Path | None:
        """The thumbnail as a `.jpg` file (what `link` mode points to), written out of its pack if need be."""
        if self.path is not None and self.packed is not None:
            _write_atomically(self.path, self.packed.read())
        return self.path


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


def _save(img: Image.Image, target: Path, max_px: int) -> None:
    _write_atomically(target, _jpeg(img, max_px))


def _jpeg(img: Image.Image, max_px: int) -> bytes:
    factor = max(img.size) // max_px
    if factor >= 2:  # box-average by an integer factor first: cheap, and no aliasing
        img = img.reduce(factor)
    img.thumbnail((max_px, max_px), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def jpeg_from_pixels(pixels: np.ndarray, max_px: int) -> bytes:
    """A thumbnail's JPEG bytes from an image already decoded (an RGB uint8 array, as judges get it)."""
    return _jpeg(Image.fromarray(pixels), max_px)


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def cached_thumbnails(folder: Path) -> dict[str, tuple[int, PackedThumb | None]]:
    """name -> (made at in ns, where packed or None for a `.jpg` file): the newest entry of each name in a
    thumbnail folder, files and packs together."""
    found: dict[str, tuple[int, PackedThumb | None]] = {
        name: (entry.made_ns, entry) for name, entry in read_packs(folder).items()
    }
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        if entry.name.endswith(".jpg"):
            try:
                made = entry.stat().st_mtime_ns
            except OSError:
                continue
            known = found.get(entry.name)
            if known is None or made >= known[0]:
                found[entry.name] = (made, None)
    return found


def _file_mtime_ns(path: Path) -> int | None:
    """When a regular file was last changed (ns), or None when `path` is not one."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns if stat.S_ISREG(info.st_mode) else None


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
    cached = cached_thumbnails(folder)
    results: dict[str, Thumbnail] = {}
    todo: list[tuple[str, Path, Path]] = []
    for key, image in items:
        name = thumbnail_name(key)
        target = folder / name
        source = Path(image) if image else None
        have = cached.get(name)
        changed = _file_mtime_ns(source) if source is not None else None
        if source is None or changed is None:
            if have is not None:  # copied in by `merge`, or the original was moved away since
                results[key] = Thumbnail(key, target, packed=have[1])
            else:
                results[key] = Thumbnail(key, None, "no image file" if source is None else f"image not found: {source}")
        elif have is not None and have[0] >= changed:  # not older than its image
            results[key] = Thumbnail(key, target, packed=have[1])
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
    """The report thumbnails of one eval process, made from the pixels its tests already have and appended to
    the process's pack (`thumb_pack`) on one background thread.

    A test hands over its case and goes on (`submit` appends to a batch: no lock, no wake-up per case); a
    batch goes to the thread when it holds `batch` images or `batch_bytes` of pixels, and the thread encodes
    its JPEGs (PIL releases the GIL) and appends them with one `write`. At most `max_batches` batches wait,
    so memory stays bounded (the pixels are mostly the harness's cached arrays anyway). `close()` hands over
    the last batch and waits for all; the report build comes after it. A thumbnail already cached and not
    older than its image is not made again. Failures are ignored as before: the report build makes what is
    missing and says why."""

    def __init__(
        self, folder: Path, pack_name: str, max_px: int, *, batch: int = 64, batch_bytes: int = 16 << 20,
        max_batches: int = 2,
    ) -> None:
        self.folder, self.max_px = Path(folder), max_px
        self.pack = pack_path(self.folder, pack_name)
        self._batch_size, self._batch_bytes = batch, batch_bytes
        self._batch: list[tuple[str, Path, np.ndarray]] = []
        self._pending_bytes = 0
        self._queue: "queue.Queue[list[tuple[str, Path, np.ndarray]] | None]" = queue.Queue(max_batches)
        self._thread: threading.Thread | None = None
        self._cached: dict[str, tuple[int, PackedThumb | None]] | None = None  # read on the thread, once

    @classmethod
    def for_run(cls, run_dir: Path, max_px: int, *, run_id: str, worker: str, **limits: int) -> "ThumbnailWriter":
        """The writer of one session's process: its pack is named like its score file."""
        return cls(thumbs_dir(run_dir, max_px), f"{run_id}.{worker}", max_px, **limits)

    def submit(self, case_key: str, image: Path, pixels: np.ndarray) -> None:
        self._batch.append((case_key, image, pixels))
        self._pending_bytes += pixels.nbytes
        if len(self._batch) >= self._batch_size or self._pending_bytes >= self._batch_bytes:
            self._hand_over()

    def close(self) -> None:
        """Wait until every submitted thumbnail is written (or has failed); the writer can be used again."""
        if self._batch:
            self._hand_over()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _hand_over(self) -> None:
        batch, self._batch, self._pending_bytes = self._batch, [], 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lora-harness-thumbnails", daemon=True)
            self._thread.start()
        self._queue.put(batch)

    def _run(self) -> None:
        appender = PackAppender(self.pack)
        try:
            while (batch := self._queue.get()) is not None:
                try:
                    appender.append(self._records(batch))
                except Exception:  # noqa: BLE001 - never a test's problem; the report build retries and says why
                    pass
        finally:
            appender.close()

    def _records(self, batch: list[tuple[str, Path, np.ndarray]]) -> bytes:
        if self._cached is None:
            self._cached = cached_thumbnails(self.folder)
        out = bytearray()
        for case_key, image, pixels in batch:
            name = thumbnail_name(case_key)
            try:
                have = self._cached.get(name)
                if have is not None:  # a rerun in the same run folder
                    changed = _file_mtime_ns(Path(image))
                    if changed is not None and have[0] >= changed:
                        continue
                data = jpeg_from_pixels(pixels, self.max_px)
            except Exception:  # noqa: BLE001 - as above
                continue
            made = time.time_ns()
            out += record(name, data, made)
            self._cached[name] = (made, None)
        return bytes(out)
