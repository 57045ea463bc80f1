"""Generate sources without diffusers: config, checkpoint sweeps from kohya/ai-toolkit names, prompts with
kohya options, seeds, baselines, image paths, cache keys, device mapping and call-argument mapping.

LoRA files here are written with `safetensors.numpy` (no torch): collection must never need torch."""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

safetensors_numpy = pytest.importorskip("safetensors.numpy")

from lora_harness.core.config import ConfigError, parse_config  # noqa: E402
from lora_harness.generation import cache  # noqa: E402
from lora_harness.generation.errors import DeviceError  # noqa: E402
from lora_harness.generation.pipeline import call_arguments, select_device, worker_index  # noqa: E402
from lora_harness.generation.settings import PipelineConfig  # noqa: E402
from lora_harness.sources import collect_cases  # noqa: E402
from lora_harness.sources.generate import (  # noqa: E402
    GeneratedCase,
    GenerateSourceError,
    collect_generate_cases,
    file_problem,
    find_checkpoints,
)


def write_lora(path: Path, *, metadata: dict[str, str] | None = None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {
        "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": rng.normal(size=(4, 32)).astype(np.float32),
        "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": rng.normal(size=(32, 4)).astype(np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors_numpy.save_file(tensors, str(path), metadata=metadata)
    return path


def config(tmp_path: Path, source: dict, **top) -> object:
    data = {"run": {"name": "gen", "report_dir": "reports"}, "sources": [{"kind": "generate", **source}],
            "judges": [{"name": "image_stats"}], **top}
    return parse_config(data, base_dir=tmp_path)


# --- config ----------------------------------------------------------------------------------------------------


def test_generate_source_parses_with_paths_relative_to_the_config(tmp_path):
    cfg = config(tmp_path, {"lora": "out/a.safetensors", "prompts": "sample_prompts.txt", "seeds": [1, 2],
                            "baseline": "none", "scale": 0.8}, pipeline={"model": "models/flux-dev", "device": "cuda"})
    (source,) = cfg.sources
    assert source.kind == "generate"
    assert source.lora == [tmp_path / "out" / "a.safetensors"]
    assert source.prompts == tmp_path / "sample_prompts.txt"
    assert source.baseline == "none" and source.baseline_is_base_model
    # "models/flux-dev" does not exist here and looks like a hub id: it stays a hub id ...
    assert cfg.pipeline.model == "models/flux-dev" and cfg.pipeline.device == "cuda"
    # ... but once the folder exists, the folder wins.
    (tmp_path / "models" / "flux-dev").mkdir(parents=True)
    cfg = config(tmp_path, {"lora": "a.safetensors", "prompts": ["x"]}, pipeline={"model": "models/flux-dev"})
    assert cfg.pipeline.model == str(tmp_path / "models" / "flux-dev")
    cfg = config(tmp_path, {"lora": "a.safetensors", "prompts": ["x"]}, pipeline={"model": "./local-flux"})
    assert cfg.pipeline.model == str(tmp_path / "local-flux")


def test_sources_without_kind_are_still_sample_folders(tmp_path):
    cfg = parse_config({"sources": [{"path": "s"}], "judges": [{"name": "image_stats"}]}, base_dir=tmp_path)
    assert cfg.sources[0].kind == "samples" and cfg.pipeline.model == "black-forest-labs/FLUX.1-dev"
    assert cfg.pipeline.class_name == "FluxPipeline"


@pytest.mark.parametrize(
    ("source", "pipeline", "expected"),
    [
        ({"lora": "a.safetensors", "prompts": ["x"], "seedz": [1]}, {},
         "sources.0.seedz: unknown key (did you mean 'seeds'?); allowed keys: kind, lora, prompts"),
        ({"kind": "generat", "lora": "a.safetensors"}, {}, "sources.0: unknown source kind; allowed: 'samples'"),
        ({"lora": [], "prompts": ["x"]}, {}, "sources.0.lora: List should have at least 1 item"),
        ({"lora": "a.safetensors", "prompts": ["  "]}, {}, "sources.0.prompts: no prompts"),
        ({"lora": "a.safetensors", "prompts": ["x"], "seeds": [1, 1]}, {}, "seeds must be a non-empty list without repeats"),
        ({"lora": "a.safetensors", "prompts": ["x"], "width": 0}, {}, "sources.0.width: Input should be greater than 0"),
        ({"lora": "a.safetensors", "prompts": ["x"], "baseline_name": "b"}, {}, "baseline_name is set but baseline is not"),
        ({"lora": "a.safetensors", "prompts": ["x"]}, {"device": "gpu"}, "pipeline.device: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
        ({"lora": "a.safetensors", "prompts": ["x"]}, {"devise": "cpu"}, "pipeline.devise: unknown key (did you mean 'device'?)"),
        ({"lora": "a.safetensors", "prompts": ["x"]}, {"class_name": "Flux Pipeline"}, "pipeline.class_name: String should match pattern"),
    ],
)
def test_config_errors_name_the_key_and_what_is_allowed(tmp_path, source, pipeline, expected):
    data = {"sources": [{"kind": "generate", **source}], "judges": [{"name": "image_stats"}]}
    if pipeline:
        data["pipeline"] = pipeline
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir=tmp_path)
    assert expected in str(info.value)


# --- checkpoints from file names ---------------------------------------------------------------------------------


def test_kohya_output_folder_is_a_sweep_with_the_final_file_from_metadata(tmp_path):
    out = tmp_path / "output"
    for epoch in (2, 4):
        write_lora(out / f"my-person_v2-{epoch:06d}.safetensors", seed=epoch)
    write_lora(out / "my-person_v2.safetensors", metadata={"ss_epoch": "6", "ss_steps": "600"}, seed=6)
    (out / "my-person_v2-000004-state").mkdir()  # kohya's --save_state folders are not checkpoints
    (out / "sample").mkdir()
    found = find_checkpoints([out])
    assert [(c.loraname, c.step_kind, c.training_step, c.path.name) for c in found] == [
        ("my-person_v2", "epoch", 2, "my-person_v2-000002.safetensors"),
        ("my-person_v2", "epoch", 4, "my-person_v2-000004.safetensors"),
        ("my-person_v2", "epoch", 6, "my-person_v2.safetensors"),
    ]


def test_step_named_checkpoints_kohya_and_ai_toolkit(tmp_path):
    kohya = [write_lora(tmp_path / f"p-step{n:08d}.safetensors", seed=n) for n in (500, 1000)]
    final = write_lora(tmp_path / "p.safetensors", metadata={"ss_steps": "1500", "ss_epoch": "3"}, seed=3)
    aitk = write_lora(tmp_path / "aitk" / "face_000000250.safetensors")
    found = find_checkpoints([*kohya, final, aitk])
    assert [(c.loraname, c.step_kind, c.training_step) for c in found] == [
        ("face", "step", 250), ("p", "step", 500), ("p", "step", 1000), ("p", "step", 1500),
    ]


def test_final_file_without_metadata(tmp_path):
    lone = write_lora(tmp_path / "downloaded-lora.safetensors")
    assert [(c.loraname, c.training_step) for c in find_checkpoints([lone])] == [("downloaded-lora", 0)]
    sweep = tmp_path / "sweep"
    write_lora(sweep / "x-000001.safetensors", seed=1)
    write_lora(sweep / "x.safetensors", seed=2)
    with pytest.raises(GenerateSourceError, match=r"x\.safetensors: cannot tell at which step .* set `final_step = N`"):
        find_checkpoints([sweep])
    assert [c.training_step for c in find_checkpoints([sweep], final_step=9)] == [1, 9]


def test_identical_final_and_numbered_checkpoint_count_once_different_ones_are_an_error(tmp_path):
    write_lora(tmp_path / "a" / "x-000002.safetensors", seed=1)
    write_lora(tmp_path / "a" / "x.safetensors", metadata={"ss_epoch": "2"}, seed=1)
    found = find_checkpoints([tmp_path / "a"])
    assert [c.training_step for c in found] == [2]
    write_lora(tmp_path / "b" / "x-000002.safetensors", seed=1)
    write_lora(tmp_path / "b" / "x.safetensors", metadata={"ss_epoch": "2"}, seed=5)
    with pytest.raises(GenerateSourceError, match=r"two different LoRA files claim x epoch 2"):
        find_checkpoints([tmp_path / "b"])


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin", ".pth"])
def test_pickle_files_are_refused_before_anything_reads_them(tmp_path, suffix):
    marker = tmp_path / "pwned"
    payload = tmp_path / f"lora{suffix}"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    import pickle

    payload.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(GenerateSourceError, match=rf"\{suffix} is a pickle format, which can run arbitrary code.*save the LoRA as \.safetensors"):
        find_checkpoints([payload])
    folder = tmp_path / "only-pickles"
    folder.mkdir()
    (folder / f"x-000001{suffix}").write_bytes(b"x")
    with pytest.raises(GenerateSourceError, match="pickle format"):
        find_checkpoints([folder])
    assert not marker.exists()


def test_missing_and_wrong_files(tmp_path):
    with pytest.raises(GenerateSourceError, match=r"LoRA file or folder not found: .*nope\.safetensors; check `lora`"):
        find_checkpoints([tmp_path / "nope.safetensors"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(GenerateSourceError, match=r"not a LoRA file \(expected \*\.safetensors, got '\.txt'\)"):
        find_checkpoints([tmp_path / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenerateSourceError, match="no \\*.safetensors LoRA files in"):
        find_checkpoints([tmp_path / "empty"])
    truncated = tmp_path / "t" / "x.safetensors"
    write_lora(truncated, metadata={"ss_epoch": "1"})
    truncated.write_bytes(truncated.read_bytes()[:60])
    (lone,) = find_checkpoints([truncated])  # not an abort: a checkpoint whose cases fail with the reason
    assert (lone.training_step, lone.step_kind) == (0, "step")
    assert re.search(r"x\.safetensors: cannot read the safetensors header: truncated inside its header .*still being written", lone.problem)


def test_unreadable_checkpoint_files_never_abort_collection(tmp_path):
    """Issue 14: a final file still being written and a pickle renamed .safetensors are collected as failing
    checkpoints (their reason on each case); every healthy checkpoint keeps its cases and labels."""
    import pickle

    out = tmp_path / "output"
    for epoch in (1, 2):
        write_lora(out / f"me-{epoch:06d}.safetensors", metadata={"ss_epoch": str(epoch)}, seed=epoch)
    final = write_lora(out / "me.safetensors", metadata={"ss_epoch": "3", "ss_steps": "30"}, seed=3)
    final.write_bytes(final.read_bytes()[:-40])  # the tensors are still being written
    (out / "me-000004.safetensors").write_bytes(pickle.dumps({"lora_down": [1.0, 2.0]}))
    found = {(c.step_kind, c.training_step): c for c in find_checkpoints([out])}
    assert sorted(found) == [("epoch", 1), ("epoch", 2), ("epoch", 4), ("epoch", 5)]
    assert found[("epoch", 1)].problem is None and found[("epoch", 2)].problem is None
    assert found[("epoch", 5)].path == final  # provisional label: after the sweep's last numbered checkpoint
    assert re.search(r"me\.safetensors: cannot read the safetensors header: truncated: its header promises \d+ bytes, "
                     r"the file has \d+; modified \d+ s ago, so it is probably still being written", found[("epoch", 5)].problem)
    assert found[("epoch", 4)].problem is None  # numbered: nothing read at collection; the loader refuses it
    assert "a pickle (torch.save) file named .safetensors" in file_problem(found[("epoch", 4)].path)
    cfg = config(tmp_path, {"lora": "output", "prompts": ["a photo --w 32 --h 32"], "seeds": [1]})
    cases = collect_cases(cfg)
    assert len(cases) == 4
    assert [c.extra.get("lora_problem", "")[:40] for c in cases if c.training_step == 5] == [found[("epoch", 5)].problem[:40]]
    assert file_problem(out / "me-000001.safetensors") is None
    (out / "old.safetensors").write_bytes(final.read_bytes())
    os.utime(out / "old.safetensors", (1, 1))
    assert file_problem(out / "old.safetensors").endswith("an interrupted save or download: re-export or re-download it")


def test_half_written_copy_of_a_numbered_checkpoint_gives_way_to_the_complete_file(tmp_path):
    write_lora(tmp_path / "x-000002.safetensors", seed=1)
    final = write_lora(tmp_path / "x.safetensors", metadata={"ss_epoch": "2"}, seed=1)
    numbered = tmp_path / "x-000002.safetensors"
    numbered.write_bytes(numbered.read_bytes()[:-16])
    (only,) = find_checkpoints([tmp_path])
    assert only.path == final and only.problem is None


# --- cases ---------------------------------------------------------------------------------------------------------


def test_cases_are_checkpoints_x_prompts_x_seeds_with_kohya_options_honoured(tmp_path):
    write_lora(tmp_path / "out" / "me-000001.safetensors", seed=1)
    write_lora(tmp_path / "out" / "me-000002.safetensors", seed=2)
    (tmp_path / "sample_prompts.txt").write_text(
        "# kohya prompt file\n"
        "<phigep> portrait --w 512 --h 768 --d 7 --s 20 --l 3.5 --g 2.5 --n blurry\n"
        "\n"
        "<phigep> on a beach --w 1024 --h 1024\n"
    )
    cfg = config(tmp_path, {"lora": "out", "prompts": "sample_prompts.txt", "steps": 4})
    cases = collect_cases(cfg)
    assert all(isinstance(c, GeneratedCase) for c in cases)
    assert [c.key for c in cases] == [
        "me-epoch000001-p00-s7", "me-epoch000001-p01-s42", "me-epoch000002-p00-s7", "me-epoch000002-p01-s42",
    ]
    first = cases[0]
    assert (first.prompt.text, first.prompt.width, first.prompt.height, first.prompt.seed) == ("<phigep> portrait", 512, 768, 7)
    assert (first.prompt.cfg_scale, first.prompt.guidance, first.prompt.negative) == (3.5, 2.5, "blurry")
    assert first.prompt.steps == 4  # the source's setting wins over the prompt file's --s 20
    assert cases[1].prompt.steps == 4 and cases[1].prompt.width == 1024
    assert first.lora == tmp_path / "out" / "me-000001.safetensors" and first.lora_scale == 1.0
    assert first.image_path == tmp_path / "reports" / "gen" / "images" / "me" / "me_e000001_00_7.png"
    assert first.test_id == "me-epoch000001-p00-s7" and first.variant == "me"


def test_inline_prompts_seeds_size_and_lora_scale(tmp_path):
    write_lora(tmp_path / "lora.safetensors")
    cfg = config(tmp_path, {"lora": "lora.safetensors", "prompts": ["a cat --d 3", "# skipped", "a dog"], "seeds": [1, 2],
                            "width": 64, "height": 32, "guidance": 3.0, "scale": 0.7, "name": "cats", "loraname": "pet"})
    cases = collect_cases(cfg)
    assert [c.key for c in cases] == ["pet-step000000-p00-s1", "pet-step000000-p00-s2", "pet-step000000-p01-s1", "pet-step000000-p01-s2"]
    assert {(c.prompt.width, c.prompt.height, c.prompt.guidance, c.lora_scale, c.variant) for c in cases} == {(64, 32, 3.0, 0.7, "cats")}
    assert [c.prompt.seed for c in cases] == [1, 2, 1, 2]  # `seeds` replaces the prompt's --d


def test_baselines_share_prompts_and_seeds_and_identical_ones_are_generated_once(tmp_path):
    write_lora(tmp_path / "r4.safetensors", seed=1)
    write_lora(tmp_path / "r32.safetensors", seed=2)
    write_lora(tmp_path / "old.safetensors", metadata={"ss_steps": "900"}, seed=3)
    data = {
        "sources": [
            {"kind": "generate", "lora": "r4.safetensors", "prompts": ["a", "b"], "baseline": "none"},
            {"kind": "generate", "lora": "r32.safetensors", "prompts": ["a", "b"], "baseline": "none"},
            {"kind": "generate", "lora": "r32.safetensors", "loraname": "r32-soft", "scale": 0.5, "prompts": ["a"],
             "baseline": "old.safetensors", "baseline_name": "previous"},
        ],
        "judges": [{"name": "image_stats"}],
    }
    cases = collect_cases(parse_config(data, base_dir=tmp_path))
    by_name: dict[str, list] = {}
    for case in cases:
        by_name.setdefault(case.loraname, []).append(case)
    assert sorted(by_name) == ["base-model", "previous", "r32", "r32-soft", "r4"]
    assert len(by_name["base-model"]) == 2  # both sources asked for the same base-model images: made once
    assert all(c.lora is None and c.is_baseline and c.training_step == 0 for c in by_name["base-model"])
    (prev,) = by_name["previous"]
    assert prev.lora == tmp_path / "old.safetensors" and prev.training_step == 900 and prev.lora_scale == 0.5
    assert prev.is_baseline and not by_name["r4"][0].is_baseline


def test_baselines_are_references_never_gated(tmp_path):
    from lora_harness.core.cases import Checkpoint
    from lora_harness.verdicts.thresholds import gated_checkpoints
    from lora_harness.run.harness import Harness
    from lora_harness.report.view import Rules
    from lora_harness.sources import baseline_names

    write_lora(tmp_path / "r4.safetensors", metadata={"ss_steps": "500"}, seed=1)
    write_lora(tmp_path / "old.safetensors", metadata={"ss_steps": "900"}, seed=3)
    sources = [
        {"kind": "generate", "lora": "r4.safetensors", "prompts": ["a"], "baseline": "none"},
        {"kind": "generate", "lora": "r4.safetensors", "loraname": "r4-vs-old", "prompts": ["a"], "baseline": "old.safetensors"},
    ]
    parsed = parse_config({"sources": sources, "judges": [{"name": "image_stats"}]}, base_dir=tmp_path)
    assert baseline_names(parsed.sources) == {"base-model", "old"}
    harness = Harness(parsed, run_id="r1")
    assert harness.baselines == {"base-model", "old"} == {c.loraname for c in harness.cases if c.is_baseline}
    assert harness.gated == {Checkpoint("r4", 500), Checkpoint("r4-vs-old", 500)}  # gate "latest" per LoRA
    assert not harness.is_gated(Checkpoint("base-model", 0)) and not harness.is_gated(Checkpoint("old", 900))
    every = {Checkpoint("base-model", 0), Checkpoint("old", 900), Checkpoint("r4", 500)}
    for spec in ("latest", "all", [0, 500, 900]):
        assert gated_checkpoints(every, spec, baselines=harness.baselines) == {Checkpoint("r4", 500)}
    assert Rules.of(parsed).baselines == {"base-model", "old"}  # the report and terminal table agree


def test_baseline_named_like_the_lora_is_an_error(tmp_path):
    write_lora(tmp_path / "x.safetensors")
    source = {"lora": "x.safetensors", "prompts": ["a"], "baseline": "none", "baseline_name": "x"}
    with pytest.raises(GenerateSourceError, match="baseline is named 'x' like the LoRA under test"):
        collect_generate_cases(config(tmp_path, source).sources[0], run_dir=tmp_path)


def test_same_case_from_two_different_generate_sources_is_an_error(tmp_path):
    write_lora(tmp_path / "x.safetensors")
    data = {"sources": [{"kind": "generate", "lora": "x.safetensors", "prompts": ["a"]},
                        {"kind": "generate", "lora": "x.safetensors", "prompts": ["b"]}],
            "judges": [{"name": "image_stats"}]}
    with pytest.raises(ValueError, match=r"case x-step000000-p00-s42 comes from two sources"):
        collect_cases(parse_config(data, base_dir=tmp_path))


def test_collection_does_not_import_torch_or_diffusers(tmp_path):
    write_lora(tmp_path / "x-000001.safetensors")
    (tmp_path / "lora_eval.toml").write_text(
        '[[sources]]\nkind = "generate"\nlora = "."\nprompts = ["a"]\n[[judges]]\nname = "image_stats"\n'
    )
    code = (
        "import sys; from pathlib import Path; from lora_harness.core.config import load_config; "
        "from lora_harness.run.harness import Harness; "
        f"h = Harness(load_config(Path({str(tmp_path / 'lora_eval.toml')!r})), run_id='x'); "
        "print(len(h.cases), 'torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "False", "False"]


# --- cache keys and files --------------------------------------------------------------------------------------------


def _case(tmp_path: Path, **changes) -> GeneratedCase:
    if not (tmp_path / "k.safetensors").exists():
        write_lora(tmp_path / "k.safetensors")
    cfg = config(tmp_path, {"lora": "k.safetensors", "prompts": ["a photo --w 32 --h 32 --s 2"], "seeds": [5]})
    (case,) = collect_cases(cfg)
    from dataclasses import replace

    prompt_changes = {k: v for k, v in changes.items() if k in ("text", "width", "height", "steps", "guidance", "negative")}
    case = replace(case, prompt=replace(case.prompt, **prompt_changes))
    return replace(case, **{k: v for k, v in changes.items() if k in ("seed", "lora_scale")})


PIPELINE = {"class": "FluxPipeline", "model": {"folder": "/m", "files": "abc"}, "dtype": "float32", "device_type": "cpu"}


def test_cache_key_changes_with_everything_that_shapes_the_image(tmp_path):
    base = cache.case_key(_case(tmp_path), pipeline=PIPELINE)
    assert base.digest == cache.case_key(_case(tmp_path), pipeline=PIPELINE).digest  # stable
    assert base.material["versions"]["torch"] and base.material["lora"]["sha256"] == cache.file_sha256(tmp_path / "k.safetensors")
    variants = [
        cache.case_key(_case(tmp_path, seed=6), pipeline=PIPELINE),
        cache.case_key(_case(tmp_path, text="another photo"), pipeline=PIPELINE),
        cache.case_key(_case(tmp_path, width=64), pipeline=PIPELINE),
        cache.case_key(_case(tmp_path, steps=3), pipeline=PIPELINE),
        cache.case_key(_case(tmp_path, guidance=4.0), pipeline=PIPELINE),
        cache.case_key(_case(tmp_path, negative="blurry"), pipeline=PIPELINE),
        cache.case_key(_case(tmp_path, lora_scale=0.5), pipeline=PIPELINE),
        cache.case_key(_case(tmp_path), pipeline={**PIPELINE, "dtype": "bfloat16"}),
        cache.case_key(_case(tmp_path), pipeline={**PIPELINE, "device_type": "cuda"}),
        cache.case_key(_case(tmp_path), pipeline={**PIPELINE, "model": {"hub_id": "black-forest-labs/FLUX.1-dev"}}),
    ]
    digests = {v.digest for v in variants}
    assert base.digest not in digests and len(digests) == len(variants)
    write_lora(tmp_path / "k.safetensors", seed=99)  # retrained file, same name: new hash, new key
    assert cache.case_key(_case(tmp_path), pipeline=PIPELINE).digest != base.digest


def test_png_round_trip_carries_the_key_and_writes_atomically(tmp_path):
    key = cache.CacheKey.of({"prompt": "a", "seed": 1})
    path = tmp_path / "images" / "x" / "x_000000_00_1.png"
    image = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
    cache.save_png(image, path, key)
    assert cache.stored_digest(path) == key.digest
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind
    with Image.open(path) as img:
        assert json.loads(img.info["lora_harness"])["prompt"] == "a"
        assert np.array_equal(np.asarray(img), np.asarray(image))
    assert cache.stored_digest(tmp_path / "missing.png") is None
    (tmp_path / "foreign.png").write_bytes(path.read_bytes()[:40])
    assert cache.stored_digest(tmp_path / "foreign.png") is None
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert cache.stored_digest(tmp_path / "plain.png") is None


def test_model_identity_of_folders_and_hub_ids(tmp_path):
    folder = tmp_path / "model"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"0" * 100)
    first = cache.model_identity.__wrapped__(str(folder), None)
    (folder / "model_index.json").write_text('{"_class_name": "FluxPipeline", "x": 1}')
    assert cache.model_identity.__wrapped__(str(folder), None)["files"] != first["files"]
    assert cache.model_identity.__wrapped__("black-forest-labs/FLUX.1-dev", "main") == {
        "hub_id": "black-forest-labs/FLUX.1-dev", "revision": "main",
    } or "snapshot" in cache.model_identity.__wrapped__("black-forest-labs/FLUX.1-dev", "main")


# --- devices -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "worker", "cuda", "expected"),
    [
        ({}, "gw0", 4, "cuda:0"),
        ({}, "gw3", 4, "cuda:3"),
        ({}, "gw5", 4, "cuda:1"),  # more workers than GPUs: round robin
        ({}, "main", 2, "cuda:0"),
        ({"devices": ["cuda:1", "cuda:1", "cuda:0"]}, "gw1", 2, "cuda:1"),
        ({"devices": ["cuda:1", "cuda:1", "cuda:0"]}, "gw2", 2, "cuda:0"),
        ({"device": "cuda"}, "gw1", 2, "cuda:1"),
        ({"device": "cuda:1"}, "gw0", 2, "cuda:1"),
        ({"device": "cpu"}, "gw1", 2, "cpu"),
    ],
)
def test_worker_to_device_mapping(pipeline, worker, cuda, expected):
    device, warning = select_device(PipelineConfig(**pipeline), worker, cuda_count=cuda, mps=False)
    assert (device, warning) == (expected, None)


def test_cpu_fallback_warns_and_impossible_devices_are_errors():
    device, warning = select_device(PipelineConfig(), "gw2", cuda_count=0, mps=False)
    assert device == "cpu" and "no GPU visible to torch: worker gw2 generates on the CPU" in warning
    assert select_device(PipelineConfig(), "gw0", cuda_count=0, mps=True) == ("mps", None)
    with pytest.raises(DeviceError, match="pipeline.device = 'cuda' but torch sees no CUDA GPU"):
        select_device(PipelineConfig(device="cuda"), "gw0", cuda_count=0, mps=False)
    with pytest.raises(DeviceError, match=r"pipeline.device = 'cuda:2' but torch sees 2 CUDA device\(s\)"):
        select_device(PipelineConfig(device="cuda:2"), "gw0", cuda_count=2, mps=False)
    with pytest.raises(DeviceError, match=r"maps worker gw1 to 'cuda:3' but torch sees 2"):
        select_device(PipelineConfig(devices=["cuda:0", "cuda:3"]), "gw1", cuda_count=2, mps=False)
    assert [worker_index(w) for w in ("gw0", "gw12", "main", None)] == [0, 12, 0, 0]


# --- mapping settings onto a pipeline's parameters -------------------------------------------------------------------


class FluxLike:
    def __call__(self, prompt, negative_prompt=None, true_cfg_scale=1.0, height=None, width=None,
                 num_inference_steps=28, guidance_scale=3.5, generator=None, output_type="pil"): ...


class SdxlLike:
    def __call__(self, prompt, height=None, width=None, num_inference_steps=50, guidance_scale=5.0,
                 negative_prompt=None, generator=None, output_type="pil"): ...


class NoSize:
    def __call__(self, prompt, generator=None, output_type="pil"): ...


def test_call_arguments_follow_the_pipeline_signature():
    settings = dict(prompt="p", negative="bad", width=64, height=32, steps=3, guidance=2.5, cfg_scale=4.0, generator="g")
    flux, ignored = call_arguments(FluxLike(), **settings)
    assert flux == {"prompt": "p", "generator": "g", "output_type": "pil", "width": 64, "height": 32,
                    "num_inference_steps": 3, "negative_prompt": "bad", "guidance_scale": 2.5, "true_cfg_scale": 4.0}
    assert ignored == []
    sdxl, _ = call_arguments(SdxlLike(), **settings)
    assert sdxl["guidance_scale"] == 4.0 and "true_cfg_scale" not in sdxl  # one CFG scale: --l wins
    sdxl, _ = call_arguments(SdxlLike(), **{**settings, "cfg_scale": None})
    assert sdxl["guidance_scale"] == 2.5
    bare, ignored = call_arguments(NoSize(), **settings)
    assert set(bare) == {"prompt", "generator", "output_type"}
    assert sorted(ignored) == ["guidance_scale", "height", "negative_prompt", "num_inference_steps", "width"]
    unset, ignored = call_arguments(FluxLike(), **{k: (v if k in ("prompt", "generator") else None) for k, v in settings.items()})
    assert set(unset) == {"prompt", "generator", "output_type"} and ignored == []
    assert "self" in inspect.signature(FluxLike.__call__).parameters


def test_a_final_kohya_file_alone_takes_its_siblings_label_kind(tmp_path):
    """Issue 14: the training hook evaluates one file at a time; the final file must not be labelled by
    ss_steps when the folder's other checkpoints are epochs (that broke the epoch trend line)."""
    epochs = tmp_path / "epochs"
    for epoch in (1, 2):
        write_lora(epochs / f"me-{epoch:06d}.safetensors", seed=epoch)
    final = write_lora(epochs / "me.safetensors", metadata={"ss_epoch": "3", "ss_steps": "30"}, seed=3)
    label = lambda found: [(c.step_kind, c.training_step) for c in found]  # noqa: E731
    assert label(find_checkpoints([final])) == [("epoch", 3)]
    steps = tmp_path / "steps"
    write_lora(steps / "me-step00000010.safetensors", seed=1)
    final_s = write_lora(steps / "me.safetensors", metadata={"ss_epoch": "3", "ss_steps": "30"}, seed=3)
    assert label(find_checkpoints([final_s])) == [("step", 30)]
    lone = write_lora(tmp_path / "lone" / "me.safetensors", metadata={"ss_epoch": "3", "ss_steps": "30"}, seed=3)
    assert label(find_checkpoints([lone])) == [("epoch", 3)]  # ss_epoch before ss_steps
    only_steps = write_lora(tmp_path / "only" / "me.safetensors", metadata={"ss_steps": "30"}, seed=3)
    assert label(find_checkpoints([only_steps])) == [("step", 30)]
    # --step / --epoch (final_step, final_kind) override the label
    assert label(find_checkpoints([final], final_step=700, final_kind="step")) == [("step", 700)]
    assert label(find_checkpoints([final_s], final_step=4, final_kind="epoch")) == [("epoch", 4)]
    assert label(find_checkpoints([final], final_step=5)) == [("epoch", 5)]
