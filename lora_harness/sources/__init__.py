"""Where images come from: one module per kind of source, each turning its config into EvalCases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lora_harness.core.cases import EvalCase
from lora_harness.sources.generate import GenerateSource, GenerateSourceError, collect_generate_cases, same_generation
from lora_harness.sources.samples import SampleFolderError, collect_sample_cases

if TYPE_CHECKING:  # config.py imports the source models from this package: no runtime import back
    from lora_harness.core.config import EvalConfig

__all__ = ["GenerateSourceError", "SampleFolderError", "collect_cases"]


def collect_cases(config: EvalConfig) -> list[EvalCase]:
    """Cases of every source; two sources yielding the same case key (same LoRA name) are an error."""
    cases: dict[str, EvalCase] = {}
    for index, source in enumerate(config.sources):
        try:
            found = _source_cases(source, config)
        except ValueError as exc:  # which [[sources]] entry: with several folders the path alone can mislead
            raise _with_key(exc, f"sources[{index}] (path = '{source.path}')") from None
        for case in found:
            other = cases.get(case.key)
            if other is not None and same_generation(other, case):
                continue  # e.g. two generate sources with the same base-model baseline: one image serves both
            if other is not None:
                raise SampleFolderError(
                    f"case {case.key} comes from two sources: {other.image_path} and {case.image_path}; "
                    "give one source a distinct `loraname = ...`"
                )
            cases[case.key] = case
    return list(cases.values())


def _source_cases(source: object, config: EvalConfig) -> list[EvalCase]:
    if isinstance(source, GenerateSource):
        return list(collect_generate_cases(source, run_dir=config.run_dir))
    return collect_sample_cases(
        source.path,  # type: ignore[attr-defined]
        prompts_file=source.prompts,  # type: ignore[attr-defined]
        loraname=source.loraname,  # type: ignore[attr-defined]
        variant=source.name or source.path.name,  # type: ignore[attr-defined]
        ignore_unmatched=source.ignore_unmatched,  # type: ignore[attr-defined]
        on_duplicate=source.on_duplicate,  # type: ignore[attr-defined]
    )


def _with_key(exc: ValueError, key: str) -> ValueError:
    try:
        return type(exc)(f"{key}: {exc}")
    except TypeError:
        return ValueError(f"{key}: {exc}")
