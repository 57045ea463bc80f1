"""`clip_score`: how well each sample matches its prompt, computed as the study did (torchmetrics CLIP score).

Value: torchmetrics' CLIP score, ``max(100 * cos(image embedding, text embedding), 0)`` (0..100; the study's
`clip_score` column). The unclamped cosine is kept in ``raw["cosine"]``.

CLIP has never seen the LoRA's trigger token (``<phigep>``), so before scoring the trigger is replaced by
plain words for the person: the judge option ``description``, else ``[person] description``, else
"a person". ``raw["text"]`` keeps the exact text that was scored. CLIP reads at most 77 tokens; longer
prompts are truncated by torchmetrics (``raw["truncated"]``), as in the study.

Images are scored in batches of ``batch_size`` through torchmetrics' per-sample update function (its
public `clip_score` only returns the batch mean). The model loads once per process at first use, from a
local folder or a hub id (`lora_harness.judges.model_loading`); a missing model or package skips the gated tests with
the install/download instructions instead of failing them.

torchmetrics refuses local folders whose path lacks "openai" and, with transformers 5, fails on the
ModelOutput the feature getters now return; both are avoided by handing it the loaded model through the
documented callable form wrapped in `ClipFeatures`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lora_harness.core.cases import EvalCase
from lora_harness.judges.base import JudgeContext, Score, check_int, check_text, register, reject_unknown
from lora_harness.judges.embedding import (
    ImageInputError,
    Lazy,
    PreparedImage,
    batches,
    prepare_image,
)
from lora_harness.judges.model_loading import (
    ModelError,
    apply_cpu_threads,
    check_device_spec,
    check_threads_spec,
    check_dtype_spec,
    describe_model,
    load_auto_model,
    load_processor,
    require,
    resolve_device,
    resolve_source,
)

DEFAULT_MODEL = "openai/clip-vit-base-patch16"  # the study's model
FALLBACK_DESCRIPTION = "a person"


class ClipFeatures:
    """What torchmetrics calls on a CLIP model, over any model with CLIP-style feature getters.

    Returns plain feature tensors whether the wrapped model returns tensors (transformers 4) or a
    ModelOutput whose `pooler_output` holds the projected features (transformers 5), and casts pixel
    values to the model's dtype so float16/bfloat16 models work.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def config(self) -> Any:
        return self.model.config

    def to(self, device: Any) -> "ClipFeatures":
        self.model.to(device)
        return self

    def get_image_features(self, pixel_values: Any) -> Any:
        return _features(self.model.get_image_features(pixel_values=pixel_values.to(self.model.dtype)))

    def get_text_features(self, input_ids: Any, attention_mask: Any = None) -> Any:
        return _features(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def _features(output: Any) -> Any:
    pooled = getattr(output, "pooler_output", None)
    return output if pooled is None else pooled


@dataclass(frozen=True)
class _Loaded:
    model: ClipFeatures
    processor: Any
    device: str
    max_tokens: int | None


def replace_trigger(prompt: str, trigger: str | None, description: str) -> tuple[str, bool]:
    """The prompt with every occurrence of the trigger token replaced by the description."""
    if not trigger or trigger not in prompt:
        return prompt, False
    return prompt.replace(trigger, description), True


@register("clip_score")
class ClipScoreJudge:
    """Text-image alignment (CLIP-T) of each sample with its own prompt."""

    name = "clip_score"
    version = "1"

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 16,
        description: str | None = None,
        trigger: str | None = None,
        min_side: int = 32,
        max_side: int = 1024,
        threads: int | str = "auto",
        **unknown: Any,
    ) -> None:
        reject_unknown(self.name, unknown, _OPTIONS)
        check_text(self.name, "model", model, optional=False)
        self.model_spec = model
        self.device_spec = check_device_spec(device, judge=self.name)
        self.dtype = check_dtype_spec(dtype, judge=self.name)
        self.batch_size = check_int(self.name, "batch_size", batch_size, 1)
        self.description = check_text(self.name, "description", description)
        self.trigger = check_text(self.name, "trigger", trigger)
        self.min_side = check_int(self.name, "min_side", min_side, 1)
        self.max_side = check_int(self.name, "max_side", max_side, 64)
        self.threads = check_threads_spec(threads, judge=self.name)
        self._loaded: Lazy[_Loaded] = Lazy(self._load)

    @property
    def metrics(self) -> list[str]:
        return ["clip_score"]

    def text_for(self, case: EvalCase, context: JudgeContext) -> tuple[str, bool]:
        description = self.description or context.description or FALLBACK_DESCRIPTION
        return replace_trigger(case.prompt.text, self.trigger or context.trigger, description)

    def judge(self, case: EvalCase, image: np.ndarray, context: JudgeContext) -> list[Score]:
        return self.judge_batch([(case, image)], context)[0]

    def judge_batch(self, items: Sequence[tuple[EvalCase, np.ndarray]], context: JudgeContext) -> list[list[Score]]:
        results: list[list[Score] | None] = [None] * len(items)
        ready: list[tuple[int, PreparedImage, str, bool]] = []
        for index, (case, image) in enumerate(items):
            try:
                prepared = prepare_image(image, min_side=self.min_side, max_side=self.max_side)
            except ImageInputError as exc:
                results[index] = [Score("clip_score", None, error=f"{self.name}: {exc}")]
                continue
            ready.append((index, prepared, *self.text_for(case, context)))
        if ready:
            loaded = self._loaded.get()  # ModelUnavailable / ModelError: the harness handles the whole batch
            if loaded.device == "cpu":
                apply_cpu_threads(self.threads, worker_count=context.worker_count, judge=self.name)
            for chunk in batches(ready, self.batch_size):
                try:
                    cosines = self._cosines(loaded, [p.array for _, p, _, _ in chunk], [t for _, _, t, _ in chunk])
                except Exception as exc:  # e.g. out of memory: this chunk only, other chunks keep their scores
                    for index, *_ in chunk:
                        results[index] = [Score("clip_score", None, error=f"{self.name}: {type(exc).__name__}: {exc}")]
                    continue
                for (index, prepared, text, replaced), cosine in zip(chunk, cosines):
                    results[index] = [self._score(loaded, prepared, text, replaced, cosine)]
        return [r if r is not None else [] for r in results]

    def _score(self, loaded: _Loaded, prepared: PreparedImage, text: str, replaced: bool, cosine: float) -> Score:
        raw: dict[str, Any] = {
            "cosine": cosine,
            "text": text,
            "trigger_replaced": replaced,
            "model": self.model_spec,
            "device": loaded.device,
        }
        if loaded.max_tokens is not None:
            tokens = len(loaded.processor.tokenizer(text)["input_ids"])
            raw["text_tokens"] = tokens
            raw["truncated"] = tokens > loaded.max_tokens
        if prepared.notes:
            raw["input"] = "; ".join(prepared.notes)
        return Score("clip_score", max(100.0 * cosine, 0.0), raw)

    def _cosines(self, loaded: _Loaded, arrays: list[np.ndarray], texts: list[str]) -> list[float]:
        """Per-image cosine through torchmetrics' own CLIP-score math (100 * cos, before clamping)."""
        torch = require("torch", judge=self.name)
        from torchmetrics.functional.multimodal.clip_score import _clip_score_update

        # Images go in on the model's device: torchmetrics moves the model to the images' device.
        images = [torch.tensor(a).permute(2, 0, 1).to(loaded.device) for a in arrays]  # a copy: inputs may be read-only
        with torch.no_grad():
            scores, _ = _clip_score_update(images, list(texts), loaded.model, loaded.processor)
        return [float(s) / 100.0 for s in scores.float().cpu()]

    def _load(self) -> _Loaded:
        for module in ("torch", "transformers", "torchmetrics"):
            require(module, judge=self.name)
        device = resolve_device(self.device_spec, judge=self.name)
        source = resolve_source(self.model_spec, judge=self.name)
        model = load_auto_model(source, device=device, dtype=self.dtype, judge=self.name)
        if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
            raise ModelError(
                f"{self.name}: {source.describe()} holds a {describe_model(model)}, not a CLIP-style model with "
                f"text and image towers; set the option model to a CLIP checkpoint such as {DEFAULT_MODEL}"
            )
        processor = load_processor(source, judge=self.name)
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
            raise ModelError(
                f"{self.name}: {source.describe()} has no combined processor (tokenizer + image processor), only "
                f"{type(processor).__name__}; save one there with CLIPProcessor(...).save_pretrained(folder)"
            )
        text_config = getattr(model.config, "text_config", None)
        max_tokens = getattr(text_config, "max_position_embeddings", None)
        return _Loaded(ClipFeatures(model), processor, device, max_tokens)


_OPTIONS = tuple(
    name
    for name, param in inspect.signature(ClipScoreJudge.__init__).parameters.items()
    if param.kind is param.KEYWORD_ONLY
)
