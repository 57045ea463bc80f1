"""Reading kohya `sample_prompts.txt` files exactly as sd-scripts reads them.

kohya numbers prompts by their position in its prompt list and writes that number into every sample file
name, so the prompt id here must follow exactly the same rules, or every later prompt id shifts and images
are judged against the wrong prompt. The rules mirror kohya-ss/sd-scripts `library/train_util.py`
(`load_prompts`, `sample_images_common` and `line_to_prompt_dict`, as of the sd3 merge #2268), which
fluxgym also runs (it writes its UI's prompt box verbatim to `outputs/<name>/sample_prompts.txt`):

- `.txt`: `readlines()`, keep `line.strip()` of every line with `len(line.strip()) > 0 and line[0] != "#"`:
  only a `#` in the very first column starts a comment; an indented `   # note` is a prompt with an id.
- `.toml`: `[dict(**data["prompt"], **subset) for subset in data["prompt"]["subset"]]`; `.json`: a list
  of prompt lines (parsed as below, no comment rule) or dicts.
- A line is split on `" --"`; the first part is the prompt; every part (the prompt too) is matched with
  `re.match(..., re.IGNORECASE)` against kohya's option patterns in kohya's order; the last match wins;
  anything else is ignored (here with a warning), and a value kohya cannot convert is ignored too.
- Values keep their quotes (`--n "bad hands"` is the negative prompt `"bad hands"` with the quotes), and
  `--s` is clamped to 1..1000.

The one deliberate difference: trailing spaces of the prompt text (`a cat  --w 512`) are dropped, because
tokenizers ignore them and they would only make report rows differ.
"""

from __future__ import annotations

import json
import re
import tomllib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_harness.core.cases import Prompt


class PromptFileError(ValueError):
    pass


class PromptFileWarning(UserWarning):
    """Something kohya silently accepts but that probably is not what the user meant (it is mirrored)."""


@dataclass(frozen=True)
class KohyaOption:
    """One of kohya's inline options: its regex (matched at the start of a `--` part) and dict key."""

    flag: str
    pattern: re.Pattern[str]
    key: str
    convert: Callable[[str], Any]


def _steps(value: str) -> int:
    return max(1, min(1000, int(value)))  # kohya: max(1, min(1000, int(m.group(1))))


# In kohya's order: the first pattern that matches a part wins (so `--ss euler` is the sampler, not steps).
KOHYA_OPTIONS: tuple[KohyaOption, ...] = tuple(
    KohyaOption(flag, re.compile(pattern, re.IGNORECASE), key, convert)
    for flag, pattern, key, convert in (
        ("w", r"w (\d+)", "width", int),
        ("h", r"h (\d+)", "height", int),
        ("d", r"d (\d+)", "seed", int),
        ("s", r"s (\d+)", "sample_steps", _steps),
        ("l", r"l ([\d\.]+)", "scale", float),
        ("g", r"g ([\d\.]+)", "guidance_scale", float),
        ("n", r"n (.+)", "negative_prompt", str),
        ("ss", r"ss (.+)", "sample_sampler", str),
        ("cn", r"cn (.+)", "controlnet_image", str),
        ("ctr", r"ctr (.+)", "cfg_trunc_ratio", float),
        ("rcfg", r"rcfg (.+)", "renorm_cfg", float),
        ("fs", r"fs (.+)", "flow_shift", str),
    )
)
# kohya's prompt-dict keys that describe what the image should show, as Prompt fields.
_FIELDS = {
    "width": "width", "height": "height", "seed": "seed", "sample_steps": "steps", "scale": "cfg_scale",
    "guidance_scale": "guidance", "negative_prompt": "negative",
}
_TYPES: dict[str, type] = {"width": int, "height": int, "seed": int, "steps": int, "cfg_scale": float, "guidance": float}


def line_to_prompt_dict(line: str, *, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """kohya's `line_to_prompt_dict`: the prompt and every option kohya recognises, by its rules.

    `warn` hears about parts kohya ignores without a word (unknown options, values it cannot read).
    """
    parts = line.split(" --")
    found: dict[str, Any] = {"prompt": parts[0]}
    for index, part in enumerate(parts):  # kohya matches the prompt part too (`w 5 cats` sets width=5)
        option = next((o for o in KOHYA_OPTIONS if o.pattern.match(part)), None)
        if option is None:
            if index > 0 and part.strip() and warn is not None:
                known = ", ".join(f"--{o.flag}" for o in KOHYA_OPTIONS)
                warn(f"option '--{part}' is not one kohya knows ({known}); kohya ignored it, and so does the harness")
            continue
        value = option.pattern.match(part)[1]  # type: ignore[index]
        try:
            found[option.key] = option.convert(value)
        except ValueError:
            if warn is not None:
                warn(f"option '--{part}': kohya cannot read {value!r} as a number and ignored it, and so does the harness")
    return found


def prompt_from_dict(data: dict[str, Any], prompt_id: str, *, source: str = "<prompt>") -> Prompt:
    """A kohya prompt dict (from a line, or a .toml/.json prompt file) as a Prompt."""
    text = data.get("prompt", "")
    if not isinstance(text, str):
        raise PromptFileError(f"{source}: prompt {prompt_id}: `prompt` must be text, got {text!r}")
    fields: dict[str, Any] = {}
    for key, name in _FIELDS.items():
        if data.get(key) is None:
            continue
        value, kind = data[key], _TYPES.get(name, str)
        if kind is str:
            fields[name] = str(value)
            continue
        try:
            fields[name] = kind(value)
        except (TypeError, ValueError):
            raise PromptFileError(
                f"{source}: prompt {prompt_id}: `{key}` needs a {kind.__name__}, got {value!r}"
            ) from None
    if "steps" in fields:
        fields["steps"] = _steps(str(fields["steps"]))
    return Prompt(prompt_id=prompt_id, text=text.lstrip("\ufeff").rstrip(), **fields)


def parse_prompt_line(line: str, prompt_id: str, *, source: str = "<prompt>") -> Prompt:
    """Split `text --w 512 --n "bad hands"` into the prompt text and its options, as kohya does."""

    def warn(message: str) -> None:
        warnings.warn(PromptFileWarning(f"{source}: prompt {prompt_id}: {message}"), stacklevel=3)

    return prompt_from_dict(line_to_prompt_dict(line.strip(), warn=warn), prompt_id, source=source)


def prompt_lines(lines: Iterable[str]) -> list[tuple[int, str]]:
    """kohya's selection of prompt lines: (1-based line number, stripped line) of each line that has text
    and does not have `#` as its very first character (`line[0] != "#"`)."""
    return [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip() and line[0] != "#"]


def parse_prompt_lines(lines: Iterable[str], *, source: str) -> list[Prompt]:
    """Prompts of kohya prompt lines, ids zero-padded to two digits as kohya's file names are.

    Warns about lines kohya counts as prompts although they look like comments, because they shift ids.
    """
    prompts = []
    for index, (number, line) in enumerate(prompt_lines(lines)):
        prompt_id = f"{index:02d}"
        if line.lstrip("\ufeff").startswith("#"):
            warnings.warn(PromptFileWarning(
                f"{source}:{number}: {line!r} is prompt {prompt_id} for kohya, not a comment: only a '#' in the "
                "first column starts a comment (and not after a byte-order mark); the ids follow kohya"
            ), stacklevel=2)
        prompts.append(parse_prompt_line(line, prompt_id, source=f"{source}:{number}"))
    return prompts


def read_prompt_file(path: Path) -> list[Prompt]:
    """All prompts of a kohya prompt file (.txt, or kohya's .toml / .json formats)."""
    if not path.is_file():
        raise PromptFileError(
            f"prompt file not found: {path}; point `prompts = ...` of the source at the trainer's "
            "sample_prompts.txt"
        )
    try:
        with path.open(encoding="utf-8") as handle:  # text mode: universal newlines, like kohya's open()
            if path.suffix == ".toml":
                prompts = _structured(_toml_prompts(path, tomllib.loads(handle.read())), path)
            elif path.suffix == ".json":
                prompts = _structured(_json_prompts(path, handle.read()), path)
            else:
                prompts = parse_prompt_lines(handle.readlines(), source=str(path))
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"{path}: not UTF-8 text ({exc}); save the prompt file as UTF-8") from None
    if not prompts:
        raise PromptFileError(
            f"{path}: no prompts (every line is empty or starts with #); add one prompt per line, as given "
            "to the trainer's --sample_prompts"
        )
    return prompts


def _toml_prompts(path: Path, text: Any) -> list[Any]:
    data = text
    try:
        common = dict(data["prompt"])
        subsets = common.pop("subset")
        result = []
        for subset in subsets:
            clash = set(common) & set(subset)
            if clash:  # kohya's dict(**a, **b) raises TypeError on a repeated key
                raise PromptFileError(
                    f"{path}: [[prompt.subset]] repeats {', '.join(sorted(clash))} of [prompt]; kohya fails on "
                    "this file too: set each key either in [prompt] or in the subsets"
                )
            result.append({**common, **subset})
        return result
    except (KeyError, TypeError):
        raise PromptFileError(
            f"{path}: a kohya .toml prompt file needs [prompt] with [[prompt.subset]] tables "
            "(see sd-scripts docs/train_README); or use a sample_prompts.txt"
        ) from None


def _json_prompts(path: Path, text: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise PromptFileError(f"{path}: a kohya .json prompt file is a list of prompt lines or objects")
    return data


def _structured(items: list[Any], path: Path) -> list[Prompt]:
    """.toml / .json entries: a string is a prompt line (kohya applies no comment rule here), a dict is used as is."""
    prompts = []
    for index, item in enumerate(items):
        prompt_id = f"{index:02d}"
        if isinstance(item, str):
            prompts.append(parse_prompt_line(item, prompt_id, source=str(path)))
        elif isinstance(item, dict):
            prompts.append(prompt_from_dict(item, prompt_id, source=str(path)))
        else:
            raise PromptFileError(f"{path}: prompt {prompt_id} is {item!r}; give a prompt line or an object")
    return prompts
