"""The eval config (`evals/lora_eval.toml`): typed models, loading, and errors a person can act on.

Validation happens once, up front, so that a typo in a threshold name fails before any image is judged
rather than silently gating nothing. Relative paths are resolved against the config file's folder, so a
config means the same thing from any working directory.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lora_harness.images import DEFAULT_PIXEL_LIMIT


class ConfigError(ValueError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunConfig(_Model):
    name: str = Field("lora-eval", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    report_dir: Path = Path("reports")
    image_pixel_limit: int = Field(DEFAULT_PIXEL_LIMIT, gt=0)


class SamplesSource(_Model):
    """A kohya/fluxgym sample folder."""

    kind: Literal["samples"] = "samples"
    path: Path
    prompts: Path | None = None
    name: str | None = None  # variant label; defaults to the folder name
    loraname: str | None = None  # overrides the output name parsed from file names
    ignore_unmatched: bool = False
    on_duplicate: Literal["error", "latest"] = "error"


class PersonConfig(_Model):
    references: list[Path] = []
    trigger: str | None = None
    description: str | None = None


class JudgeConfig(_Model):
    name: str
    options: dict[str, Any] = {}


class Threshold(_Model):
    """Minimums for one metric: per image, and for the mean over a checkpoint's images."""

    image: float | None = None
    checkpoint: float | None = None


GateSpec = Literal["latest", "all"] | list[int]


class GateConfig(_Model):
    checkpoints: GateSpec = "latest"

    @field_validator("checkpoints", mode="wrap")
    @classmethod
    def _one_message(cls, value: Any, handler: Any) -> Any:
        """The union would report one error per branch; one sentence is clearer."""
        allowed = "must be 'latest', 'all' or a list of training steps such as [800, 1000]"
        if isinstance(value, list) and not value:
            raise ValueError(f"an empty list gates nothing; {allowed}")
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(allowed) from None


class EvalConfig(_Model):
    run: RunConfig = RunConfig()
    sources: list[SamplesSource] = Field(min_length=1)
    person: PersonConfig = PersonConfig()
    judges: list[JudgeConfig] = Field(min_length=1)
    thresholds: dict[str, Threshold] = {}
    gate: GateConfig = GateConfig()
    path: Path | None = Field(None, exclude=True)  # where it was loaded from, for messages

    @model_validator(mode="after")
    def _unique_judges(self) -> "EvalConfig":
        names = [judge.name for judge in self.judges]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"judge(s) listed twice: {', '.join(repeated)}")
        return self

    @property
    def run_dir(self) -> Path:
        return self.run.report_dir / self.run.name


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> EvalConfig:
    """Read, override (dotted keys such as `run.report_dir`), resolve paths and validate a config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path}; pass --lora-config PATH or create evals/lora_eval.toml "
            "(see the README's Configuration section)"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return parse_config(data, base_dir=path.parent.resolve(), source=path)


def parse_config(data: dict[str, Any], *, base_dir: Path, source: Path | str = "<config>") -> EvalConfig:
    try:
        config = EvalConfig.model_validate({**data, "path": source if isinstance(source, Path) else None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    return _resolve_paths(config, base_dir)


def _resolve_paths(config: EvalConfig, base: Path) -> EvalConfig:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p)).resolve()

    return config.model_copy(
        update={
            "run": config.run.model_copy(update={"report_dir": resolve(config.run.report_dir)}),
            "sources": [
                s.model_copy(update={"path": resolve(s.path), "prompts": resolve(s.prompts)}) for s in config.sources
            ],
            "person": config.person.model_copy(update={"references": [resolve(r) for r in config.person.references]}),
        }
    )


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


_FIELDS_BY_SECTION = {
    "": EvalConfig.model_fields,
    "run": RunConfig.model_fields,
    "sources": SamplesSource.model_fields,
    "person": PersonConfig.model_fields,
    "judges": JudgeConfig.model_fields,
    "thresholds": Threshold.model_fields,
    "gate": GateConfig.model_fields,
}


def _describe(exc: ValidationError, source: Path | str) -> str:
    """pydantic's errors, rewritten as `file: key: problem (got value); allowed ...` lines."""
    lines = [f"{source}: invalid config ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"] if not str(part).startswith(("function-", "literal[")))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            section = str(error["loc"][0]) if len(error["loc"]) > 1 else ""
            known = [name for name in _FIELDS_BY_SECTION.get(section, {}) if section or name != "path"]
            close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            message = f"unknown key{hint}; allowed keys: {', '.join(known)}"
        elif "input" in error and error["type"] != "missing":
            message = f"{message} (got {error['input']!r})"
        lines.append(f"  {loc or '(top level)'}: {message}")
    return "\n".join(lines)
