"""kohya sd-scripts sample folders: images a trainer already produced, judged without a GPU.

kohya names samples `<output_name>_<step:06d>_<prompt:02d>_<YYYYmmddHHMMSS>[_<seed>].png` (`e<epoch:06d>`
for epoch sampling; no `<output_name>_` when the run had none). Output names contain `_` and `-`, so names
are matched from the right with one anchored pattern instead of being split on `_`.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Literal

from lora_harness.core.cases import EvalCase, Prompt, case_order
from lora_harness.core.prompts import read_prompt_file
from lora_harness.sources.base import SourceBase

if TYPE_CHECKING:  # core.config imports the source kinds: no runtime import back
    from lora_harness.core.config import EvalConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SAMPLE_NAME = re.compile(
    r"^(?:(?P<name>.+)_)?(?P<step>e?\d{6,})_(?P<prompt>\d{2,})_(?P<timestamp>\d{14})(?:_(?P<seed>\d+))?"
    r"\.(?P<ext>png|jpe?g|webp)$",
    re.IGNORECASE,
)
EXPECTED_PATTERN = "<output_name>_<step:06d | e<epoch:06d>>_<prompt:02d>_<YYYYmmddHHMMSS>[_<seed>].<png|jpg|jpeg|webp>"


class SampleFolderError(ValueError):
    pass


class SamplesSource(SourceBase):
    """`[[sources]]` (`kind = "samples"`, the default): a kohya/fluxgym sample folder."""

    description: ClassVar[str] = "a kohya sample folder"

    kind: Literal["samples"] = "samples"
    path: Path
    prompts: Path | None = None
    name: str | None = None  # variant label; defaults to the folder name
    loraname: str | None = None  # overrides the output name parsed from file names
    ignore_unmatched: bool = False
    on_duplicate: Literal["error", "latest"] = "error"

    def cases(self, config: EvalConfig) -> list[EvalCase]:
        return collect_sample_cases(
            self.path,
            prompts_file=self.prompts,
            loraname=self.loraname,
            variant=self.name or self.path.name,
            ignore_unmatched=self.ignore_unmatched,
            on_duplicate=self.on_duplicate,
        )

    def label(self) -> str:
        return f"path = '{self.path}'"

    def resolved(self, resolve: Callable[[Path | None], Path | None]) -> "SamplesSource":
        return self.model_copy(update={"path": resolve(self.path), "prompts": resolve(self.prompts)})


@dataclass(frozen=True)
class SampleName:
    loraname: str | None
    training_step: int
    step_kind: str
    prompt_id: str
    timestamp: str
    seed: int | None


def parse_sample_name(filename: str) -> SampleName | None:
    """Parse a kohya sample file name; None when it does not follow kohya's pattern."""
    match = SAMPLE_NAME.match(filename)
    if not match:
        return None
    step = match["step"]
    return SampleName(
        loraname=match["name"],
        training_step=int(step.lstrip("eE")),
        step_kind="epoch" if step[0] in "eE" else "step",
        prompt_id=match["prompt"],
        timestamp=match["timestamp"],
        seed=int(match["seed"]) if match["seed"] else None,
    )


def collect_sample_cases(
    folder: Path,
    *,
    prompts_file: Path | None = None,
    loraname: str | None = None,
    variant: str | None = None,
    ignore_unmatched: bool = False,
    on_duplicate: str = "error",
) -> list[EvalCase]:
    """Every sample image in `folder` as a case, with its prompt from the trainer's prompt file.

    A sample whose prompt id is not in the prompt file, a file that does not look like a kohya sample
    (unless ignored) and two images for the same case are errors: each would silently skew the scores.
    """
    if not folder.exists():
        raise SampleFolderError(f"sample folder not found: {folder}; check `path` of the source in the config")
    if not folder.is_dir():
        raise SampleFolderError(f"sample source is not a folder: {folder}")
    files = sample_files(folder)
    if not files:  # checked before the prompt file: a wrong folder usually has neither
        raise SampleFolderError(
            f"no sample images (*{', *'.join(IMAGE_SUFFIXES)}) in {folder}; "
            "kohya writes them to <output_dir>/sample/ when --sample_every_n_steps is set"
        )
    prompts_path = prompts_file or _find_prompt_file(folder)
    prompts = {prompt.prompt_id: prompt for prompt in read_prompt_file(prompts_path)}
    cases: dict[str, EvalCase] = {}
    unmatched: list[str] = []
    duplicates: list[tuple[Path, Path]] = []
    for path in files:
        name = parse_sample_name(path.name)
        if name is None:
            unmatched.append(path.name)
            continue
        prompt = _prompt_for(prompts, name.prompt_id, path, prompts_path)
        case = EvalCase(
            loraname=loraname or name.loraname or folder.name,
            training_step=name.training_step,
            step_kind=name.step_kind,  # type: ignore[arg-type]
            prompt=prompt,
            image_path=path,
            timestamp=name.timestamp,
            seed=name.seed if name.seed is not None else prompt.seed,
            variant=variant,
        )
        previous = cases.get(case.key)
        if previous is not None:
            if on_duplicate == "error":
                duplicates.append((previous.image_path, path))
                continue
            if (previous.timestamp or "") > (case.timestamp or ""):
                continue  # keep the newest sample, as a resumed training run would
        cases[case.key] = case
    if unmatched and not ignore_unmatched:
        shown = "\n  ".join(unmatched[:20]) + ("\n  ..." if len(unmatched) > 20 else "")
        raise SampleFolderError(
            f"{len(unmatched)} file(s) in {folder} do not match the kohya sample pattern "
            f"{EXPECTED_PATTERN}:\n  {shown}\nrename or remove them, or set `ignore_unmatched = true` on the source"
        )
    if duplicates:
        shown = "\n  ".join(f"{a.name} and {b.name}" for a, b in duplicates[:20])
        raise SampleFolderError(
            f"{folder}: {len(duplicates)} case(s) have more than one image (same LoRA, step, prompt and seed):\n"
            f"  {shown}\nremove the stale copies, or set `on_duplicate = \"latest\"` on the source to keep the newest"
        )
    if not cases:
        raise SampleFolderError(f"{folder}: no kohya sample images left after ignoring unmatched files")
    return sorted(cases.values(), key=case_order)


def sample_files(folder: Path) -> list[Path]:
    """The image files of a sample folder, sorted.

    Names starting with `.` are skipped: macOS writes AppleDouble twins (`._<name>.png`) beside every file
    on a foreign volume, and they would parse as a LoRA named `._<name>`. A symlink that points nowhere (or
    into a loop) is an error naming it, rather than a sample silently missing from the scores.
    """
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError) as exc:  # ELOOP: OSError on 3.13+, RuntimeError before
                loop = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
                reason = "a symlink loop" if loop else "a broken symlink"
                raise SampleFolderError(
                    f"{path} is {reason} (-> {_link_text(path)}); fix or remove the link, or copy the image there"
                ) from None
            if not target.is_file():
                raise SampleFolderError(f"{path} is a symlink to {target}, which is not a file; remove the link")
        if path.is_file():
            files.append(path)
    return files


def _link_text(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return "?"


def _find_prompt_file(folder: Path) -> Path:
    """kohya keeps samples in <output>/sample/ and fluxgym the prompt file in <output>/: look in both."""
    for candidate in (folder / "sample_prompts.txt", folder.parent / "sample_prompts.txt"):
        if candidate.is_file():
            return candidate
    raise SampleFolderError(
        f"no sample_prompts.txt in {folder} or its parent; set `prompts = \"path/to/sample_prompts.txt\"` "
        "on the source"
    )


def _prompt_for(prompts: dict[str, Prompt], prompt_id: str, image: Path, prompts_path: Path) -> Prompt:
    # kohya pads to two digits, but a hand-renamed file may not: match on the number too.
    prompt = prompts.get(prompt_id) or prompts.get(f"{int(prompt_id):02d}")
    if prompt is None:
        raise SampleFolderError(
            f"{image}: prompt id {prompt_id} is not in {prompts_path}, which has {len(prompts)} prompt(s) "
            f"(ids {', '.join(sorted(prompts))}); use the prompt file the samples were made with"
        )
    return prompt
