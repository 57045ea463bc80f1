"""Loading the models that embedding judges run: where they come from, which device, once per process.

Judges name a model as a local folder (what `save_pretrained` writes) or a Hugging Face hub id. Model
weights are large and often absent (offline CI, air-gapped machines), so everything here separates two
kinds of failure:

* `ModelUnavailable`: the environment lacks something (a package, a downloaded model, a GPU). The harness
  records the judge's metrics as missing with this message and skips the tests they gate: the message says
  exactly what to install or download.
* any other exception (`ModelError`, a ValueError): the configuration is wrong (a folder that holds the
  wrong kind of model, a bad device name). That fails the cases, because skipping would hide a mistake.

This module imports neither torch nor transformers at import time: `import lora_harness` stays cheap and
works without the `embed` extra. Loaded models are cached per process (one copy per xdist worker), keyed
by what was loaded, how, and on which device, so two judges sharing a backbone share its weights.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

__all__ = [
    "UNAVAILABLE_KEY",
    "ModelError",
    "ModelSource",
    "ModelUnavailable",
    "cached",
    "cached_snapshot",
    "hub_cache_dir",
    "describe_model",
    "load_auto_model",
    "load_processor",
    "check_device_spec",
    "apply_cpu_threads",
    "check_dtype_spec",
    "check_threads_spec",
    "clear_cache",
    "hub_offline",
    "load_pretrained",
    "require",
    "resolve_device",
    "resolve_source",
    "torch_dtype",
]

# Score.raw key that marks a metric as missing because its judge could not run in this environment.
UNAVAILABLE_KEY = "unavailable"

EMBED_EXTRA = "pip install 'lora-harness[embed]'  (torch, transformers, torchmetrics)"


class ModelUnavailable(RuntimeError):
    """A model or package a judge needs is not present here; the message says what to install/download.

    Raised by a judge at its first use (never at construction, so collecting tests stays cheap). The harness
    turns it into missing scores (`Score.raw[UNAVAILABLE_KEY]`) and the tests they gate into skips.
    """


class ModelError(ValueError):
    """The configured model exists but cannot serve this judge (wrong kind of model, broken folder)."""


T = TypeVar("T")


# --- packages ----------------------------------------------------------------------------------------------


def require(module: str, *, judge: str, install: str = EMBED_EXTRA) -> Any:
    """Import `module` or raise ModelUnavailable naming the judge and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelUnavailable(f"{judge} needs the Python package {module!r} ({exc}); install it: {install}") from None


# --- devices -----------------------------------------------------------------------------------------------

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_spec(device: str, *, judge: str) -> str:
    """Validate a device option without importing torch (judges call this at construction)."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ValueError(
            f"{judge} option 'device' = {device!r} is invalid: expected 'cpu', 'auto' (cuda when available, "
            f"else cpu), 'cuda', 'cuda:N' or 'mps'"
        )
    return device


def resolve_device(device: str, *, judge: str) -> str:
    """The torch device string to run on; ModelUnavailable when the requested accelerator is absent."""
    check_device_spec(device, judge=judge)
    torch = require("torch", judge=judge)
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelUnavailable(
                f"{judge}: device {device!r} requested but torch sees no CUDA GPU (torch {torch.__version__}); "
                f"set the judge option device = 'auto' or 'cpu', or run on a machine with a GPU"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ModelUnavailable(
                f"{judge}: device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    if not torch.backends.mps.is_available():
        raise ModelUnavailable(f"{judge}: device 'mps' requested but this torch build has no usable MPS backend")
    return "mps"


# --- where a model comes from ------------------------------------------------------------------------------

# A hub id: "name" or "owner/name" made of letters, digits, '-', '_', '.'.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) is set to a true value.

    Read from the environment at every load instead of relying on huggingface_hub's import-time constant,
    so setting it after transformers was imported is honoured too.
    """
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@dataclass(frozen=True)
class ModelSource:
    """A resolved model reference: exactly one of `local` (an existing folder) or `hub_id` is set."""

    spec: str
    local: Path | None = None
    hub_id: str | None = None
    missing_folder: Path | None = None  # where `spec` would be as a folder (it is not there): for messages

    @property
    def key(self) -> str:
        return str(self.local) if self.local is not None else f"hub:{self.hub_id}"

    def describe(self) -> str:
        return f"folder {self.local}" if self.local is not None else f"hub model {self.hub_id!r}"


def resolve_source(spec: str, *, judge: str, option: str = "model", base_dir: Path | None = None) -> ModelSource:
    """Decide whether `spec` is a local folder or a hub id, with errors that say how to fix either.

    An existing path always wins (so a folder named like a hub id works). A spec that looks like a path
    (absolute, `./`, `~`, more than one `/`) but does not exist is a missing download: ModelUnavailable.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{judge} option {option!r} = {spec!r} is invalid: expected a model folder or a hub id")
    spec = spec.strip()
    path = Path(spec).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"{judge} option {option!r} = {spec!r} is a file; point it at the model folder (the one "
                f"holding config.json, as written by save_pretrained), not at a weights file"
            )
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{judge} option {option!r}: folder {path} has no config.json, so it is not a transformers "
                f"model folder; save the model there with model.save_pretrained(...) and "
                f"processor.save_pretrained(...), or use a hub id"
            )
        return ModelSource(spec, local=path.resolve())
    looks_like_path = spec.startswith((".", "/", "~", "\\")) or spec.count("/") > 1 or "\\" in spec
    if looks_like_path or not _HUB_ID_RE.match(spec):
        raise ModelUnavailable(
            f"{judge}: model folder {str(path)!r} (option {option!r}) does not exist; download the model "
            f"there (e.g. `hf download <hub id> --local-dir {path}`) or set {option!r} to a hub id"
        )
    return ModelSource(spec, hub_id=spec, missing_folder=path.resolve())


def load_pretrained(
    loader: Callable[..., T],
    source: ModelSource,
    *,
    judge: str,
    what: str,
    **kwargs: Any,
) -> T:
    """Call `loader(target, **kwargs)` (a transformers `from_pretrained`) with clear errors.

    A hub id already in the local Hugging Face cache loads from its cached snapshot folder, with no network
    request at all (transformers 5 still sends some requests with `local_files_only`, and retries them for
    ~25 s when there is no network). Not cached: offline (HF_HUB_OFFLINE) that is ModelUnavailable with the
    download command; online, transformers downloads it. Other failures of a local folder are ModelError
    naming the folder and what was being loaded.
    """
    target = str(source.local) if source.local is not None else source.hub_id
    if source.hub_id is not None:
        snapshot = cached_snapshot(source.hub_id)
        if snapshot is not None:
            target = str(snapshot)
        elif hub_offline():
            raise ModelUnavailable(
                f"{judge}: hub model {source.hub_id!r} is not in the Hugging Face cache ({hub_cache_dir()}) and "
                f"HF_HUB_OFFLINE is set; {_download_hint(source)}"
            )
    try:
        return loader(target, **kwargs)
    except OSError as exc:
        if source.hub_id is not None:
            raise ModelUnavailable(
                f"{judge}: cannot load {what} of hub model {source.hub_id!r} ({_first_line(exc)}); "
                f"{_download_hint(source)}"
            ) from None
        raise ModelError(f"{judge}: cannot load {what} from {source.describe()}: {_first_line(exc)}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{judge}: {source.describe()} cannot be loaded as {what}: {_first_line(exc)}"
        ) from None


def _download_hint(source: ModelSource) -> str:
    hint = (
        f"download it on a machine with network (`hf download {source.hub_id}`) and copy the Hugging Face "
        f"cache here, or save the model to a folder and set the judge's model option to that folder"
    )
    if source.missing_folder is not None:
        hint += f" (read as a hub id because no folder {source.missing_folder} exists)"
    return hint


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment at call time (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_snapshot(hub_id: str) -> Path | None:
    """The cached snapshot folder of `hub_id` (its `main` revision), or None when it is not cached."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        folder = Path(snapshot_download(hub_id, cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or an unreadable cache: let the loader decide
        return None
    return folder if (folder / "config.json").is_file() else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]


# --- one copy per process ----------------------------------------------------------------------------------

_CACHE: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.RLock()


def cached(key: tuple[Any, ...], factory: Callable[[], T]) -> T:
    """The process-wide instance for `key`, built by `factory` on first use.

    Failures are not cached here (judges remember their own), so a fixed environment is picked up by the
    next process. A lock keeps two threads of one process from loading the same weights twice.
    """
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = factory()
        return _CACHE[key]


def clear_cache() -> None:
    """Forget loaded models (tests, and long-lived processes that switch models)."""
    with _LOCK:
        _CACHE.clear()


def torch_dtype(name: str, *, judge: str) -> Any:
    """A torch dtype from its config name."""
    check_dtype_spec(name, judge=judge)
    return getattr(require("torch", judge=judge), name)


def check_dtype_spec(name: str, *, judge: str) -> str:
    """Validate a dtype option without importing torch."""
    if name not in DTYPES:
        raise ValueError(f"{judge} option 'dtype' = {name!r} is invalid: expected one of {', '.join(DTYPES)}")
    return name


DTYPES = ("float32", "float16", "bfloat16")


# --- transformers models -----------------------------------------------------------------------------------


def load_auto_model(source: ModelSource, *, device: str, dtype: str, judge: str) -> Any:
    """`AutoModel.from_pretrained` once per process and device, in eval mode; judges check its kind."""

    def build() -> Any:
        transformers = require("transformers", judge=judge)
        model = load_pretrained(transformers.AutoModel.from_pretrained, source, judge=judge, what="a model")
        return model.to(device=device, dtype=torch_dtype(dtype, judge=judge)).eval()

    return cached(("auto-model", source.key, device, dtype), build)


def load_processor(source: ModelSource, *, judge: str, kind: str = "processor") -> Any:
    """`AutoProcessor` (text + images) or `AutoImageProcessor` (`kind="image"`), once per process."""
    transformers = require("transformers", judge=judge)
    if kind == "image":
        loader, what = transformers.AutoImageProcessor.from_pretrained, "an image processor"
    else:
        loader, what = transformers.AutoProcessor.from_pretrained, "a processor (tokenizer + image processor)"
    return cached((kind, source.key), lambda: load_pretrained(loader, source, judge=judge, what=what))


def describe_model(model: Any) -> str:
    """`CLIPModel (model_type 'clip')`: for messages about a model of the wrong kind."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return f"{type(model).__name__} (model_type {model_type!r})"


# --- CPU threads -------------------------------------------------------------------------------------------


def check_threads_spec(threads: Any, *, judge: str) -> int | str:
    """`"auto"` or an integer >= 0 (0: leave torch's setting alone)."""
    if threads == "auto" or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 0):
        return threads
    raise ValueError(f"{judge} option 'threads' = {threads!r} is invalid: expected 'auto' or an integer >= 0")


def apply_cpu_threads(threads: int | str, *, worker_count: int, judge: str) -> int | None:
    """Set torch's intra-op threads for CPU inference; returns the number set, or None when left alone.

    Each xdist worker is its own process with torch's default of one thread per core, so `-n 4` on a
    4-core machine runs 16 threads that spin against each other: small models then run several times
    slower. `"auto"` gives each worker its share (cores // workers, at least 1) when there is more than
    one worker, and leaves a single process alone.
    """
    if threads == 0 or (threads == "auto" and worker_count <= 1):
        return None
    torch = require("torch", judge=judge)
    count = threads if isinstance(threads, int) else max(1, (os.cpu_count() or 1) // max(1, worker_count))
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
