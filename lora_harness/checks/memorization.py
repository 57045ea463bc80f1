"""Memorization: is a generated image a near-copy of a training image?

Each image of a checkpoint (the LoRA's own cases, trigger prompts) is compared with every training image by
the configured similarity judges (default `pixel_similarity`, whole image, and `face_identity`), using the
training images as the judges' references. The maximum per judge is recorded as metric
`memorization_<judge>_max` (store, CSV, report) with the best-matching training image's path in
`raw.training_image`; a value above `[memorization] max_similarity` flags a near-copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_harness.checks.base import Check
from lora_harness.checks.extra_cases import MEMORIZATION
from lora_harness.core.cases import Checkpoint
from lora_harness.checks.result import CheckResult
from lora_harness.core.images import ImageError, load_rgb
from lora_harness.judges import JudgeContext, Score, create_judge
from lora_harness.judges.base import judge_many
from lora_harness.judges.model_loading import ModelUnavailable
from lora_harness.sources.samples import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from lora_harness.core.config import EvalConfig, MemorizationConfig
    from lora_harness.run.harness import Harness

SOURCE = MEMORIZATION


def training_images(folder: Path) -> list[Path]:
    """Image files under the training folder, recursively (kohya: img/<repeats>_<name>/*.png); captions ignored."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def metric_name(judge: str) -> str:
    return f"memorization_{judge}_max"


DEFAULT_CEILING = 0.95
IDENTITY_JUDGES = ("face_identity",)  # same face is the goal of a person LoRA: recorded, gated only when asked


def ceiling(config: "MemorizationConfig", judge: str) -> float | None:
    if isinstance(config.max_similarity, dict):
        return config.max_similarity.get(f"{judge}_max")
    if config.max_similarity is None:
        return None if judge in IDENTITY_JUDGES else DEFAULT_CEILING
    return config.max_similarity


def memorization_ceilings(config: "EvalConfig") -> dict[str, float]:
    """`memorization_<judge>_max` -> its ceiling, for the report (empty without a [memorization] section)."""
    if config.memorization is None:
        return {}
    limits = {metric_name(judge): ceiling(config.memorization, judge) for judge in config.memorization.judges}
    return {metric: limit for metric, limit in limits.items() if limit is not None}


class MemorizationCheck(Check):
    """Training images and similarity judges: loaded on first use, once per harness (so once per worker)."""

    name = "memorization"
    skip_reason = "no memorization check configured: add [memorization] training_dir = \"...\" to the eval config"
    fixture_doc = "Each image vs the training images: near-copies above `[memorization] max_similarity` fail."

    def __init__(self) -> None:
        self._context: JudgeContext | None = None
        self._judges: list[Any] | None = None

    def targets(self, harness: "Harness") -> list[Checkpoint]:
        if harness.config.memorization is None:
            return []
        return [c for c in harness.checkpoints if any(not case.is_baseline for case in harness.cases_of(c))]

    def context(self, harness: "Harness") -> JudgeContext:
        if self._context is None:
            config = _config(harness)
            paths = training_images(config.training_dir)
            if not paths:
                raise ImageError(
                    f"no training images ({', '.join(sorted(IMAGE_SUFFIXES))}) under memorization.training_dir "
                    f"{config.training_dir}"
                )
            images = [load_rgb(p, pixel_limit=harness.config.run.image_pixel_limit) for p in paths]
            self._context = JudgeContext(reference_images=images, reference_paths=paths, worker_count=harness.worker_count)
        return self._context

    def judges(self, harness: "Harness") -> list[Any]:
        if self._judges is None:
            options = {j.name: j.options for j in harness.config.judges}  # a judge's options from [[judges]] when listed
            self._judges = [create_judge(name, options.get(name, {})) for name in _config(harness).judges]
        return self._judges

    def evaluate(self, harness: "Harness", checkpoint: Checkpoint) -> CheckResult:
        config = _config(harness)
        result = CheckResult(self.name, checkpoint)
        cases = [c for c in harness.cases_of(checkpoint) if not c.is_check]
        items = []
        for case in cases:
            try:
                items.append((case, harness.image(case)))
            except ImageError as exc:
                result.errors.append(f"{case.key}: {exc}")
        if not items:
            return result
        try:
            context = self.context(harness)
        except ImageError as exc:
            result.errors.append(f"training images unusable: {exc}; fix memorization.training_dir")
            return result
        by_name = _path_names(context.reference_paths)
        for judge in self.judges(harness):
            metric, limit = metric_name(judge.name), ceiling(config, judge.name)
            try:
                results = judge_many(judge, items, context)
            except ModelUnavailable as exc:
                result.unavailable.append(f"{judge.name}: {exc}")
                continue
            except Exception as exc:  # a judge bug must not hide the other judges' findings
                result.errors.append(harness.store.redactor.text(f"{judge.name} failed: {type(exc).__name__}: {exc}"))
                continue
            for (case, _), scores in zip(items, results):
                best = next((s for s in scores if s.metric == f"{judge.name}_max"), None)
                score = _memorization_score(metric, best, by_name)
                # Store only (as pairwise comparisons do): the case's score set in the harness stays the case
                # judges' business, so a later `score(case)` still runs them.
                ((_, (score,)),) = harness.store.record([(case, [score])], judge=SOURCE, judge_version=f"{judge.name} {judge.version}")
                closest = score.raw.get("training_image")
                result.against_ceiling(
                    f"{case.key} ({case.image_path})", score, limit,
                    missing=f"missing ({score.raw.get('missing', 'no value')})",
                    over=f": near-copy of training image {closest}", within=f" (closest: {closest})",
                )
        return result


def _config(harness: "Harness") -> "MemorizationConfig":
    config = harness.config.memorization
    assert config is not None, "the memorization check needs a [memorization] section"
    return config


def _path_names(paths: Any) -> dict[str, str]:
    """Judges name references by full path or by file name; both map back to the full path."""
    names: dict[str, str] = {}
    for p in paths:
        names[str(p)] = str(p)
        names.setdefault(Path(p).name, str(p))
    return names


def _memorization_score(metric: str, best: Score | None, by_name: dict[str, str]) -> Score:
    if best is None:
        return Score(metric, None, error="the judge returned no *_max score")
    raw: dict[str, Any] = {k: v for k, v in best.raw.items() if k != "per_reference"}
    per_reference = best.raw.get("per_reference")
    if isinstance(per_reference, dict):
        top = sorted(per_reference.items(), key=lambda kv: -kv[1])[:5]
        raw["closest_training_images"] = {by_name.get(k, k): v for k, v in top}
    name = best.raw.get("best_reference")
    if name is None and isinstance(per_reference, dict) and per_reference:
        name = max(per_reference.items(), key=lambda kv: kv[1])[0]  # e.g. face_identity names no best
    if name is not None:
        raw["training_image"] = by_name.get(str(name), str(name))
    return Score(metric, best.value, raw, best.error)
