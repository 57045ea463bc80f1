"""The training image a memorization score points at, as a thumbnail next to the generated image.

A memorization score (`memorization_<judge>_max`) says "this image is 0.97 similar to a training photo"; a
reader judges a near-copy by looking at both. The score's `raw.training_image` holds that photo's path. The
thumbnail follows `[report] images` like the case images (embedded, or linked under `thumbs/`); a training
image that is gone or cannot be decoded gives a placeholder naming its path, never a broken report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

from lora_harness.report.thumbs import Thumbnail, build_thumbnails

MEMORIZATION_PREFIX = "memorization_"
TRAINING_IMAGE_KEY = "training_image"
_THUMB_KEY = "training-image:"  # thumbnail cache key: never collides with a case key's thumbnail


@dataclass(frozen=True)
class TrainingMatch:
    """One memorization metric of a case and the training image it matched."""

    metric: str
    value: float | None
    path: str  # as the score recorded it (shown escaped, never used as markup)
    src: str | None  # thumbnail: data URI or relative link; None -> placeholder
    problem: str | None


def training_image_of(metric: str, raw: object) -> str | None:
    """The matched training image's path of a memorization score, or None for any other score."""
    if not metric.startswith(MEMORIZATION_PREFIX) or not isinstance(raw, dict):
        return None
    path = raw.get(TRAINING_IMAGE_KEY)
    return path if isinstance(path, str) and path.strip() else None


def training_matches(
    cases: Iterable[tuple[str, Iterable[tuple[str, float | None, str]]]],
    run_dir: Path,
    max_px: int,
    images: Literal["embed", "link"],
    relative_url: Callable[[Path, Path], str],
    *,
    pixel_limit: int,
) -> dict[str, list[TrainingMatch]]:
    """(case key, [(metric, value, training image path)]) -> the matches to show per case key.

    Each training image gets one thumbnail however many cases matched it (cached next to the case
    thumbnails, remade when the image is newer)."""
    wanted = [(key, list(matches)) for key, matches in cases]
    paths = sorted({path for _, matches in wanted for _, _, path in matches})
    if not paths:
        return {}
    thumbs: dict[str, Thumbnail] = build_thumbnails(
        ((_THUMB_KEY + p, p) for p in paths), run_dir, max_px, pixel_limit=pixel_limit, processes=0
    )
    out: dict[str, list[TrainingMatch]] = {}
    for key, matches in wanted:
        for metric, value, path in matches:
            thumb = thumbs[_THUMB_KEY + path]
            if thumb.path is None:
                src, problem = None, thumb.problem or f"image not found: {path}"
            else:
                src = thumb.data_uri() if images == "embed" else relative_url(thumb.file(), run_dir)
                problem = None
            out.setdefault(key, []).append(TrainingMatch(metric, value, path, src, problem))
    return out
