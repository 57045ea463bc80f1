"""`pixel_similarity`: whole-image similarity to reference images, without any model.

Why: the memorization check needs a deterministic "is this a near-copy of a training photo" measure that
works offline, on any machine, with no weights (embedding judges such as `clip_i` need a model). Each image
is converted to grey, resized to `size` x `size` (Lanczos) and standardised (zero mean, unit norm); the
similarity is the cosine of the two vectors, i.e. the Pearson correlation of the downscaled grey images:
1.0 for the same picture (also after rescaling or a uniform brightness/contrast change), near 0 for
unrelated pictures, negative for an inverted one. It measures layout and shading, not identity: a re-posed
copy of a photo scores lower than a pixel copy, which is what "near-copy" means here. Raw values keep the
similarity to every reference and the best-matching reference's path.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from lora_harness.core.cases import EvalCase
from lora_harness.judges.base import JudgeContext, Score, register, reject_unknown

VERSION = "1"


def signature(image: np.ndarray, size: int) -> np.ndarray:
    """The standardised grey thumbnail of an RGB (or grey) uint8 image, as a unit vector."""
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    grey = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L").resize((size, size), Image.Resampling.LANCZOS)
    vector = np.asarray(grey, dtype=np.float64).ravel()
    vector = vector - vector.mean()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector  # a flat image correlates with nothing (all zeros)


def reference_names(context: JudgeContext) -> list[str]:
    """Reference paths when the context has them (so a match names its file), else `reference_<i>`."""
    if len(context.reference_paths) == len(context.reference_images):
        return [str(p) for p in context.reference_paths]
    return [f"reference_{i}" for i in range(len(context.reference_images))]


class PixelSimilarityJudge:
    name = "pixel_similarity"
    version = VERSION
    # Layout and shading against the references, not identity: higher is closer to a copy (memorization's
    # concern), not better; so neither direction (`judges.base.metric_direction`): no default baseline or
    # best-checkpoint weight uses it. Gate it with a threshold (`image_max`) or the memorization check.
    directions = {"pixel_similarity_mean": "none", "pixel_similarity_max": "none"}

    def __init__(self, size: int = 64) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 512:
            raise ValueError(f"pixel_similarity: option size must be an integer from 8 to 512 (got {size!r})")
        self.size = size
        self._cache: tuple[tuple[int, ...], np.ndarray] | None = None

    @property
    def metrics(self) -> list[str]:
        return ["pixel_similarity_mean", "pixel_similarity_max"]

    def _references(self, context: JudgeContext) -> np.ndarray:
        ident = tuple(id(image) for image in context.reference_images)
        if self._cache is None or self._cache[0] != ident:
            self._cache = (ident, np.stack([signature(image, self.size) for image in context.reference_images]))
        return self._cache[1]

    def judge(self, case: EvalCase, image: np.ndarray, context: JudgeContext) -> list[Score]:
        return self.judge_batch([(case, image)], context)[0]

    def judge_batch(self, items: Sequence[tuple[EvalCase, np.ndarray]], context: JudgeContext) -> list[list[Score]]:
        if not context.reference_images:
            message = "pixel_similarity: no reference images; set `person.references` (or memorization.training_dir)"
            return [[Score(m, None, error=message) for m in self.metrics] for _ in items]
        references = self._references(context)
        names = reference_names(context)
        results = []
        for _, image in items:
            row = references @ signature(image, self.size)
            best = int(np.argmax(row))
            raw: dict[str, Any] = {
                "per_reference": dict(zip(names, map(float, row))),
                "best_reference": names[best],
                "size": self.size,
            }
            results.append([Score(self.metrics[0], float(row.mean()), raw), Score(self.metrics[1], float(row[best]), raw)])
        return results


@register("pixel_similarity")
def _create(**options: Any) -> PixelSimilarityJudge:
    reject_unknown("pixel_similarity", {k: v for k, v in options.items() if k != "size"}, ["size"])
    return PixelSimilarityJudge(**options)


_create.directions = PixelSimilarityJudge.directions  # type: ignore[attr-defined]  # read from the registry without building a judge
