"""`clip_i` and `dino`: how much each sample looks like the reference photos, by image embeddings.

DreamBooth's subject-fidelity metrics: embed the sample and every reference photo with a vision
backbone and take cosine similarities. Per sample, two metrics: ``<prefix>_mean`` (mean over references:
overall likeness) and ``<prefix>_max`` (best single reference: matches at least one view of the person).
``raw`` keeps the similarity to each reference, by file name.

* `clip_i`: CLIP image embeddings (default `openai/clip-vit-base-patch16`, the clip_score model, so the two
  judges share one copy of the weights). Sensitive to overall appearance, style and setting.
* `dino`: self-supervised ViT features (default `facebook/dino-vits16`, DreamBooth's choice); more
  sensitive to the subject's own features than to the prompt's setting, so it separates identity better.

Any transformers vision backbone works through `AutoModel` + `AutoImageProcessor` (option ``model``, a
local folder or hub id). The embedding is ``get_image_features`` for models that have one (CLIP, SigLIP),
else the CLS token of the last hidden state (``pooling = "auto"``); ``"cls"``, ``"pooler"`` (the model's
pooler output) and ``"mean"`` (mean of the patch tokens) can be forced. Reference embeddings are computed
once per process, samples in batches of ``batch_size``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from lora_harness.core.cases import EvalCase
from lora_harness.judges.base import JudgeContext, Score, check_choice, check_int, check_text, register, reject_unknown
from lora_harness.judges.embedding import (
    ImageInputError,
    Lazy,
    ReferencePhotoError,
    batches,
    cosine_matrix,
    mean_max,
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

POOLINGS = ("auto", "cls", "pooler", "mean")


@dataclass(frozen=True)
class _Loaded:
    model: Any
    processor: Any
    device: str
    pooling: str  # resolved: "features", "cls", "pooler" or "mean"


@dataclass(frozen=True)
class _References:
    images: Any  # the context's sequence, kept so identity comparison stays valid
    names: tuple[str, ...]
    embeddings: np.ndarray


class ImageSimilarityJudge:
    """Cosine similarity of each sample's embedding to every reference photo's: mean and max."""

    name: ClassVar[str]
    version = "1"
    default_model: ClassVar[str]

    def __init__(
        self,
        *,
        model: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 16,
        pooling: str = "auto",
        min_side: int = 32,
        max_side: int = 1024,
        threads: int | str = "auto",
        **unknown: Any,
    ) -> None:
        reject_unknown(self.name, unknown, _OPTIONS)
        self.model_spec = check_text(self.name, "model", model if model is not None else self.default_model,
                                     optional=False)
        self.device_spec = check_device_spec(device, judge=self.name)
        self.dtype = check_dtype_spec(dtype, judge=self.name)
        self.batch_size = check_int(self.name, "batch_size", batch_size, 1)
        self.pooling = check_choice(self.name, "pooling", pooling, POOLINGS)
        self.min_side = check_int(self.name, "min_side", min_side, 1)
        self.max_side = check_int(self.name, "max_side", max_side, 64)
        self.threads = check_threads_spec(threads, judge=self.name)
        self._loaded: Lazy[_Loaded] = Lazy(self._load)
        self._references: _References | None = None

    @property
    def metrics(self) -> list[str]:
        return [f"{self.name}_mean", f"{self.name}_max"]

    def judge(self, case: EvalCase, image: np.ndarray, context: JudgeContext) -> list[Score]:
        return self.judge_batch([(case, image)], context)[0]

    def judge_batch(self, items: Sequence[tuple[EvalCase, np.ndarray]], context: JudgeContext) -> list[list[Score]]:
        results: list[list[Score] | None] = [None] * len(items)
        ready: list[tuple[int, np.ndarray, tuple[str, ...]]] = []
        for index, (_, image) in enumerate(items):
            try:
                prepared = prepare_image(image, min_side=self.min_side, max_side=self.max_side)
            except ImageInputError as exc:
                results[index] = self._errors(str(exc))
                continue
            ready.append((index, prepared.array, prepared.notes))
        if ready:
            loaded = self._loaded.get()  # ModelUnavailable / ModelError: the harness handles the whole batch
            if loaded.device == "cpu":
                apply_cpu_threads(self.threads, worker_count=context.worker_count, judge=self.name)
            references = self.references(loaded, context)
            for chunk in batches(ready, self.batch_size):
                try:
                    embeddings = self.embed(loaded, [array for _, array, _ in chunk])
                except Exception as exc:  # e.g. out of memory: this chunk only
                    for index, _, _ in chunk:
                        results[index] = self._errors(f"{type(exc).__name__}: {exc}")
                    continue
                similarities = cosine_matrix(embeddings, references.embeddings)
                means, maxes = mean_max(similarities)
                for (index, _, notes), row, mean, best in zip(chunk, similarities, means, maxes):
                    raw: dict[str, Any] = {
                        "per_reference": dict(zip(references.names, map(float, row))),
                        "best_reference": references.names[int(np.argmax(row))],
                        "model": self.model_spec,
                        "pooling": loaded.pooling,
                        "device": loaded.device,
                    }
                    if notes:
                        raw["input"] = "; ".join(notes)
                    results[index] = [Score(self.metrics[0], float(mean), raw), Score(self.metrics[1], float(best), raw)]
        return [r if r is not None else [] for r in results]

    def _errors(self, message: str) -> list[Score]:
        return [Score(metric, None, error=f"{self.name}: {message}") for metric in self.metrics]

    def references(self, loaded: _Loaded, context: JudgeContext) -> _References:
        """Embeddings of the reference photos, computed once per reference set."""
        cached = self._references
        if cached is not None and cached.images is context.reference_images:
            return cached
        images = list(context.reference_images)
        if not images:
            raise ReferencePhotoError(
                f"{self.name} compares samples with reference photos, but none are configured; "
                f"list photos of the person under [person] references"
            )
        paths = list(context.reference_paths)
        names = tuple(p.name for p in paths) if len(paths) == len(images) else tuple(
            f"reference {i}" for i in range(len(images))
        )
        arrays = []
        for name, image in zip(names, images):
            try:
                arrays.append(prepare_image(image, min_side=self.min_side, max_side=self.max_side).array)
            except ImageInputError as exc:
                raise ReferencePhotoError(f"reference photo {name} is unusable: {exc}; fix [person] references") from None
        embeddings = np.concatenate([self.embed(loaded, list(chunk)) for chunk in batches(arrays, self.batch_size)])
        self._references = _References(context.reference_images, names, embeddings)
        return self._references

    def embed(self, loaded: _Loaded, arrays: list[np.ndarray]) -> np.ndarray:
        """One embedding row per image (float64, not normalized)."""
        torch = require("torch", judge=self.name)
        inputs = loaded.processor(images=arrays, return_tensors="pt")
        model = loaded.model
        pixel_values = inputs["pixel_values"].to(device=loaded.device, dtype=model.dtype)
        with torch.no_grad():
            if loaded.pooling == "features":
                output = model.get_image_features(pixel_values=pixel_values)
                features = getattr(output, "pooler_output", None)
                features = output if features is None else features
            else:
                output = model(pixel_values=pixel_values)
                features = _pool(output, loaded.pooling, self.name)
        return features.float().cpu().numpy().astype(np.float64)

    def _load(self) -> _Loaded:
        for module in ("torch", "transformers"):
            require(module, judge=self.name)
        device = resolve_device(self.device_spec, judge=self.name)
        source = resolve_source(self.model_spec, judge=self.name)
        model = load_auto_model(source, device=device, dtype=self.dtype, judge=self.name)
        has_features = hasattr(model, "get_image_features")
        if not has_features and getattr(model, "main_input_name", None) != "pixel_values":
            raise ModelError(
                f"{self.name}: {source.describe()} holds a {describe_model(model)}, which does not take images; "
                f"set the option model to a vision backbone such as {self.default_model}"
            )
        processor = load_processor(source, judge=self.name, kind="image")
        pooling = self.pooling
        if pooling == "auto":
            pooling = "features" if has_features else "cls"
        return _Loaded(model, processor, device, pooling)


def _pool(output: Any, pooling: str, judge: str) -> Any:
    if pooling == "pooler":
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            raise ModelError(f"{judge}: pooling = 'pooler' but the model returns no pooler_output; use 'cls'")
        return pooled
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None or hidden.ndim != 3:
        raise ModelError(f"{judge}: the model returns no token sequence (last_hidden_state) to pool")
    if pooling == "cls":
        return hidden[:, 0]
    return hidden[:, 1:].mean(dim=1) if hidden.shape[1] > 1 else hidden[:, 0]


@register("clip_i")
class ClipImageJudge(ImageSimilarityJudge):
    """CLIP-I: CLIP image-embedding similarity to the reference photos."""

    name = "clip_i"
    default_model = "openai/clip-vit-base-patch16"


@register("dino")
class DinoJudge(ImageSimilarityJudge):
    """DINO: self-supervised ViT similarity to the reference photos (DreamBooth's subject fidelity)."""

    name = "dino"
    default_model = "facebook/dino-vits16"


_OPTIONS = tuple(
    name
    for name, param in inspect.signature(ImageSimilarityJudge.__init__).parameters.items()
    if param.kind is param.KEYWORD_ONLY
)
