"""Reading kohya `sample_prompts.txt` files.

kohya numbers prompts by their order among non-empty, non-comment lines and writes that number into sample
file names, so the prompt id here must follow exactly the same rule. Inline options (`--w 512 --d 42 ...`)
are generation settings, not prompt text: they are parsed out so judges see what the image was asked for.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from lora_harness.cases import Prompt


class PromptFileError(ValueError):
    pass


# kohya's option letters (library/train_util.py line_to_prompt_dict): value type and Prompt field.
_OPTIONS: dict[str, tuple[type, str]] = {
    "w": (int, "width"),
    "h": (int, "height"),
    "d": (int, "seed"),
    "s": (int, "steps"),
    "l": (float, "cfg_scale"),
    "g": (float, "guidance"),
    "n": (str, "negative"),
}
# Options kohya knows that do not affect what the image should show; parsed and dropped.
_IGNORED_OPTIONS = {"ss", "cn", "f", "t", "m", "sd"}
_OPTION = re.compile(r"^(?P<key>[A-Za-z]+)(?:\s+(?P<value>.*))?$", re.S)


def parse_prompt_line(line: str, prompt_id: str, *, source: str = "<prompt>") -> Prompt:
    """Split `text --w 512 --n "bad hands"` into the prompt text and its options."""
    head, *options = line.strip().split(" --")
    fields: dict[str, object] = {}
    for option in options:
        match = _OPTION.match(option.strip())
        if not match:
            raise PromptFileError(f"{source}: prompt {prompt_id}: cannot read option '--{option.strip()}'")
        key, value = match["key"].lower(), (match["value"] or "").strip()
        if key in _IGNORED_OPTIONS:
            continue
        if key not in _OPTIONS:
            allowed = ", ".join(f"--{k}" for k in _OPTIONS)
            raise PromptFileError(
                f"{source}: prompt {prompt_id}: unknown option '--{key}'; kohya options are {allowed} "
                f"(and {', '.join('--' + k for k in sorted(_IGNORED_OPTIONS))}, which are ignored)"
            )
        kind, name = _OPTIONS[key]
        if kind is str:
            fields[name] = value.strip().strip('"').strip("'")
            continue
        try:
            fields[name] = kind(value)
        except ValueError:
            raise PromptFileError(
                f"{source}: prompt {prompt_id}: option '--{key}' needs a {kind.__name__}, got {value!r}"
            ) from None
    return replace(Prompt(prompt_id=prompt_id, text=head.strip()), **fields)  # type: ignore[arg-type]


def read_prompt_file(path: Path) -> list[Prompt]:
    """All prompts of a kohya prompt file, ids zero-padded to two digits as kohya's file names are."""
    if not path.is_file():
        raise PromptFileError(
            f"prompt file not found: {path}; point `prompts = ...` of the source at the trainer's "
            "sample_prompts.txt"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"{path}: not UTF-8 text ({exc}); save the prompt file as UTF-8") from None
    entries = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise PromptFileError(f"{path}: no prompts (every line is empty or a # comment)")
    return [parse_prompt_line(line, f"{index:02d}", source=str(path)) for index, line in enumerate(entries)]
