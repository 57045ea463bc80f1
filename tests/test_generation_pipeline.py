"""Generation on CPU with a tiny random FLUX pipeline: loading through the user code path, determinism,
LoRA formats and switching, the image cache, and every bad input of issue 4 (diffusers is imported: slow).

The pipeline is built from configs, saved with `save_pretrained` and always loaded back with the harness's
`load_pipeline` (an in-memory pipeline may not reproduce a reloaded one's bytes); images of two separately
loaded pipelines are compared with each other.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import tiny_flux  # noqa: E402
from tiny_flux import model_dir, one_thread  # noqa: E402,F401  (module-scoped fixtures)
from lora_harness.core.config import parse_config  # noqa: E402
from generation_log import read_log  # noqa: E402
from lora_harness.generation.cache import stored_digest  # noqa: E402
from lora_harness.generation.engine import ImageGenerator  # noqa: E402
from lora_harness.generation.errors import CaseGenerationError, LoraFileError, LoraMismatchError, PipelineLoadError  # noqa: E402
from lora_harness.generation.pipeline import Target, load_pipeline  # noqa: E402
from lora_harness.generation.settings import PipelineConfig  # noqa: E402
from lora_harness.run.harness import Harness  # noqa: E402
from lora_harness.sources import collect_cases  # noqa: E402

PROMPTS = ["a photo of sks person --w 32 --h 32 --s 2", "sks person at the beach --w 48 --h 32 --s 2"]


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    sweep = tiny_flux.write_kohya_sweep(root / "sweep", name="tiny-person", epochs=(1, 2, 3))
    files = {
        "diffusers": tiny_flux.write_diffusers_lora(root / "diffusers.safetensors"),
        "kohya": tiny_flux.write_kohya_lora(root / "kohya.safetensors"),
        "sdxl": tiny_flux.write_sdxl_lora(root / "sdxl.safetensors"),
        "no_prefix": tiny_flux.write_diffusers_lora(root / "no_prefix.safetensors", prefix=""),
        "wide": tiny_flux.write_diffusers_lora(root / "wide.safetensors", in_features=64),
        "sweep": root / "sweep",
        **{f"epoch{i + 1}": path for i, path in enumerate(sweep)},
    }
    data = files["kohya"].read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (root / "empty.safetensors").write_bytes(b"")
    (root / "lfs.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 123\n")
    return {**files, "truncated": root / "truncated.safetensors", "empty": root / "empty.safetensors", "lfs": root / "lfs.safetensors"}


class CountingLoader:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, config: PipelineConfig, target: Target):
        self.calls += 1
        return load_pipeline(config, target)


def make_generator(model: Path | str, images: Path, **pipeline) -> tuple[ImageGenerator, CountingLoader]:
    loader = CountingLoader()
    config = PipelineConfig(model=str(model), device="cpu", **pipeline)
    return ImageGenerator(config, images_dir=images, loader=loader), loader


def make_cases(root: Path, **source):
    source = {"kind": "generate", "prompts": PROMPTS, "seeds": [3], **source}
    data = {"run": {"name": "t", "report_dir": str(root / "reports")}, "sources": [source], "judges": [{"name": "image_stats"}]}
    return collect_cases(parse_config(data, base_dir=root))


def generate_all(generator: ImageGenerator, cases) -> dict[str, bytes]:
    for case in cases:
        generator.materialize(case, cases)
    return {case.key: case.image_path.read_bytes() for case in cases}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


# --- the pipeline ---------------------------------------------------------------------------------------------


def test_pipeline_loads_from_a_saved_folder_through_the_user_path(model_dir):
    pipe = load_pipeline(PipelineConfig(model=str(model_dir), device="cpu"), Target("cpu", "float32"))
    assert type(pipe).__name__ == "FluxPipeline"
    assert pipe.transformer.dtype == torch.float32 and pipe.device.type == "cpu"
    assert pipe.transformer.config.num_layers == 1  # the tiny model, not a download
    pipe = load_pipeline(PipelineConfig(model=str(model_dir), device="cpu", class_name="DiffusionPipeline"), Target("cpu", "bfloat16"))
    assert type(pipe).__name__ == "FluxPipeline" and pipe.transformer.dtype == torch.bfloat16


def test_same_seed_gives_the_same_bytes_on_two_reloaded_pipelines(model_dir, loras, tmp_path):
    cases = make_cases(tmp_path, lora=str(loras["epoch1"]))
    first, _ = make_generator(model_dir, tmp_path / "a")
    second, _ = make_generator(model_dir, tmp_path / "b")
    a = generate_all(first, cases)
    moved = [replace(c, image_path=tmp_path / "b" / c.image_path.name) for c in cases]
    b = generate_all(second, moved)
    assert list(a.values()) == list(b.values())  # bit-identical PNGs (pixels and embedded key)
    other_seed = [replace(c, seed=4, image_path=tmp_path / "c" / c.image_path.name) for c in cases[:1]]
    generate_all(second, other_seed)
    assert np.abs(pixels(other_seed[0].image_path) - pixels(cases[0].image_path)).mean() > 1.0
    assert Image.open(cases[1].image_path).size == (48, 32)  # --w 48 --h 32 honoured


# --- LoRAs -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["diffusers", "kohya"])
def test_lora_formats_change_the_image_and_clearing_restores_the_base_model(model_dir, loras, tmp_path, kind):
    generator, _ = make_generator(model_dir, tmp_path / "images")
    base = make_cases(tmp_path, lora=str(loras[kind]), baseline="none")
    with_lora = [c for c in base if c.lora is not None]
    without = [c for c in base if c.lora is None]
    generate_all(generator, with_lora + without)
    for lora_case, base_case in zip(with_lora, without):
        assert np.abs(pixels(lora_case.image_path) - pixels(base_case.image_path)).mean() > 1.0
    assert generator.loras.adapters() == []  # the baseline ran on the bare model
    # After unload, the pipeline gives the base model's exact pixels again.
    generator.loras.use(loras[kind])
    generator.loras.unload()
    again = [replace(without[0], image_path=tmp_path / "again.png")]
    generate_all(generator, again)
    assert np.array_equal(pixels(again[0].image_path), pixels(without[0].image_path))


def test_checkpoint_sweep_loads_the_base_model_once_and_hot_swaps_lora_weights(model_dir, loras, tmp_path):
    cases = make_cases(tmp_path, lora=str(loras["sweep"]))
    assert sorted({(c.training_step, c.step_kind) for c in cases}) == [(1, "epoch"), (2, "epoch"), (3, "epoch"), (4, "epoch")]
    generator, loader = make_generator(model_dir, tmp_path / "images")
    swept = generate_all(generator, cases)
    assert loader.calls == 1
    assert generator.stats["lora_load"] == 1 and generator.stats["lora_hotswap"] == 3  # one LoRA application per checkpoint
    events = [e for e in read_log(tmp_path / "images") if e["event"] == "lora"]
    assert [Path(e["file"]).name for e in events] == [
        "tiny-person-000001.safetensors", "tiny-person-000002.safetensors", "tiny-person-000003.safetensors", "tiny-person.safetensors",
    ]
    # Hot-swapped weights give exactly what a fresh pipeline with only that checkpoint gives; A -> B -> A too.
    fresh, _ = make_generator(model_dir, tmp_path / "fresh")
    last = [replace(c, image_path=tmp_path / "fresh" / c.image_path.name) for c in cases if c.training_step == 4]
    assert list(generate_all(fresh, last).values()) == [swept[c.key] for c in cases if c.training_step == 4]
    back = [replace(c, image_path=tmp_path / "back" / c.image_path.name) for c in cases if c.training_step == 1]
    assert list(generate_all(generator, back).values()) == [swept[c.key] for c in cases if c.training_step == 1]
    assert loader.calls == 1


def test_rerun_reuses_cached_images_without_building_the_pipeline(model_dir, loras, tmp_path):
    cases = make_cases(tmp_path, lora=str(loras["epoch1"]), baseline="none")
    first, _ = make_generator(model_dir, tmp_path / "images")
    generate_all(first, cases)
    mtimes = {c.key: c.image_path.stat().st_mtime_ns for c in cases}
    rerun, loader = make_generator(model_dir, tmp_path / "images")
    generate_all(rerun, cases)
    assert loader.calls == 0 and rerun.stats["generated"] == 0 and rerun.stats["reused"] == len(cases)
    assert {c.key: c.image_path.stat().st_mtime_ns for c in cases} == mtimes
    # A changed setting (the LoRA scale) is a different key: regenerated, and the new key is stored.
    stronger = [replace(c, lora_scale=0.5) for c in cases if c.lora is not None]
    old_digest = stored_digest(stronger[0].image_path)
    generate_all(rerun, stronger)
    assert rerun.stats["generated"] == len(stronger) and loader.calls == 1
    assert stored_digest(stronger[0].image_path) != old_digest


# --- bad input -----------------------------------------------------------------------------------------------------


def test_missing_base_model_folder_fails_each_case_with_one_clear_message(loras, tmp_path):
    cases = make_cases(tmp_path, lora=str(loras["epoch1"]))
    generator, _ = make_generator(tmp_path / "no-such-model", tmp_path / "images")
    for case in cases:
        with pytest.raises(CaseGenerationError, match=r"base model folder not found: .*no-such-model \(pipeline.model\); point it at a diffusers model folder"):
            generator.materialize(case, cases)
    (tmp_path / "not-diffusers").mkdir()
    generator, _ = make_generator(tmp_path / "not-diffusers", tmp_path / "images")
    with pytest.raises(CaseGenerationError, match="has no model_index.json, so it is not a diffusers pipeline folder"):
        generator.materialize(cases[0])


def test_hub_id_without_network_says_how_to_point_at_a_local_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = PipelineConfig(model="black-forest-labs/FLUX.1-dev-not-cached", device="cpu")
    with pytest.raises(PipelineLoadError) as info:
        load_pipeline(config, Target("cpu", "float32"))
    message = str(info.value)
    assert "cannot load base model 'black-forest-labs/FLUX.1-dev-not-cached' from the Hugging Face hub" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "Point at a local copy" in message and '[pipeline] model = "/models/FLUX.1-dev-not-cached"' in message


def test_unknown_pipeline_class_names_close_matches(model_dir):
    with pytest.raises(PipelineLoadError, match=r"'FluxPipelin' is not a diffusers pipeline class .*did you mean FluxPipeline"):
        load_pipeline(PipelineConfig(model=str(model_dir), class_name="FluxPipelin"), Target("cpu", "float32"))
    with pytest.raises(PipelineLoadError, match="'AutoencoderKL' is not a diffusers pipeline class"):
        load_pipeline(PipelineConfig(model=str(model_dir), class_name="AutoencoderKL"), Target("cpu", "float32"))


@pytest.fixture(scope="module")
def shared(model_dir, tmp_path_factory):
    """One generator for the bad-LoRA tests, with the base model's image to compare against."""
    root = tmp_path_factory.mktemp("bad")
    generator, loader = make_generator(model_dir, root / "images")
    (base,) = make_cases(root, lora=str(tiny_flux.write_kohya_lora(root / "ok.safetensors")), baseline="none", prompts=PROMPTS[:1])[1:]
    generate_all(generator, [base])
    return generator, base, root


def assert_pipeline_untouched(shared) -> None:
    generator, base, root = shared
    assert generator.loras.adapters() == [] and generator.loras.active is None
    for name, module in generator.pipeline().transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and "transformer_blocks.0.attn.to_q" in name:
            assert module.in_features == 32
    check = replace(base, image_path=root / f"check-{os.urandom(4).hex()}.png")
    generate_all(generator, [check])
    assert np.array_equal(pixels(check.image_path), pixels(base.image_path))


@pytest.mark.parametrize(
    ("name", "error", "expected"),
    [
        ("truncated", LoraFileError, r"not a readable safetensors file: truncated: its header promises \d+ bytes, the file has \d+"),
        ("empty", LoraFileError, r"empty file \(0 bytes\)"),
        ("lfs", LoraFileError, r"a Git LFS pointer .* `git lfs pull`"),
        ("sdxl", LoraMismatchError, r"diffusers cannot map this LoRA onto FluxPipeline .* it looks like an SDXL LoRA; use a LoRA trained for this base model"),
        ("no_prefix", LoraMismatchError, r"(?s)4 module\(s\) not in the model, e\.g\. transformer_blocks\.0\.attn\..*lack a component prefix.*silently load nothing"),
        ("wide", LoraMismatchError, r"(?s)4 module\(s\) with other widths than the model, e\.g\. transformer\.transformer_blocks\.0\.attn\.\w+(\.0)?: LoRA input width 64 != model layer's 32.*silently expand"),
    ],
)
def test_bad_lora_files_are_refused_before_they_touch_the_pipeline(shared, loras, name, error, expected):
    generator = shared[0]
    with pytest.raises(error, match=expected):
        generator.loras.use(loras[name])
    assert_pipeline_untouched(shared)


def test_pickle_lora_is_refused_and_never_unpickled(shared, tmp_path):
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = tmp_path / "lora.pt"
    payload.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(LoraFileError, match=r"\.pt is a pickle format, which can run arbitrary code"):
        shared[0].loras.use(payload)
    assert not marker.exists()
    assert_pipeline_untouched(shared)


def test_a_bad_checkpoint_fails_its_cases_and_the_sweep_goes_on(model_dir, loras, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for name in ("tiny-person-000001.safetensors", "tiny-person-000002.safetensors"):
        (sweep / name).write_bytes(loras["epoch1" if name.endswith("1.safetensors") else "epoch2"].read_bytes())
    (sweep / "tiny-person-000003.safetensors").write_bytes(loras["epoch2"].read_bytes()[:100])  # still being written
    cases = make_cases(tmp_path, lora=str(sweep))
    generator, _ = make_generator(model_dir, tmp_path / "images")
    failed = []
    for case in cases:
        try:
            generator.materialize(case, [c for c in cases if c.training_step == case.training_step])
        except CaseGenerationError as exc:
            failed.append((case.training_step, str(exc)))
    assert {step for step, _ in failed} == {3} and len(failed) == len(PROMPTS)
    assert "tiny-person-000003.safetensors: not a readable safetensors file" in failed[0][1]
    assert all(c.image_path.is_file() for c in cases if c.training_step != 3)


def test_out_of_memory_is_reported_per_case_and_the_run_continues(model_dir, loras, tmp_path, monkeypatch):
    """Through the Harness: the OOM case gets error scores naming the cause, the next case is judged."""
    pipeline_class = type(load_pipeline(PipelineConfig(model=str(model_dir), device="cpu"), Target("cpu", "float32")))
    original = pipeline_class.__call__
    calls = []

    @functools.wraps(original)
    def flaky(self, *args, **kwargs):
        calls.append(kwargs["prompt"])
        if "beach" in kwargs["prompt"]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "__call__", flaky)
    (tmp_path / "lora_eval.toml").write_text(
        f'[run]\nname = "oom"\nreport_dir = "reports"\n[pipeline]\nmodel = "{model_dir}"\ndevice = "cpu"\n'
        f'[[sources]]\nkind = "generate"\nlora = "{loras["epoch1"]}"\nprompts = {json.dumps(PROMPTS)}\nseeds = [3]\n'
        '[[judges]]\nname = "image_stats"\n'
    )
    from lora_harness.core.config import load_config

    harness = Harness(load_config(tmp_path / "lora_eval.toml"), run_id="r")
    ok, oom = harness.cases
    scores = harness.score(oom)
    assert {s.metric for s in scores.values()} == {"spectral_score", "magnitude_score"}
    assert all(s.value is None and "out of memory on cpu at 48x32, 2 steps" in s.error and "offload" in s.error for s in scores.values())
    assert all(s.value is not None for s in harness.score(ok).values())
    assert ok.image_path.is_file() and not oom.image_path.exists()
    with pytest.raises(CaseGenerationError, match="out of memory"):
        harness.generator().materialize(oom)
    assert calls.count(oom.prompt.text) == 1  # a failed case is not retried within the run
    stored = {(r.case_key, r.metric): r for r in harness.store.rows(run_id="r")}
    assert "out of memory" in stored[(oom.key, "spectral_score")].error
