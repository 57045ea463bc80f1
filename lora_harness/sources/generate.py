"""Generate sources: LoRA checkpoints x prompts x seeds, each one case whose image the harness generates.

A source names LoRA files, a list of them, or a training output folder. kohya sd-scripts (and fluxgym, which
runs it) saves `<name>-<epoch:06d>.safetensors` every N epochs, `<name>-step<step:08d>.safetensors` every N
steps and `<name>.safetensors` at the end; ai-toolkit saves `<name>_<step:09d>.safetensors`. Each file is one
checkpoint of a sweep, its epoch or step the case's `training_step`. The final file's step comes from the
`ss_epoch` / `ss_steps` metadata kohya writes into it.

Cases are cheap records made at collection (no torch, no diffusers); `image_path` is where the image will be
cached (`reports/<run>/images/<lora>/<lora>_<step>_<prompt>_<seed>.png`), and `lora_harness.generation`
makes it when a test first needs it. Precedence of generation settings: the source's keys, then the prompt
file's inline options (`--w --h --d --s --l --g --n`), then the pipeline's own defaults.
"""

from __future__ import annotations

import json
import re
import struct
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from lora_harness.core.cases import CaseRole, EvalCase, Prompt, StepKind, checkpoint_order, safe_id
from lora_harness.core.prompts import parse_prompt_lines, read_prompt_file
from lora_harness.sources.base import SourceBase

if TYPE_CHECKING:  # core.config imports the source kinds: no runtime import back
    from lora_harness.core.config import EvalConfig

DEFAULT_SEED = 42
BASE_MODEL_NAME = "base-model"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")
IMAGES_DIRNAME = "images"

# kohya: <name>-<epoch:06d> and <name>-step<step:08d>; ai-toolkit: <name>_<step:09d>.
_EPOCH_FILE = re.compile(r"^(?P<name>.+)-(?P<n>\d{6})$")
_STEP_FILE = re.compile(r"^(?P<name>.+)-step(?P<n>\d{8})$")
_AITOOLKIT_FILE = re.compile(r"^(?P<name>.+)_(?P<n>\d{9})$")


class GenerateSourceError(ValueError):
    pass


class GenerateSource(SourceBase):
    """`[[sources]] kind = "generate"`: images generated from LoRA checkpoints with the `[pipeline]`."""

    generates: ClassVar[bool] = True
    description: ClassVar[str] = "images generated from LoRA checkpoints"

    kind: Literal["generate"]
    lora: list[Path] = Field(min_length=1)  # LoRA file(s) and/or training output folder(s)
    prompts: Path | list[str]  # a kohya sample_prompts.txt, or the prompts inline (kohya options allowed)
    name: str | None = None  # variant label; defaults to the LoRA name
    loraname: str | None = None  # overrides the name parsed from the file names
    seeds: list[int] | None = None  # default: each prompt's --d, else 42
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)
    guidance: float | None = None  # FLUX distilled guidance (kohya --g); CFG scale for other pipelines
    cfg_scale: float | None = None  # true CFG (kohya --l); FLUX: true_cfg_scale with the negative prompt
    negative: str | None = None
    scale: float = 1.0  # LoRA strength
    baseline: Literal["none"] | Path | None = None  # the base model ("none") or a LoRA file, same settings
    baseline_name: str | None = None  # case name of the baseline; default "base-model" or the file's name
    final_step: int | None = Field(None, ge=0)  # step of `<name>.safetensors` when it carries no metadata
    final_kind: Literal["step", "epoch"] | None = None  # label kind of final_step (default: the sweep's kind)

    @field_validator("lora", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, Path)) else value

    @field_validator("prompts")
    @classmethod
    def _some_prompts(cls, value: Path | list[str]) -> Path | list[str]:
        if isinstance(value, list) and not any(text.strip() for text in value):
            raise ValueError("no prompts: give a list of prompt texts or the path of a sample_prompts.txt")
        return value

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("seeds must be a non-empty list without repeats")
        return value

    @model_validator(mode="after")
    def _baseline_name_needs_baseline(self) -> "GenerateSource":
        if self.baseline_name is not None and self.baseline is None:
            raise ValueError("baseline_name is set but baseline is not; add baseline = \"none\" or a LoRA file")
        return self

    @property
    def baseline_is_base_model(self) -> bool:
        return self.baseline == "none"

    def resolved(self, resolve: Callable[[Path | None], Path | None]) -> "GenerateSource":
        """Paths relative to the config file made absolute (`baseline = "none"` is a keyword, not a path)."""
        return self.model_copy(
            update={
                "lora": [resolve(p) for p in self.lora],
                "prompts": resolve(self.prompts) if isinstance(self.prompts, Path) else self.prompts,
                "baseline": resolve(self.baseline) if isinstance(self.baseline, Path) else self.baseline,
            }
        )

    def cases(self, config: EvalConfig) -> list[EvalCase]:
        return list(collect_generate_cases(self, run_dir=config.run_dir))

    def label(self) -> str:
        shown = str(self.lora[0]) if len(self.lora) == 1 else ", ".join(str(p) for p in self.lora)
        return f"lora = '{shown}'"

    def baseline_names(self) -> frozenset[str]:
        """The baseline's case name. A baseline file that cannot be read (moved since the run) gives none:
        its cases then gate like any checkpoint, which errs on the strict side."""
        if self.baseline is not None and self.baseline_name:
            return frozenset({self.baseline_name})  # named in the config: no need to read the file
        try:
            baseline = baseline_of(self)
        except (OSError, ValueError):  # GenerateSourceError is a ValueError
            return frozenset()
        return frozenset() if baseline is None else frozenset({baseline[1]})


@dataclass(frozen=True)
class GeneratedCase(EvalCase):
    """A case whose image is generated: the LoRA file (None: the base model) and its strength.

    The effective generation settings are in `prompt` (width, height, steps, guidance, cfg_scale, negative)
    and `seed`, so reports show exactly what the image was asked for.
    """

    lora: Path | None = None
    lora_scale: float = 1.0


@dataclass(frozen=True)
class LoraCheckpoint:
    path: Path
    loraname: str
    training_step: int
    step_kind: StepKind
    # Why the file could not be read at collection (truncated, still being written, a pickle, ...): its cases
    # are still collected, under a provisional label, and fail when generated with the loader's reason.
    problem: str | None = None


# --- LoRA files -> checkpoints -------------------------------------------------------------------------------


def find_checkpoints(
    entries: list[Path], *, final_step: int | None = None, final_kind: StepKind | None = None
) -> list[LoraCheckpoint]:
    """Files and training folders as checkpoints, with their step parsed from kohya / ai-toolkit names.

    A final `<name>.safetensors` takes the label kind of its sweep: the numbered files listed with it, or,
    when it is given alone (the training hook evaluates one file at a time), its siblings in the same
    folder (names only, nothing is read), so one kohya run never mixes epoch and step labels.
    """
    files: list[Path] = []
    for entry in entries:
        files.extend(_lora_files(entry))
    parsed = [(path, *_parse_name(path.stem)) for path in files]
    by_name: dict[str, list[tuple[Path, str, int | None, StepKind | None]]] = {}
    for item in parsed:
        by_name.setdefault(item[1], []).append(item)
    checkpoints: dict[tuple[str, str, int], LoraCheckpoint] = {}
    for name, items in by_name.items():
        kinds = {kind for _, _, _, kind in items if kind is not None}
        if not kinds:  # only final file(s): the folder's other checkpoints of the same name tell the kind
            kinds = _sibling_kinds(items[0][0], name)
        numbers = [n for _, _, n, k in items if n is not None]
        for path, _, number, kind in items:
            problem = None
            if number is None:  # the final `<name>.safetensors`
                try:
                    number, kind = _final_step(path, sweep_kinds=kinds, final_step=final_step, alone=len(items) == 1,
                                               final_kind=final_kind)
                except UnreadableLoraError as exc:  # label it after the sweep; its cases fail with the reason
                    problem = str(exc)
                    kind = final_kind or ("epoch" if kinds == {"epoch"} else "step")
                    number = final_step if final_step is not None else (max(numbers) + 1 if numbers else 0)
            ckpt = LoraCheckpoint(path, name, number, kind, problem)  # type: ignore[arg-type]
            other = checkpoints.get((name, kind, number))  # type: ignore[arg-type]
            if other is not None and other.path != path:
                if _same_weights(other.path, path):
                    continue  # kohya's last numbered save and the final file can hold the same weights
                broken = [c for c in (other, ckpt) if file_problem(c.path)]
                if len(broken) == 1:  # a half-written copy of the same checkpoint: the complete file serves it
                    checkpoints[(name, kind, number)] = other if broken[0] is ckpt else ckpt  # type: ignore[index]
                    continue
                raise GenerateSourceError(
                    f"two different LoRA files claim {name} {kind} {number}: {other.path} and {path}; "
                    "remove one from `lora`, or set `final_step` on the source if the final file's metadata is wrong"
                )
            checkpoints[(name, kind, number)] = ckpt  # type: ignore[index]
    return sorted(checkpoints.values(), key=checkpoint_order)


def _sibling_kinds(path: Path, name: str) -> set[Any]:
    """Label kinds of the numbered checkpoints named `name` next to `path` (file names only)."""
    try:
        siblings = [p for p in path.parent.iterdir() if p.suffix.lower() == ".safetensors" and p != path]
    except OSError:
        return set()
    kinds = set()
    for sibling in siblings:
        other, number, kind = _parse_name(sibling.stem)
        if other == name and number is not None:
            kinds.add(kind)
    return kinds


def _lora_files(entry: Path) -> list[Path]:
    if not entry.exists():
        raise GenerateSourceError(f"LoRA file or folder not found: {entry}; check `lora` of the generate source")
    if entry.is_file():
        check_suffix(entry)
        return [entry]
    found = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() == ".safetensors")
    if found:
        return found
    pickles = sorted(p.name for p in entry.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        check_suffix(entry / pickles[0])
    raise GenerateSourceError(
        f"no *.safetensors LoRA files in {entry}; point `lora` at the training output folder (kohya's "
        "--output_dir) or list the files"
    )


def check_suffix(path: Path) -> None:
    """Only safetensors: pickle formats execute code when loaded, so they are refused before anything reads them."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return
    if suffix in PICKLE_SUFFIXES:
        raise GenerateSourceError(
            f"{path}: {suffix} is a pickle format, which can run arbitrary code when loaded, so lora-harness "
            "refuses it; save the LoRA as .safetensors (kohya: --save_model_as safetensors) or convert it "
            "once in a trusted environment (safetensors.torch.save_file(torch.load(path, weights_only=True), "
            "'lora.safetensors'))"
        )
    raise GenerateSourceError(f"{path}: not a LoRA file (expected *.safetensors, got {suffix or 'no suffix'!r})")


def _parse_name(stem: str) -> tuple[str, int | None, StepKind | None]:
    for pattern, kind in ((_STEP_FILE, "step"), (_EPOCH_FILE, "epoch"), (_AITOOLKIT_FILE, "step")):
        match = pattern.match(stem)
        if match:
            return match["name"], int(match["n"]), kind  # type: ignore[return-value]
    return stem, None, None


class UnreadableLoraError(GenerateSourceError):
    """A checkpoint file that cannot be read (truncated, still being written, a pickle, an LFS pointer)."""


# A file modified this recently may still be being written by the trainer.
RECENT_WRITE_SECONDS = 120.0


def file_problem(path: Path) -> str | None:
    """What is wrong with a `.safetensors` file, read from its first bytes and header only (no tensor, no torch).

    None for a complete safetensors file. Otherwise a reason a person can act on: empty, a Git LFS pointer, a
    pickle (or torch.save zip) merely named .safetensors, or truncated (the header promises more bytes than
    the file has), with a hint when it was modified in the last two minutes (a save still in progress).
    """
    try:
        stat = path.stat()
        with open(path, "rb") as handle:
            head = handle.read(8)
            size = stat.st_size
            if size == 0:
                return "empty file (0 bytes); the save was interrupted or has not started writing yet" + _recent(stat)
            if head.startswith(b"version "):
                return f"a Git LFS pointer ({size} bytes), not the weights; run `git lfs pull` or download the file itself"
            if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
                return (
                    "a pickle (torch.save) file named .safetensors, not safetensors; pickles can run code when loaded, "
                    "so it is refused: convert it once in a trusted environment (safetensors.torch.save_file)"
                )
            if len(head) < 8:
                return f"truncated: {size} bytes, shorter than a safetensors header" + _recent(stat)
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return f"truncated inside its header ({size} bytes, header of {length} bytes)" + _recent(stat)
            header = json.loads(handle.read(length))
    except OSError as exc:
        return f"cannot be read ({exc})"
    except (ValueError, UnicodeDecodeError):
        return "not a safetensors file (its header is not JSON): corrupt, or another format renamed .safetensors"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return f"truncated: its header promises {expected} bytes, the file has {size}" + _recent(stat)
    return None


def _recent(stat: Any) -> str:
    age = time.time() - stat.st_mtime
    if age < RECENT_WRITE_SECONDS:
        return f"; modified {age:.0f} s ago, so it is probably still being written: rerun when the save has finished"
    return "; an interrupted save or download: re-export or re-download it"


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata (kohya's `ss_*` keys), read without loading any tensor."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors comes with the `generate` extra
        raise GenerateSourceError("generation needs the `safetensors` package: pip install 'lora-harness[generate]'") from None
    problem = file_problem(path)
    if problem:
        raise UnreadableLoraError(f"{path}: cannot read the safetensors header: {problem}")
    try:
        with safe_open(str(path), framework="np") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # SafetensorError, OSError
        raise UnreadableLoraError(
            f"{path}: cannot read the safetensors header ({exc}); the file is corrupt, truncated or still "
            "being written; re-export or re-download it, or remove it from `lora`"
        ) from None


def _final_step(path: Path, *, sweep_kinds: set[Any], final_step: int | None, alone: bool,
                final_kind: StepKind | None = None) -> tuple[int, StepKind]:
    """The label of a final `<name>.safetensors`: `final_step` (and `final_kind`) when given, else kohya's
    metadata in the sweep's kind (epoch files: ss_epoch; step files: ss_steps; no sweep: ss_epoch before
    ss_steps), else 0 for a lone file."""
    if final_step is not None:  # given: nothing needs reading
        return final_step, final_kind or ("epoch" if sweep_kinds == {"epoch"} else "step")
    meta = read_metadata(path)
    epoch, steps = _int(meta.get("ss_epoch")), _int(meta.get("ss_steps"))
    if sweep_kinds == {"epoch"} and epoch is not None:
        return epoch, "epoch"
    if sweep_kinds == {"step"} and steps is not None:
        return steps, "step"
    if not sweep_kinds and epoch is not None:
        return epoch, "epoch"
    if not sweep_kinds and steps is not None:
        return steps, "step"
    if alone:
        return 0, "step"
    raise GenerateSourceError(
        f"{path}: cannot tell at which step this final checkpoint was saved (no kohya ss_epoch/ss_steps metadata "
        f"matching the sweep's {'/'.join(sorted(sweep_kinds))} files); set `final_step = N` on the source"
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _same_weights(a: Path, b: Path) -> bool:
    """Same tensors (names, shapes, bytes), whatever the `__metadata__` says (kohya's differs per save);
    False when either cannot be read."""
    try:
        return _weights_digest(a) == _weights_digest(b)
    except (OSError, ValueError, struct.error):
        return False


def _weights_digest(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        header.pop("__metadata__", None)
        digest.update(json.dumps(header, sort_keys=True).encode())
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- prompts and cases ---------------------------------------------------------------------------------------


def source_prompts(source: GenerateSource) -> list[Prompt]:
    """The source's prompts with kohya ids ("00", "01", ...), its settings applied over each prompt's options."""
    if isinstance(source.prompts, Path):
        prompts = read_prompt_file(source.prompts)
    else:
        prompts = parse_prompt_lines(source.prompts, source="prompts")  # kohya's rules, as for a file
    overrides = {
        "width": source.width, "height": source.height, "steps": source.steps, "guidance": source.guidance,
        "cfg_scale": source.cfg_scale, "negative": source.negative,
    }
    return [replace(p, **{k: v for k, v in overrides.items() if v is not None}) for p in prompts]


def image_path(run_dir: Path, loraname: str, step_label: str, prompt_id: str, seed: int) -> Path:
    """kohya-style sample name (no timestamp: the path must be known before the image exists)."""
    name = safe_id(loraname)
    return run_dir / IMAGES_DIRNAME / name / f"{name}_{step_label}_{prompt_id}_{seed}.png"


def baseline_of(source: GenerateSource) -> tuple[LoraCheckpoint | None, str] | None:
    """The source's baseline: its LoRA file (None for the base model) and the LoRA name its cases carry."""
    if source.baseline is None:
        return None
    if source.baseline_is_base_model:
        return None, source.baseline_name or BASE_MODEL_NAME
    if source.baseline.is_dir():  # type: ignore[union-attr]
        raise GenerateSourceError(
            f"baseline {source.baseline} is a folder; give one .safetensors file or \"none\" (the base model)"
        )
    (base,) = find_checkpoints([source.baseline])  # type: ignore[list-item]
    return base, source.baseline_name or base.loraname


def collect_generate_cases(source: GenerateSource, *, run_dir: Path) -> list[GeneratedCase]:
    """One case per (checkpoint, prompt, seed), plus the baseline's cases on the same prompts and seeds."""
    checkpoints = find_checkpoints(source.lora, final_step=source.final_step, final_kind=source.final_kind)
    if source.loraname:
        checkpoints = [replace(c, loraname=source.loraname) for c in checkpoints]
        seen: dict[tuple[str, int], Path] = {}
        for c in checkpoints:
            other = seen.setdefault((c.step_kind, c.training_step), c.path)
            if other != c.path:
                raise GenerateSourceError(
                    f"`loraname = {source.loraname!r}` gives {other.name} and {c.path.name} the same name and "
                    f"{c.step_kind} {c.training_step}; drop `loraname` or list files of one training run"
                )
    prompts = source_prompts(source)
    entries: list[tuple[LoraCheckpoint | None, str, CaseRole, dict[str, str]]] = [
        (c, c.loraname, "lora", {"lora_problem": c.problem} if c.problem else {}) for c in checkpoints
    ]
    baseline = baseline_of(source)
    if baseline is not None:
        base, name = baseline
        if name in {c.loraname for c in checkpoints}:
            raise GenerateSourceError(
                f"the baseline is named {name!r} like the LoRA under test; set `baseline_name` to tell them apart"
            )
        entries.append((base, name, "baseline", {"lora_problem": base.problem} if base and base.problem else {}))
    cases: list[GeneratedCase] = []
    for ckpt, loraname, role, extra in entries:
        variant = loraname if role == "baseline" else (source.name or loraname)  # a baseline is its own variant in reports
        step, kind = (ckpt.training_step, ckpt.step_kind) if ckpt is not None else (0, "step")
        for prompt in prompts:
            seeds = source.seeds or [prompt.seed if prompt.seed is not None else DEFAULT_SEED]
            for seed in seeds:
                case = GeneratedCase(
                    loraname=loraname, training_step=step, step_kind=kind, prompt=replace(prompt, seed=seed),
                    image_path=Path(), seed=seed, variant=variant, role=role, extra=dict(extra),
                    lora=ckpt.path if ckpt is not None else None, lora_scale=source.scale,
                )
                cases.append(replace(case, image_path=image_path(run_dir, loraname, case.step_label, prompt.prompt_id, seed)))
    return cases


def same_generation(a: EvalCase, b: EvalCase) -> bool:
    """Two sources asking for the identical image (e.g. the same base-model baseline): keep one case."""
    return (
        isinstance(a, GeneratedCase) and isinstance(b, GeneratedCase)
        and (a.lora, a.lora_scale, a.prompt, a.seed, a.image_path) == (b.lora, b.lora_scale, b.prompt, b.seed, b.image_path)
    )
