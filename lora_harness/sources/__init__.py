"""Where images come from: one module per kind of source, each turning its config into EvalCases.

Every kind implements `SourceBase` (sources/base.py) and is registered in `SOURCE_KINDS`; the config, case
collection and the rest of the harness only use the table and those members.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from lora_harness.core.cases import EvalCase
from lora_harness.sources.base import DEFAULT_SOURCE_KIND, SourceBase, source_union
from lora_harness.sources.generate import GenerateSource, GenerateSourceError, same_generation
from lora_harness.sources.samples import SampleFolderError, SamplesSource

if TYPE_CHECKING:  # config.py imports the source models from this package: no runtime import back
    from lora_harness.core.config import EvalConfig

__all__ = [
    "DEFAULT_SOURCE_KIND", "SOURCE_KINDS", "GenerateSourceError", "SampleFolderError", "Source", "SourceBase",
    "baseline_names", "collect_cases",
]

# The kinds table: `kind = "..."` in a [[sources]] entry -> its model. A new kind is registered here.
SOURCE_KINDS: dict[str, type[SourceBase]] = {"samples": SamplesSource, "generate": GenerateSource}

Source = source_union(SOURCE_KINDS)  # the config's type of one [[sources]] entry


def collect_cases(config: EvalConfig) -> list[EvalCase]:
    """Cases of every source; two sources yielding the same case key (same LoRA name) are an error."""
    cases: dict[str, EvalCase] = {}
    for index, source in enumerate(config.sources):
        try:
            found = source.cases(config)
        except ValueError as exc:  # which [[sources]] entry: with several folders the path alone can mislead
            raise _with_key(exc, f"sources[{index}] ({source.label()})") from None
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


def baseline_names(sources: Iterable[SourceBase]) -> frozenset[str]:
    """LoRA names of the sources' baselines: reference images to compare against, never gated.

    The one rule, shared by the harness (which has the cases) and the report (which sees only the config).
    """
    return frozenset().union(*(source.baseline_names() for source in sources))


def _with_key(exc: ValueError, key: str) -> ValueError:
    try:
        return type(exc)(f"{key}: {exc}")
    except TypeError:
        return ValueError(f"{key}: {exc}")
