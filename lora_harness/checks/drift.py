"""Base-model drift: how far the LoRA moves the base model's output on prompts that do not use it.

Why: a person LoRA should change the person and leave "a man in a park" alone (the LyCORIS evaluation
framework and PEFT's image-generation benchmark both report this). Leakage asks whether the *person*
appears; drift asks whether the *picture* changed at all. Each leakage image (LoRA loaded, no trigger) is
compared with the base model's image of the same prompt and seed (same settings, no LoRA):

* ``drift_pixel``: 1 - Pearson correlation of the two standardised 64 px grey thumbnails
  (`pixel_similarity`'s signature): 0 when the LoRA changed nothing, up to 2;
* ``drift_<judge>``: 1 - the cosine similarity of the `clip_i` / `dino` judges, when the config lists them
  and their models are installed here (else recorded as not available, not as 0).

The base image is generated once per prompt and seed (not per checkpoint) under `<lora>-base`. The values are
stored as metrics of the `<lora>-leakage` cases (judge ``drift``), so the CSV and the trend plots show drift
over training steps; `[leakage] max_drift` is the ceiling to gate on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lora_harness.core.cases import Checkpoint, EvalCase
from lora_harness.checks.result import CheckResult
from lora_harness.core.images import ImageError
from lora_harness.judges import JudgeContext, Score, create_judge
from lora_harness.judges.base import judge_many
from lora_harness.judges.pixel_similarity import signature
from lora_harness.judges.model_loading import ModelUnavailable
from lora_harness.sources.generate import GeneratedCase, image_path
from lora_harness.run.store import ScoreRow

if TYPE_CHECKING:
    from lora_harness.run.harness import Harness

SOURCE = "drift"
VERSION = "1"
EMBEDDING_JUDGES = ("clip_i", "dino")  # whole-image similarity judges whose `<name>_max` becomes drift_<name>


def drift_metric(judge: str) -> str:
    return "drift_pixel" if judge == "pixel_similarity" else f"drift_{judge}"


def base_twin(case: GeneratedCase, run_dir: Any) -> GeneratedCase:
    """The base model's image of the leakage case's prompt and seed: no LoRA, one per prompt/seed (step 0)."""
    name = f"{case.extra['of']}-base"
    twin = replace(case, loraname=name, training_step=0, lora=None, lora_scale=0.0, variant="base",
                   role="baseline", extra={"of": case.extra["of"]})
    return replace(twin, image_path=image_path(run_dir, name, twin.step_label, case.prompt_id, case.seed))


def ceiling(limits: float | dict[str, float] | None, metric: str) -> float | None:
    if isinstance(limits, dict):
        return limits.get(metric)
    return limits if metric == "drift_pixel" else None  # one number: the pixel drift, the one always measured


def pixel_drift(image: Any, base: Any) -> float:
    return float(1.0 - signature(image, 64) @ signature(base, 64))


def evaluate_drift(harness: "Harness", checkpoint: Checkpoint, cases: list[EvalCase], result: CheckResult) -> None:
    """Drift of each leakage case against its base twin, stored and checked against `[leakage] max_drift`."""
    config = harness.config.leakage
    assert config is not None and config.drift
    options = {j.name: j.options for j in harness.config.judges}
    embedders = [name for name in EMBEDDING_JUDGES if name in options]
    for case in cases:
        if not isinstance(case, GeneratedCase):
            continue
        twin = base_twin(case, harness.config.run_dir)
        try:
            image, base = harness.image(case), harness.image(twin)
        except ImageError as exc:
            result.errors.append(f"{case.key}: drift needs the LoRA and base images: {exc}")
            continue
        raw = {"base_image": str(twin.image_path), "base_case": twin.key}
        scores = [Score("drift_pixel", pixel_drift(image, base), raw)]
        for name in embedders:
            scores.append(_embedding_drift(name, options[name], case, image, base, raw, result))
        harness.store.append([ScoreRow.of(case, s, judge=SOURCE, judge_version=VERSION, run_id=harness.run_id,
                                          worker=harness.worker) for s in scores])
        where = f"{case.key} {case.prompt.text!r}"
        for score in scores:
            limit = ceiling(config.max_drift, score.metric)
            result.against_ceiling(
                where, score, limit, missing=f"not measured ({score.raw.get('missing')})",
                over=f": with the LoRA loaded, a prompt without the trigger no longer gives the base model's image "
                f"({twin.image_path})",
                within=f" (ceiling {limit:g})" if limit is not None else "",
            )


def _embedding_drift(name: str, options: dict[str, Any], case: EvalCase, image: Any, base: Any, raw: dict[str, Any],
                     result: CheckResult) -> Score:
    metric = drift_metric(name)
    try:
        judge = create_judge(name, options)
        scores = judge_many(judge, [(case, image)], JudgeContext(reference_images=[base]))[0]
    except ModelUnavailable as exc:
        return Score(metric, None, {**raw, "missing": f"{name} unavailable here: {exc}"})
    best = next((s for s in scores if s.metric == f"{name}_max"), None)
    if best is None or best.value is None:
        return Score(metric, None, raw, (best.error if best else None) or f"{name} returned no {name}_max")
    return Score(metric, float(1.0 - best.value), raw)
