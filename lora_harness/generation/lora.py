"""Loading LoRA checkpoints into a pipeline safely, and switching between them without reloading the model.

diffusers' `load_lora_weights` reads diffusers/peft, kohya and ai-toolkit formats, but some failures are
silent (checked on diffusers 0.42, see ../shared/notes/tiny-flux.md):
- keys without the `transformer.` prefix load as a no-op (a warning; no adapter attached);
- a LoRA with wider inputs than the model *expands* the base layers (Control-LoRA logic), after which
  inference fails and unloading does not restore the pipeline; narrower inputs are zero-padded;
- pickle files (.pt/.ckpt/.bin) go through torch.load, i.e. can run code.
So every file is checked before diffusers sees it: suffix, readable safetensors header, and each LoRA
module's shape against the model module it targets (using diffusers' own key conversion,
`lora_state_dict`, which does not touch the model). After loading, the adapter must be attached.

Switching: the manager keeps one active adapter. A new checkpoint of the same sweep is hot-swapped into the
existing adapter in place (`hotswap=True`; no new layers are injected) only when that is exact: same target
modules, same rank per module, same alphas and same stored peft config. peft's hot-swap copies weights but
the scaling (alpha / rank) stays the first adapter's (`set_adapters` recomputes it from the old config), which
gave images up to 65 grey levels off for LoRAs with other alphas. Otherwise the old adapter is deleted and the
new one loaded under a fresh name. `clear()` deletes every adapter (the outputs
equal the base model's again), `unload()` also removes the injected LoRA layers.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from lora_harness.generation.errors import LoraFileError, LoraMismatchError, LoraNoEffectError
from lora_harness.sources.generate import GenerateSourceError, check_suffix, file_problem

log = logging.getLogger("lora_harness.generation")

# `<component>.<module path>.<lora_A|lora_B|lora.down|lora.up|lora_down|lora_up>[.<adapter>].weight`
_LORA_KEY = re.compile(
    r"^(?P<component>[^.]+)\.(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora\.down|lora\.up|lora_down|lora_up)"
    r"(?:\.[^.]+)?\.weight$"
)
_DOWN_PARTS = ("lora_A", "lora.down", "lora_down")
_EXAMPLES = 5
# peft config fields (as diffusers stores them in `lora_adapter_metadata`) that change a module's scaling.
_SCALING_FIELDS = ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora")


def check_lora_file(path: Path) -> dict[str, str]:
    """Refuse what must not or cannot be loaded; return the safetensors metadata of a usable file."""
    path = Path(path)
    try:
        check_suffix(path)
    except GenerateSourceError as exc:
        raise LoraFileError(str(exc)) from None
    if not path.is_file():
        raise LoraFileError(f"LoRA file not found: {path}")
    problem = file_problem(path)  # header and size only: names truncation, pickles, LFS pointers
    if problem:
        raise LoraFileError(f"{path}: not a readable safetensors file: {problem}")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = dict(handle.metadata() or {})
            if not list(handle.keys()):
                raise LoraFileError(f"{path}: a valid safetensors file without any tensor; not a LoRA")
    except LoraFileError:
        raise
    except Exception as exc:  # SafetensorError and OSError
        raise LoraFileError(
            f"{path}: not a readable safetensors file ({exc}); it is truncated or corrupt (an interrupted download "
            "or save): re-export or re-download it"
        ) from None
    return metadata


def raw_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return list(handle.keys())


def guess_architecture(keys: Iterable[str]) -> str | None:
    """A human name for the model family a LoRA's raw keys were trained for (for error messages)."""
    text = " ".join(keys)
    if re.search(r"input_blocks|output_blocks|down_blocks|up_blocks|mid_block|middle_block", text):
        return "an SDXL" if re.search(r"lora_te2_|text_encoder_2|conditioner_embedders_1", text) else "a Stable Diffusion (UNet)"
    if re.search(r"double_blocks|single_blocks|single_transformer_blocks", text):
        return "a FLUX"
    if re.search(r"joint_blocks", text):
        return "a Stable Diffusion 3"
    return None


@dataclass(frozen=True)
class LoraLayout:
    """What a LoRA file puts where, as diffusers converts it (the model is untouched).

    `modules`: `component.module -> {"down": shape, "up": shape}`; `alphas`: the file's per-module alpha
    (peft/diffusers files with `.alpha` keys; kohya's alphas are folded into the weights by the converter, so
    they are absent); `metadata`: the peft config diffusers stored in the file (`lora_adapter_metadata`), which
    sets rank and alpha patterns. `zero_delta`: every module's up @ down (times alpha) is zero, so the LoRA
    cannot change the image.
    """

    modules: dict[str, dict[str, tuple[int, ...]]]
    alphas: dict[str, float]
    metadata: str | None
    zero_delta: bool

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(self.modules)

    @property
    def swap_signature(self) -> tuple:
        """Everything that fixes each module's scaling besides the weights: equal signatures hot-swap exactly.

        peft's hot-swap copies the new weights but its scaling comes from the adapter config it was first
        loaded with (`set_adapters` recomputes `scale * lora_alpha / r` from the old config), so two LoRAs with
        other alphas, ranks or stored configs must be replaced, not swapped.
        """
        ranks = tuple(sorted((name, shapes.get("down", (0,))[0]) for name, shapes in self.modules.items()))
        return ranks, tuple(sorted(self.alphas.items())), self.metadata


def lora_layout(pipe: Any, path: Path) -> LoraLayout:
    """diffusers' own conversion of the file: targets and shapes, alphas, stored config, and a zero-delta check."""
    try:
        try:
            result = type(pipe).lora_state_dict(str(path), return_alphas=True, return_lora_metadata=True)
        except TypeError as exc:  # an older diffusers without return_alphas / return_lora_metadata
            if "unexpected keyword" not in str(exc):
                raise
            result = type(pipe).lora_state_dict(str(path))
    except Exception as exc:  # kohya/xlabs converters raise ValueError/KeyError on keys of other architectures
        raise _unmappable(pipe, path, exc) from None
    parts = list(result) if isinstance(result, tuple) else [result]
    state = parts[0]
    alphas_raw = parts[1] if len(parts) > 1 and isinstance(parts[1], dict) else {}
    metadata = parts[2] if len(parts) > 2 else None
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    tensors: dict[str, dict[str, Any]] = {}
    alphas: dict[str, float] = {}
    for key, value in list(state.items()) + list((alphas_raw or {}).items()):
        if key.endswith(".alpha"):
            alphas[key[: -len(".alpha")]] = float(value)
            continue
        if "lora_magnitude_vector" in key:
            continue
        match = _LORA_KEY.match(key)
        if not match:
            continue
        part = "down" if match["part"] in _DOWN_PARTS else "up"
        name = f"{match['component']}.{match['module']}"
        modules.setdefault(name, {})[part] = tuple(value.shape)
        tensors.setdefault(name, {})[part] = value
    if not modules:
        arch = guess_architecture(raw_keys(path))
        raise LoraMismatchError(
            f"{path}: no LoRA weights recognized for {type(pipe).__name__}"
            + (f" (it looks like {arch} LoRA)" if arch else "")
            + f"; example keys: {', '.join(raw_keys(path)[:_EXAMPLES])}"
        )
    meta_text = None
    if metadata:  # only the fields that set scaling: a sweep's saves differ in e.g. target_modules order
        import json

        scaling = {k: v for k, v in metadata.items() if k.rsplit(".", 1)[-1] in _SCALING_FIELDS}
        meta_text = json.dumps(scaling, sort_keys=True, default=str)
    return LoraLayout(modules, alphas, meta_text, all(_zero_delta(t, alphas.get(n)) for n, t in tensors.items()))


def _zero_delta(parts: dict[str, Any], alpha: float | None) -> bool:
    """True when this module's LoRA adds nothing: alpha 0, or up @ down == 0.

    ||up @ down||_F^2 = sum((up^T up) * (down down^T)): two rank x rank products instead of the full
    out x in delta (a FLUX module's would be 3072 x 3072 per module, seconds per LoRA)."""
    if alpha == 0:
        return True
    down, up = parts.get("down"), parts.get("up")
    if down is None or up is None:
        return False
    down = down.float().reshape(down.shape[0], -1)
    up = up.float().reshape(up.shape[0], -1)
    if up.shape[1] != down.shape[0]:
        return not (bool(up.any()) and bool(down.any()))
    if not bool(up.any()) or not bool(down.any()):
        return True
    return not bool(((up.T @ up) * (down @ down.T)).sum() > 0)


def _unmappable(pipe: Any, path: Path, exc: BaseException) -> LoraMismatchError:
    arch = guess_architecture(raw_keys(path))
    hint = f"it looks like {arch} LoRA; " if arch else ""
    return LoraMismatchError(
        f"{path}: diffusers cannot map this LoRA onto {type(pipe).__name__} ({type(exc).__name__}: "
        f"{_first_line(exc)}); {hint}use a LoRA trained for this base model. Example keys: "
        f"{', '.join(raw_keys(path)[:_EXAMPLES])}"
    )


def validate_lora(pipe: Any, path: Path) -> LoraLayout:
    """Check every LoRA module against the model before loading; returns the file's layout.

    Errors name a few offending keys: modules the model does not have (another architecture, or keys missing
    the component prefix, which diffusers would silently ignore) and shapes that differ from the model's
    layers (which diffusers would silently expand or zero-pad), and a LoRA whose every module adds zero (all-zero
    up or down weights, or alpha 0): it would load silently and generate the base model's images under its name.
    """
    layout = lora_layout(pipe, path)
    modules = layout.modules
    components = getattr(pipe, "components", {}) or {}
    missing: list[str] = []
    wrong: list[str] = []
    for name, shapes in modules.items():
        component, _, module_path = name.partition(".")
        model = components.get(component) if component in components else None
        if model is None or not hasattr(model, "get_submodule"):
            missing.append(name)
            continue
        try:
            module = model.get_submodule(module_path)
        except AttributeError:
            missing.append(name)
            continue
        problem = _shape_problem(module, shapes)
        if problem:
            wrong.append(f"{name}: {problem}")
    if missing or wrong:
        raise LoraMismatchError(_mismatch_message(pipe, path, modules, missing, wrong))
    if layout.zero_delta:
        raise LoraNoEffectError(
            f"{path}: this LoRA changes nothing: all {len(modules)} module(s) have a zero delta (up @ down = 0 or "
            "alpha 0), so every image would equal the base model's; the save is broken (an untrained or "
            "zero-initialised checkpoint, e.g. saved before the first optimizer step): use a trained checkpoint"
        )
    return layout


def _shape_problem(module: Any, shapes: dict[str, tuple[int, ...]]) -> str | None:
    base = getattr(module, "base_layer", module)  # a layer that already carries a LoRA wraps the original
    in_features = getattr(base, "in_features", None) or getattr(base, "in_channels", None)
    out_features = getattr(base, "out_features", None) or getattr(base, "out_channels", None)
    if in_features is None or out_features is None:
        return None  # not a Linear/Conv layer: nothing to compare
    problems = []
    down, up = shapes.get("down"), shapes.get("up")
    if down is not None and len(down) >= 2 and down[1] != in_features:
        problems.append(f"LoRA input width {down[1]} != model layer's {in_features}")
    if up is not None and up[0] != out_features:
        problems.append(f"LoRA output width {up[0]} != model layer's {out_features}")
    return "; ".join(problems) or None


def _mismatch_message(pipe: Any, path: Path, modules: dict, missing: list[str], wrong: list[str]) -> str:
    model_name = type(getattr(pipe, "transformer", None) or getattr(pipe, "unet", None) or pipe).__name__
    lines = [f"{path}: LoRA does not fit {type(pipe).__name__} ({model_name}); {len(modules)} module(s) targeted:"]
    if missing:
        lines.append(f"  {len(missing)} module(s) not in the model, e.g. {', '.join(missing[:_EXAMPLES])}")
        components = ", ".join(f"'{c}.'" for c in (getattr(pipe, "components", {}) or {}) if "text_encoder" in c or c in ("transformer", "unet"))
        if all("." in m and m.split(".")[0] not in (getattr(pipe, "components", {}) or {}) for m in missing):
            lines.append(
                f"  the keys lack a component prefix ({components}); diffusers would silently load nothing. "
                "Re-save with the pipeline's save_lora_weights, or prefix the keys with 'transformer.'"
            )
    if wrong:
        lines.append(f"  {len(wrong)} module(s) with other widths than the model, e.g. {'; '.join(wrong[:_EXAMPLES])}")
        lines.append("  (diffusers would silently expand or zero-pad the model's layers)")
    arch = guess_architecture(raw_keys(path))
    lines.append(f"  it looks like {arch} LoRA; " if arch else "  ")
    lines[-1] += "use a LoRA trained for this base model (same architecture and size)"
    return "\n".join(lines)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# --- switching --------------------------------------------------------------------------------------------------


@dataclass
class ActiveLora:
    path: Path
    adapter: str  # the peft adapter name (stays the same across hot-swaps)
    scale: float
    modules: frozenset[str]  # `component.module` names it targets
    signature: tuple = ()  # LoraLayout.swap_signature: hot-swap only between equal signatures


class LoraManager:
    """The LoRA state of one pipeline: at most one active adapter, switched in place where possible."""

    def __init__(self, pipe: Any, *, hotswap: bool = True, on_event: Any = None) -> None:
        self.pipe = pipe
        if not hasattr(pipe, "load_lora_weights"):
            raise LoraMismatchError(f"{type(pipe).__name__} cannot load LoRA weights (it has no load_lora_weights)")
        self.hotswap_supported = hotswap and "hotswap" in inspect.signature(pipe.load_lora_weights).parameters
        self.active: ActiveLora | None = None
        self._counter = 0
        self._on_event = on_event or (lambda event, **fields: None)
        self.loads = 0  # fresh loads (new adapter layers)
        self.swaps = 0  # in-place hot-swaps

    def use(self, path: Path | None, scale: float = 1.0) -> ActiveLora | None:
        """Make `path` (None: no LoRA, the base model) the only active LoRA, at `scale`."""
        if path is None:
            self.clear()
            return None
        path = Path(path)
        if self.active is not None and self.active.path == path:
            self.set_scale(scale)
            return self.active
        check_lora_file(path)
        layout = validate_lora(self.pipe, path)
        modules, signature = layout.targets, layout.swap_signature
        started = time.perf_counter()
        mode = "load"
        swappable = (
            self.active is not None and self.hotswap_supported and self.active.modules == modules
            and self.active.signature == signature
        )
        if self.active is not None and self.hotswap_supported and self.active.modules == modules and not swappable:
            log.info("%s -> %s: other ranks, alphas or stored config; replacing the adapter (a hot-swap would keep "
                     "the old scaling)", self.active.path.name, path.name)
        if swappable and self._hotswap(path):
            mode = "hotswap"
            self.active = ActiveLora(path, self.active.adapter, scale, modules, signature)
        else:
            self.clear()
            self._counter += 1
            adapter = f"lora{self._counter}_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)[:40]}"
            self._load(path, adapter)
            self.active = ActiveLora(path, adapter, scale, modules, signature)
        self.pipe.set_adapters([self.active.adapter], adapter_weights=[scale])
        seconds = time.perf_counter() - started
        if mode == "hotswap":
            self.swaps += 1
        else:
            self.loads += 1
        self._on_event("lora", action=mode, file=str(path), adapter=self.active.adapter, scale=scale, seconds=round(seconds, 4))
        return self.active

    def set_scale(self, scale: float) -> None:
        if self.active is None:
            raise LoraMismatchError("no LoRA is active; call use(path) first")
        if scale != self.active.scale:
            self.pipe.set_adapters([self.active.adapter], adapter_weights=[scale])
            self.active.scale = scale

    def adapters(self) -> list[str]:
        """Adapter names attached to any component of the pipeline."""
        listed = self.pipe.get_list_adapters() if hasattr(self.pipe, "get_list_adapters") else {}
        return sorted({name for names in listed.values() for name in names})

    def clear(self) -> None:
        """Delete every adapter: the pipeline generates exactly what the base model does."""
        names = self.adapters()
        if names:
            self.pipe.delete_adapters(names)
        self.active = None

    def unload(self) -> None:
        """Remove adapters and the injected LoRA layers (`unload_lora_weights`): for a test that uses the
        `lora` fixture and then wants the model exactly as loaded."""
        self.pipe.unload_lora_weights()
        self.active = None

    def _load(self, path: Path, adapter: str) -> None:
        try:
            self.pipe.load_lora_weights(str(path), adapter_name=adapter)
        except Exception as exc:
            self._drop(adapter)
            raise LoraMismatchError(f"{path}: diffusers could not load it: {type(exc).__name__}: {_first_line(exc)}") from None
        if adapter not in self.adapters():
            raise LoraMismatchError(
                f"{path}: loading attached no adapter to {type(self.pipe).__name__}: none of its keys matched the "
                f"model (e.g. {', '.join(raw_keys(path)[:_EXAMPLES])}); use a LoRA trained for this base model"
            )

    def _hotswap(self, path: Path) -> bool:
        """Replace the active adapter's weights in place; False (adapter removed) when the LoRAs are not swappable."""
        assert self.active is not None
        try:
            self.pipe.load_lora_weights(str(path), adapter_name=self.active.adapter, hotswap=True)
            return True
        except Exception as exc:  # other target modules or ranks: fall back to delete + load
            log.info("hot-swap %s -> %s not possible (%s); reloading the adapter", self.active.path.name, path.name, _first_line(exc))
            self._drop(self.active.adapter)
            self.active = None
            return False

    def _drop(self, adapter: str) -> None:
        if adapter in self.adapters():
            self.pipe.delete_adapters([adapter])
