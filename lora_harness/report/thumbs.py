"""JPEG thumbnails of the evaluated images, cached under `<run>/thumbs/<size>/`.

The cache makes rebuilding a report cheap, and it is what `link` mode points to, so a run folder stays a
portable unit (copy or zip it, the images come along). It also lets a merged run show images from another
machine: `merge` copies each input's thumbnails, and a thumbnail whose source image is absent here is used
as it is. Decoding runs in threads (Pillow releases the GIL while decoding).
"""

from __future__ import annotations

import base64
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image

from lora_harness.cases import safe_id
from lora_harness.images import DEFAULT_PIXEL_LIMIT

THUMBS_DIRNAME = "thumbs"
JPEG_QUALITY = 82


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
    return safe_id(case_key) + ".jpg"


def make_thumbnail(source: Path, target: Path, max_px: int, *, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> None:
    """Decode `source` (reduced while decoding where the format allows) and write a JPEG thumbnail."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(source) as img:
            if img.width * img.height > pixel_limit:
                raise ValueError(f"{img.width}x{img.height} exceeds the pixel limit of {pixel_limit:,}")
            img.draft("RGB", (max_px, max_px))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGBA") if "A" in img.mode or "transparency" in img.info else img.convert("RGB")
                if img.mode == "RGBA":
                    background = Image.new("RGB", img.size, (255, 255, 255))
                    background.paste(img, mask=img.getchannel("A"))
                    img = background
            img.thumbnail((max_px, max_px), Image.Resampling.BILINEAR, reducing_gap=2.0)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            img.convert("RGB").save(tmp, "JPEG", quality=JPEG_QUALITY)
            tmp.replace(target)


def _one(key: str, image: str, folder: Path, max_px: int, pixel_limit: int) -> Thumbnail:
    target = folder / thumbnail_name(key)
    source = Path(image) if image else None
    if source is None or not source.is_file():
        if target.is_file():  # copied in by `merge`, or the original was moved away since
            return Thumbnail(key, target)
        return Thumbnail(key, None, "no image file" if source is None else f"image not found: {source}")
    try:
        if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
            make_thumbnail(source, target, max_px, pixel_limit=pixel_limit)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Thumbnail(key, None, f"cannot decode {source}: {exc}")
    return Thumbnail(key, target)


def build_thumbnails(
    items: Iterable[tuple[str, str]],
    run_dir: Path,
    max_px: int,
    *,
    pixel_limit: int = DEFAULT_PIXEL_LIMIT,
    workers: int | None = None,
) -> dict[str, Thumbnail]:
    """Thumbnails for (case key, image path) pairs, made where missing or older than their image."""
    folder = thumbs_dir(run_dir, max_px)
    items = list(items)
    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda item: _one(item[0], item[1], folder, max_px, pixel_limit), items)
        return {thumb.key: thumb for thumb in results}
