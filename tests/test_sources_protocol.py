"""Source kinds: every kind in the table implements `SourceBase`, and a new kind is one class plus its
registration in the table: the config union, its messages, path resolution, case collection and the baseline
rule pick it up without any other module knowing it exists."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Literal, get_args

import pytest
from pydantic import Field, ValidationError

from lora_harness.core import config as config_module
from lora_harness.core.cases import EvalCase, Prompt
from lora_harness.core.config import EvalConfig, parse_config
from lora_harness.sources import SOURCE_KINDS, GenerateSourceError, SourceBase, baseline_names, collect_cases
from lora_harness.sources.base import source_union
from lora_harness.sources.generate import GenerateSource
from lora_harness.sources.samples import SamplesSource

MEMBERS = ("cases", "label", "resolved", "baseline_names")


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_every_kind_in_the_table_implements_the_base(kind):
    model = SOURCE_KINDS[kind]
    assert issubclass(model, SourceBase) and not inspect.isabstract(model)
    for member in MEMBERS:
        assert callable(getattr(model, member)), member
    assert isinstance(model.generates, bool)
    assert isinstance(model.description, str) and model.description
    assert get_args(model.model_fields["kind"].annotation) == (kind,)  # the table's key is the model's `kind`
    assert "generates" not in model.model_fields and "description" not in model.model_fields  # not config keys


def test_which_kinds_generate():
    assert GenerateSource.generates and not SamplesSource.generates


def test_a_kind_that_forgets_a_member_cannot_be_made():
    class Incomplete(SourceBase):
        description = "forgot cases() and label()"
        kind: Literal["incomplete"] = "incomplete"

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


# --- a new kind: one class and its registration ----------------------------------------------------------


class ListedSource(SourceBase):
    """Images named in the config, one checkpoint per image (a stand-in for a new kind of source)."""

    description = "images listed in the config"

    kind: Literal["listed"]
    folder: Path
    images: list[str]
    loraname: str = "listed"
    reference: str | None = None  # a LoRA name whose cases are baselines

    def cases(self, config: EvalConfig) -> list[EvalCase]:
        if not self.images:
            raise ValueError("no images listed")
        return [
            EvalCase(loraname=self.loraname, training_step=100 * step, prompt=Prompt("00", "a portrait"),
                     image_path=self.folder / image, variant=str(config.run.name))
            for step, image in enumerate(self.images, start=1)
        ]

    def label(self) -> str:
        return f"folder = '{self.folder}'"

    def resolved(self, resolve) -> "ListedSource":
        return self.model_copy(update={"folder": resolve(self.folder)})

    def baseline_names(self) -> frozenset[str]:
        return frozenset({self.reference}) if self.reference else frozenset()


@pytest.fixture
def kinds(monkeypatch):
    """The table with the new kind registered; the config type of a source is built from it."""
    monkeypatch.setitem(SOURCE_KINDS, "listed", ListedSource)
    source = source_union(SOURCE_KINDS)

    class Config(EvalConfig):
        sources: list[source] = Field(min_length=1)  # type: ignore[valid-type]

    return Config


def _listed(config_type, tmp_path, **source):
    data = {"sources": [{"kind": "listed", "folder": "imgs", **source}, {"path": "samples"}],
            "judges": [{"name": "image_stats"}]}
    config = config_type.model_validate(data)
    return config_module._resolve_paths(config, tmp_path)


def test_a_registered_kind_is_parsed_resolved_and_collected(kinds, tmp_path):
    config = _listed(kinds, tmp_path, images=["a.png", "b.png"], reference="listed")
    listed, samples = config.sources
    assert isinstance(listed, ListedSource) and isinstance(samples, SamplesSource)  # `kind`, and its default
    assert listed.folder == (tmp_path / "imgs").resolve() and samples.path == (tmp_path / "samples").resolve()
    config = config.model_copy(update={"sources": [listed]})
    cases = collect_cases(config)
    assert [(c.key, c.image_path.name) for c in cases] == [
        (EvalCase("listed", 100, Prompt("00", ""), Path()).key, "a.png"),
        (EvalCase("listed", 200, Prompt("00", ""), Path()).key, "b.png"),
    ]
    assert baseline_names(config.sources) == {"listed"}
    assert not any(source.generates for source in config.sources)


def test_a_registered_kind_gets_the_config_messages(kinds, tmp_path):
    with pytest.raises(ValidationError) as exc:
        kinds.model_validate({"sources": [{"kind": "listed", "folder": "f", "images": [], "imgs": 1}],
                              "judges": [{"name": "image_stats"}]})
    message = config_module._describe(exc.value, "c.toml")
    assert "sources.0.imgs: unknown key (did you mean 'images'?); allowed keys: kind, folder, images" in message
    with pytest.raises(ValidationError) as exc:
        kinds.model_validate({"sources": [{"kind": "listd"}], "judges": [{"name": "image_stats"}]})
    assert "'listed' (images listed in the config)" in config_module._describe(exc.value, "c.toml")


def test_a_registered_kinds_errors_name_its_entry(kinds, tmp_path):
    config = _listed(kinds, tmp_path, images=[])
    with pytest.raises(ValueError, match=r"^sources\[0\] \(folder = '.*imgs'\): no images listed$"):
        collect_cases(config)


def test_collection_errors_of_a_generate_source_name_its_entry(tmp_path):
    config = parse_config({"sources": [{"kind": "generate", "lora": "nope.safetensors", "prompts": ["a"]}],
                           "judges": [{"name": "image_stats"}]}, base_dir=tmp_path)
    with pytest.raises(GenerateSourceError, match=r"^sources\[0\] \(lora = '.*nope\.safetensors'\): LoRA file or"):
        collect_cases(config)
