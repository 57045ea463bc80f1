"""What every kind of `[[sources]]` entry implements, so that nothing outside its module asks which kind it is.

A source kind is one pydantic model (its config keys, `kind = "..."` as a `Literal`) subclassing `SourceBase`,
and one entry in the kinds table (`lora_harness.sources.SOURCE_KINDS`). The config's discriminated union
(`source_union`), its error messages, case collection, progress wording and the baseline rule all go
through the table and these members, never `isinstance` on a kind: adding a source kind is one module plus
its registration in the table, nothing else.

An abstract pydantic base (rather than a `typing.Protocol`) so that each kind keeps being a plain member of
the discriminated union, inherits the config models' strictness (unknown keys are errors, instances are
frozen) and fails at definition/instantiation when it forgets a member.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Mapping, Self, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Tag

from lora_harness.core.cases import EvalCase

if TYPE_CHECKING:  # core.config imports the source kinds: no runtime import back
    from pathlib import Path

    from lora_harness.core.config import EvalConfig

DEFAULT_SOURCE_KIND = "samples"  # sources without `kind` are sample folders (configs before generation mode)


class SourceBase(BaseModel, ABC):
    """One `[[sources]]` entry: where its images come from and how they become cases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generates: ClassVar[bool] = False  # True: its images are made with the `[pipeline]`, not read from disk
    description: ClassVar[str]  # what the kind is, for "unknown source kind; allowed: ..." messages

    @abstractmethod
    def cases(self, config: EvalConfig) -> list[EvalCase]:
        """Every case of this source (cheap records: no image is read or generated here)."""

    @abstractmethod
    def label(self) -> str:
        """Which entry this is, for messages: `path = '...'`, the key a person looks for in the config."""

    def resolved(self, resolve: Callable[[Path | None], Path | None]) -> Self:
        """Paths relative to the config file made absolute with `resolve`; a kind without paths is as is."""
        return self

    def baseline_names(self) -> frozenset[str]:
        """LoRA names of the reference cases this source adds (compared against, never gated)."""
        return frozenset()


def source_kind(value: Any) -> str:
    """The discriminator: `kind` picks the source model; no `kind` is the default kind."""
    if isinstance(value, dict):
        return value.get("kind", DEFAULT_SOURCE_KIND)
    return getattr(value, "kind", DEFAULT_SOURCE_KIND)


def source_union(kinds: Mapping[str, type[SourceBase]]) -> Any:
    """The config's type of one `[[sources]]` entry: a union of the kinds, told apart by `kind`."""
    allowed = [f"'{kind}' ({model.description})" for kind, model in kinds.items()]
    listed = allowed[0] if len(allowed) == 1 else f"{', '.join(allowed[:-1])} or {allowed[-1]}"
    members = tuple(Annotated[model, Tag(kind)] for kind, model in kinds.items())
    return Annotated[
        Union[members],  # type: ignore[valid-type]
        Discriminator(
            source_kind,
            custom_error_type="source_kind",
            custom_error_message=f"unknown source kind; allowed: {listed}",
        ),
    ]
