"""The generator of one process (one xdist worker): generated cases in, cached image files out.

Everything expensive is lazy and happens at most once per process: the pipeline is built on the first
cache miss (a rerun whose images are all cached never imports diffusers), and a checkpoint's cases are
generated together so its LoRA is applied once (xdist keeps a checkpoint's cases on one worker). Failures
are per case: a case that runs out of GPU memory or whose LoRA does not fit is recorded as a
`CaseGenerationError` (an ImageError, so the harness records it like a broken sample image) and the run
goes on with the next case.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from lora_harness.core.cases import EvalCase
from lora_harness.generation.cache import CacheKey, GenerationLog, case_key, check_cached, model_identity, save_png
from lora_harness.generation.errors import CaseGenerationError, GenerationError
from lora_harness.generation.lora import LoraManager
from lora_harness.generation.pipeline import GenerationWarning, Target, call_arguments, load_pipeline, resolve_target
from lora_harness.generation.settings import PipelineConfig
from lora_harness.sources.generate import GeneratedCase

log = logging.getLogger("lora_harness.generation")

REFERENCE_DIRNAME = "_reference"  # base-model images a LoRA's first image is compared with
# A LoRA whose image differs from the base model's by at most this many grey levels anywhere changes nothing.
NO_EFFECT_MAX_DIFFERENCE = 1


def max_pixel_difference(a: Path, b: Path) -> int | None:
    """Largest per-channel difference in grey levels; None when the images cannot be compared (size, decode)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(a) as first, Image.open(b) as second:
            x, y = np.asarray(first.convert("RGB"), dtype=np.int16), np.asarray(second.convert("RGB"), dtype=np.int16)
    except (OSError, ValueError):
        return None
    if x.shape != y.shape:
        return None
    return int(np.abs(x - y).max())


class ImageGenerator:
    """Owns this process's pipeline and LoRA state; `materialize(case)` makes sure the case's image exists."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        images_dir: Path,
        worker: str = "main",
        loader: Callable[[PipelineConfig, Target], Any] = load_pipeline,
    ) -> None:
        self.config = config
        self.worker = worker
        self.images_dir = Path(images_dir)
        self.log = GenerationLog(self.images_dir, worker)
        self.stats: Counter[str] = Counter()
        self._loader = loader
        self._target: Target | None = None
        self._pipe: Any = None
        self._loras: LoraManager | None = None
        self._setup_error: GenerationError | None = None
        self._ready: dict[Path, str] = {}  # image path -> key digest, known good in this process
        self._failed: dict[str, str] = {}
        self._warned: set[str] = set()
        self._keys: dict[GeneratedCase, CacheKey] = {}
        self._identity: dict[str, Any] | None = None
        self._effect: dict[tuple[Path, float], str | None] = {}  # (LoRA, scale) -> "changes nothing" message or None

    # --- lazily built state ------------------------------------------------------------------------------------

    def target(self) -> Target:
        if self._target is None:
            if self._setup_error is not None:
                raise self._setup_error
            try:
                self._target = resolve_target(self.config, self.worker)
            except GenerationError as exc:
                self._setup_error = exc
                raise
        return self._target

    def pipeline(self) -> Any:
        """The diffusers pipeline, built on first use; a failure is remembered and re-raised, not retried."""
        if self._pipe is None:
            if self._setup_error is not None:
                raise self._setup_error
            target = self.target()
            if target.warning:
                warnings.warn(GenerationWarning(target.warning), stacklevel=2)
                log.warning(target.warning)
            started = time.perf_counter()
            try:
                self._pipe = self._loader(self.config, target)
            except GenerationError as exc:
                self._setup_error = exc
                raise
            seconds = time.perf_counter() - started
            self.stats["pipeline_loads"] += 1
            self.log.write("pipeline", model=self.config.model, pipeline=self.config.class_name, device=target.device,
                           dtype=target.dtype, seconds=round(seconds, 3))
        return self._pipe

    @property
    def loras(self) -> LoraManager:
        """The LoRA switcher of the pipeline (builds the pipeline when needed)."""
        if self._loras is None:
            self._loras = LoraManager(self.pipeline(), hotswap=self.config.hotswap, on_event=self._lora_event)
        return self._loras

    def _lora_event(self, event: str, **fields: Any) -> None:
        self.stats[f"lora_{fields.get('action', 'load')}"] += 1
        self.log.write(event, **fields)

    def pipeline_identity(self) -> dict[str, Any]:
        """The part of every cache key that describes the base pipeline (no model load needed)."""
        if self._identity is None:
            target = self.target()
            self._identity = {
                "class": self.config.class_name,
                "model": model_identity(self.config.model, self.config.revision),
                "variant": self.config.variant,
                "dtype": target.dtype,
                "device_type": target.device_type,
            }
        return self._identity

    # --- cases ---------------------------------------------------------------------------------------------------

    def materialize(
        self, case: GeneratedCase, batch: Sequence[EvalCase] | Callable[[], Sequence[EvalCase]] = ()
    ) -> Path:
        """The case's image file, reused from the cache or generated; the rest of `batch` (its checkpoint) too.

        `batch` may be a function, called only when the case's image is not known good yet (so a caller can
        pass its checkpoint lookup without paying for it on every image). Raises CaseGenerationError for
        this case only; other cases of the batch keep their own outcome.
        """
        if case.key in self._failed:
            raise CaseGenerationError(self._failed[case.key])
        if self._effect.get((case.lora, case.lora_scale)):  # a LoRA already found to change nothing
            self._fail([case], self._effect[(case.lora, case.lora_scale)])  # type: ignore[arg-type]
            raise CaseGenerationError(self._failed[case.key])
        try:
            if self._ready.get(case.image_path) == self._key(case).digest:
                return case.image_path
        except (GenerationError, OSError):
            pass  # reported below, per case
        siblings = batch() if callable(batch) else batch
        todo = [case] + [c for c in siblings if isinstance(c, GeneratedCase) and c.key != case.key and c.key not in self._failed]
        missing: list[tuple[GeneratedCase, CacheKey]] = []
        try:
            self.pipeline_identity()
        except GenerationError as exc:
            self._fail(todo, str(exc))
            raise CaseGenerationError(self._failed[case.key]) from None
        for item in todo:
            try:
                key = self._key(item)
            except OSError as exc:  # the LoRA file vanished or is unreadable
                self._fail([item], f"cannot read LoRA file {item.lora}: {exc}")
                continue
            if self._ready.get(item.image_path) == key.digest:
                continue  # made or checked earlier in this process
            cached = check_cached(item.image_path, key.digest)
            if cached.usable:
                self._ready[item.image_path] = key.digest
                self.stats["reused"] += 1
                self.log.write("image", action="reused", case=item.key, image=str(item.image_path))
            else:
                if cached.corrupt:  # the key matched: say why the image is made again
                    self.stats["corrupt"] += 1
                    log.warning("regenerating %s: %s", item.image_path, cached.reason)
                    self.log.write("image", action="invalid", case=item.key, image=str(item.image_path), reason=cached.reason)
                missing.append((item, key))
        groups: dict[tuple[Path | None, float], list[tuple[GeneratedCase, CacheKey]]] = {}
        for item, key in missing:
            groups.setdefault((item.lora, item.lora_scale), []).append((item, key))
        for (lora, scale), items in groups.items():
            try:
                if lora is not None or self._loras is not None:  # the base model needs no LoRA machinery
                    self.loras.use(lora, scale)
            except GenerationError as exc:
                self._fail([item for item, _ in items], str(exc))
                continue
            for item, key in items:
                try:
                    self._generate(item, key)
                except CaseGenerationError as exc:
                    self._fail([item], str(exc))
            if lora is not None and scale != 0 and (lora, scale) not in self._effect:
                self._check_effect((lora, scale), todo)  # while this LoRA is active: its reference is scale 0
        for group in {(c.lora, c.lora_scale) for c in todo if c.lora is not None and c.lora_scale != 0}:
            if group not in self._effect:  # every image was cached: compare with the cached reference
                self._check_effect(group, todo)  # type: ignore[arg-type]
        if case.key in self._failed:
            raise CaseGenerationError(self._failed[case.key])
        return case.image_path

    # --- a LoRA that changes nothing -----------------------------------------------------------------------------

    def _reference_case(self, item: GeneratedCase) -> tuple[GeneratedCase, CacheKey]:
        """The base model's image for the case's prompt, seed and settings, cached under images/_reference/."""
        base = replace(item, lora=None, lora_scale=1.0, image_path=Path())
        key = self._key(base)
        return replace(base, image_path=self.images_dir / REFERENCE_DIRNAME / f"{key.digest[:24]}.png"), key

    def _reference(self, item: GeneratedCase) -> Path | None:
        """The base-model reference of a case: cached, or generated now. With the case's LoRA active it is set to
        scale 0 for that one image (exactly the base model: peft adds 0 x delta) and back, so a sweep's hot-swaps
        are not interrupted; otherwise the adapters are cleared first."""
        ref, key = self._reference_case(item)
        if self._ready.get(ref.image_path) == key.digest or check_cached(ref.image_path, key.digest).usable:
            self._ready[ref.image_path] = key.digest
            return ref.image_path
        manager = self._loras
        try:
            if manager is not None and manager.active is not None and manager.active.path == item.lora:
                scale = manager.active.scale
                manager.set_scale(0.0)
                try:
                    self._generate(ref, key, action="reference")
                finally:
                    manager.set_scale(scale)
            else:
                if manager is not None:
                    manager.use(None)
                self._generate(ref, key, action="reference")
        except GenerationError as exc:  # no reference, no check: the cases report their own problems
            log.warning("no base-model reference for %s (%s); its LoRA's effect is not checked", item.key, exc)
            return None
        return ref.image_path

    def _check_effect(self, group: tuple[Path, float], todo: Sequence[GeneratedCase]) -> None:
        """Fail every case of a (LoRA, scale) whose first good image equals the base model's (max pixel
        difference <= NO_EFFECT_MAX_DIFFERENCE grey levels): a LoRA that changes nothing is a finding."""
        members = [c for c in todo if (c.lora, c.lora_scale) == group]
        if any("lora_problem" in c.extra for c in members):
            return  # the file could not be read: its cases already carry that reason
        item = next((c for c in members if c.key not in self._failed and self._ready.get(c.image_path)), None)
        if item is None:
            return  # nothing generated (all failed): nothing to compare
        reference = self._reference(item)
        difference = max_pixel_difference(item.image_path, reference) if reference is not None else None
        if difference is None or difference > NO_EFFECT_MAX_DIFFERENCE:
            self._effect[group] = None
            return
        lora, scale = group
        message = (
            f"this LoRA does not change the image: {lora.name} at scale {scale:g} gives the base model's image for "
            f"prompt {item.prompt_id} seed {item.seed} (max pixel difference {difference} <= "
            f"{NO_EFFECT_MAX_DIFFERENCE} grey level; base image {reference}); its weights are (near) zero or it "
            "targets modules the model does not use at inference: check the training run and the LoRA's target modules"
        )
        self._effect[group] = message
        self.log.write("lora", action="no_effect", file=str(lora), scale=scale, difference=difference)
        self._fail([c for c in members if c.key not in self._failed], message)

    def _key(self, case: GeneratedCase) -> CacheKey:
        """The case's cache key, computed once per process (the LoRA file hash is memoized too)."""
        if case not in self._keys:
            self._keys[case] = case_key(case, pipeline=self.pipeline_identity())
        return self._keys[case]

    def _fail(self, cases: Sequence[GeneratedCase], message: str) -> None:
        for item in cases:
            self._failed[item.key] = f"cannot generate {item.key}: {message}"
            self.stats["failed"] += 1
            self.log.write("image", action="failed", case=item.key, error=message)

    def _generate(self, case: GeneratedCase, key: CacheKey, action: str = "generated") -> None:
        import torch

        pipe = self.pipeline()
        prompt = case.prompt
        kwargs, ignored = call_arguments(
            pipe, prompt=prompt.text, negative=prompt.negative, width=prompt.width, height=prompt.height,
            steps=prompt.steps, guidance=prompt.guidance, cfg_scale=prompt.cfg_scale,
            # A CPU generator makes the initial noise identical on every device type.
            generator=torch.Generator(device="cpu").manual_seed(int(case.seed or 0)),
        )
        for name in ignored:
            if name not in self._warned:
                self._warned.add(name)
                warnings.warn(GenerationWarning(f"{self.config.class_name} has no parameter {name!r}; that setting is ignored"), stacklevel=2)
        started = time.perf_counter()
        oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
        try:
            image = pipe(**kwargs).images[0]
        except oom as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = f"{prompt.width or 'default'}x{prompt.height or 'default'}"
            raise CaseGenerationError(
                f"out of memory on {self.target().device} at {size}, {prompt.steps or 'default'} steps "
                f"({str(exc).splitlines()[0][:200]}); lower width/height, set [pipeline] offload = \"model\", or "
                "put fewer xdist workers on one GPU (pipeline.devices)"
            ) from None
        except Exception as exc:  # a pipeline bug or a bad setting: this case fails, the run goes on
            raise CaseGenerationError(f"the pipeline failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
        save_png(image, case.image_path, key)
        seconds = time.perf_counter() - started
        self._ready[case.image_path] = key.digest
        self.stats[action] += 1
        event = "reference" if action == "reference" else "image"  # a base-model reference is not a case's image
        self.log.write(event, action=action, case=case.key, image=str(case.image_path), seconds=round(seconds, 4))
