"""Building the text-to-image pipeline: class, weights (folder or hub id), device, dtype and offload.

One pipeline per process (per xdist worker). Device selection maps worker `gwN` to `devices[N % len]`
(default: the visible GPUs in turn), so `pytest -n 4` on a 4-GPU machine puts one worker on each GPU; with
no GPU it falls back to the CPU with a warning, because a FLUX image then takes minutes instead of seconds.
diffusers is imported inside the functions that need it (the import alone costs ~8 s).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_harness.generation.errors import DeviceError, PipelineLoadError
from lora_harness.generation.settings import PipelineConfig, looks_like_hub_id

log = logging.getLogger("lora_harness.generation")


class GenerationWarning(UserWarning):
    """Generation runs, but not as configured or expected (CPU fallback, ignored settings)."""


@dataclass(frozen=True)
class Target:
    """Where and in which precision the pipeline runs; `warning` explains a fallback."""

    device: str
    dtype: str
    warning: str | None = None

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]


# --- device and dtype ----------------------------------------------------------------------------------------


def worker_index(worker: str | None) -> int:
    """`gw3` -> 3 (pytest-xdist worker ids); the controller or a plain run -> 0."""
    match = re.fullmatch(r"gw(\d+)", worker or "")
    return int(match.group(1)) if match else 0


def select_device(config: PipelineConfig, worker: str | None, *, cuda_count: int, mps: bool) -> tuple[str, str | None]:
    """(device, warning) for this worker; pure, so every mapping rule is unit-tested without GPUs."""
    spec, index = config.device, worker_index(worker)
    if spec == "cpu":
        return "cpu", None
    if spec.startswith("cuda:"):
        if int(spec.split(":")[1]) >= cuda_count:
            raise DeviceError(
                f"pipeline.device = {spec!r} but torch sees {cuda_count} CUDA device(s); use 'auto' (one GPU per "
                "xdist worker), a smaller index, or 'cpu'"
            )
        return spec, None
    if spec == "mps":
        if not mps:
            raise DeviceError("pipeline.device = 'mps' but this torch build has no usable MPS backend; use 'auto' or 'cpu'")
        return "mps", None
    # "auto" or "cuda": one device per worker, round robin over the configured or visible devices.
    if cuda_count > 0:
        if config.devices:
            device = config.devices[index % len(config.devices)]
            if device.startswith("cuda:") and int(device.split(":")[1]) >= cuda_count:
                raise DeviceError(
                    f"pipeline.devices maps worker {worker or 'main'} to {device!r} but torch sees {cuda_count} CUDA "
                    f"device(s); fix the list {config.devices}"
                )
            return ("cuda:0" if device == "cuda" else device), None
        return f"cuda:{index % cuda_count}", None
    if spec == "cuda":
        raise DeviceError(
            "pipeline.device = 'cuda' but torch sees no CUDA GPU (a CPU-only torch build, or no driver); "
            "use 'auto' to fall back to the CPU, or install a CUDA build of torch"
        )
    if mps:
        return "mps", None
    return "cpu", (
        f"no GPU visible to torch: worker {worker or 'main'} generates on the CPU, which takes minutes per image at "
        "FLUX size (fine for tiny test models); set pipeline.device = 'cpu' to silence this, or run on a GPU machine"
    )


def resolve_target(config: PipelineConfig, worker: str | None) -> Target:
    """The device of this worker and the dtype to load in (auto: bfloat16 on accelerators, float32 on CPU)."""
    import torch

    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    device, warning = select_device(config, worker, cuda_count=torch.cuda.device_count(), mps=mps)
    dtype = config.dtype
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    return Target(device, dtype, warning)


# --- the pipeline --------------------------------------------------------------------------------------------


def pipeline_class(name: str) -> type:
    """The diffusers pipeline class named in the config; an unknown name lists the closest real ones."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if isinstance(cls, type) and hasattr(cls, "from_pretrained") and (
        issubclass(cls, diffusers.DiffusionPipeline) or name.startswith("AutoPipeline")
    ):
        return cls
    known = [n for n in dir(diffusers) if n.endswith("Pipeline") or n.startswith("AutoPipelineFor")]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise PipelineLoadError(
        f"pipeline.class_name = {name!r} is not a diffusers pipeline class (diffusers {diffusers.__version__}); "
        f"{hint}text-to-image examples: FluxPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline, "
        "AutoPipelineForText2Image"
    )


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "DIFFUSERS_OFFLINE"))


def load_pipeline(config: PipelineConfig, target: Target) -> Any:
    """`<class>.from_pretrained(model)` in the target dtype, placed on the target device (or offloaded)."""
    import torch

    cls = pipeline_class(config.class_name)
    from diffusers.pipelines import pipeline_utils

    # diffusers renamed `torch_dtype` to `dtype` (0.36+); older releases only know the former.
    dtype_arg = "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
    kwargs: dict[str, Any] = {dtype_arg: getattr(torch, target.dtype)}
    if config.revision:
        kwargs["revision"] = config.revision
    if config.variant:
        kwargs["variant"] = config.variant
    spec = config.model
    local = Path(spec).is_absolute() or not looks_like_hub_id(spec) or Path(spec).exists()
    if local:
        _check_model_folder(Path(spec))
    elif hub_offline():
        kwargs["local_files_only"] = True
    try:
        pipe = cls.from_pretrained(spec, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise _load_error(config, exc, local=local) from None
    if config.offload != "none" and target.device == "cpu":
        warnings.warn(GenerationWarning(f"pipeline.offload = {config.offload!r} ignored: the pipeline runs on the CPU"), stacklevel=2)
    elif config.offload == "model":
        pipe.enable_model_cpu_offload(device=target.device)
    elif config.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=target.device)
    else:
        pipe.to(target.device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def _check_model_folder(path: Path) -> None:
    if not path.exists():
        raise PipelineLoadError(
            f"base model folder not found: {path} (pipeline.model); point it at a diffusers model folder (the one "
            "holding model_index.json, e.g. from `hf download black-forest-labs/FLUX.1-dev --local-dir DIR`) or "
            "give a hub id such as 'black-forest-labs/FLUX.1-dev'"
        )
    if path.is_file():
        raise PipelineLoadError(
            f"pipeline.model = {path} is a file; lora-harness loads diffusers model folders (model_index.json plus "
            "one folder per component), not single-file checkpoints; use the diffusers-format repository"
        )
    if not (path / "model_index.json").is_file():
        raise PipelineLoadError(
            f"{path} has no model_index.json, so it is not a diffusers pipeline folder; point pipeline.model at "
            "the folder `save_pretrained` / `hf download` wrote"
        )


def _load_error(config: PipelineConfig, exc: BaseException, *, local: bool) -> PipelineLoadError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = first if len(first) <= 300 else first[:300] + "..."
    if local:
        return PipelineLoadError(
            f"cannot load {config.class_name} from {config.model}: {type(exc).__name__}: {first}; check that the "
            "folder is complete and matches pipeline.class_name"
        )
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as cache_dir
    except ImportError:  # pragma: no cover
        cache_dir = "~/.cache/huggingface/hub"
    why = (
        "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
        if hub_offline()
        else "it is not in the local Hugging Face cache and the hub could not be reached"
    )
    return PipelineLoadError(
        f"cannot load base model {config.model!r} from the Hugging Face hub: {why} ({cache_dir}); {first}. "
        f"Point at a local copy: download it once where there is network (`hf download {config.model} "
        f"--local-dir /models/{config.model.split('/')[-1]}`), then set `[pipeline] model = \"/models/"
        f"{config.model.split('/')[-1]}\"` in the config (or copy the Hugging Face cache and set HF_HOME)"
    )


# --- one call --------------------------------------------------------------------------------------------------


def call_arguments(pipe: Any, *, prompt: str, negative: str | None, width: int | None, height: int | None,
                   steps: int | None, guidance: float | None, cfg_scale: float | None, generator: Any) -> tuple[dict[str, Any], list[str]]:
    """Keyword arguments for `pipe(...)` from the case's settings, mapped onto what this pipeline accepts.

    FLUX has a distilled guidance (`guidance_scale`, kohya --g) and a true CFG (`true_cfg_scale`, kohya --l,
    used with the negative prompt); classic pipelines have one CFG scale (`guidance_scale`). Settings the
    pipeline has no parameter for are returned as `ignored` so the caller can warn once.
    """
    params = inspect.signature(type(pipe).__call__).parameters
    kwargs: dict[str, Any] = {"prompt": prompt, "generator": generator, "output_type": "pil"}
    wanted = {"width": width, "height": height, "num_inference_steps": steps, "negative_prompt": negative}
    if "true_cfg_scale" in params:
        wanted.update(guidance_scale=guidance, true_cfg_scale=cfg_scale)
    else:
        wanted["guidance_scale"] = cfg_scale if cfg_scale is not None else guidance
    ignored = []
    for name, value in wanted.items():
        if value is None:
            continue
        if name in params:
            kwargs[name] = value
        else:
            ignored.append(name)
    return kwargs, ignored
