"""Where images come from: one module per kind of source, each turning its config into EvalCases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lora_harness.cases import EvalCase
from lora_harness.sources.generate import GenerateSource, GenerateSourceError, collect_generate_cases, same_generation
from lora_harness.sources.samples import SampleFolderError, collect_sample_cases

if TYPE_CHECKING:  # config.py imports the source models from this package: no runtime import back
    from lora_harness.config import EvalConfig

__all__ = ["GenerateSourceError", "SampleFolderError", "collect_cases"]


def collect_cases(config: EvalConfig) -> list[EvalCase]:
    """Cases of every source; two sources yielding the same case key (same LoRA name) are an error."""
    cases: dict[str, EvalCase] = {}
    for source in config.sources:
        if isinstance(source, GenerateSource):
            found: list[EvalCase] = list(collect_generate_cases(source, run_dir=config.run_dir))
        else:
            found = collect_sample_cases(
                source.path,
                prompts_file=source.prompts,
                loraname=source.loraname,
                variant=source.name or source.path.name,
                ignore_unmatched=source.ignore_unmatched,
                on_duplicate=source.on_duplicate,
            )
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
