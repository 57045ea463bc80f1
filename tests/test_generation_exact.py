"""Issue 14: generation never produces a silently wrong image (tiny FLUX pipeline on CPU; diffusers: slow).

Switching LoRAs in one pipeline must give exactly what a fresh pipeline with only that LoRA gives, whatever
was loaded before (alphas, ranks, formats differ); a LoRA that changes nothing is an error, not a pass.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import tiny_flux  # noqa: E402
from tiny_flux import model_dir, one_thread  # noqa: E402,F401  (module-scoped fixtures)
from lora_harness.generation.errors import LoraNoEffectError  # noqa: E402
from lora_harness.generation.lora import LoraManager, validate_lora  # noqa: E402
from lora_harness.generation.pipeline import Target, load_pipeline  # noqa: E402
from lora_harness.generation.settings import PipelineConfig  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    found = {f"peft_a{a}": tiny_flux.write_peft_alpha_lora(root / f"peft_a{a}.safetensors", alpha=a) for a in (4, 2, 1)}
    found["saved_a8"] = tiny_flux.write_saved_lora(root / "saved8", alpha=8, name="saved_a8")
    found["saved_a2"] = tiny_flux.write_saved_lora(root / "saved2", alpha=2, name="saved_a2")
    found["saved_a2_r8"] = tiny_flux.write_saved_lora(root / "saved2r8", alpha=2, rank=8, seed=21, name="saved_a2_r8")
    found["rank8"] = tiny_flux.write_diffusers_lora(root / "rank8.safetensors", rank=8, seed=11)
    found["kohya"] = tiny_flux.write_kohya_lora(root / "kohya.safetensors")
    found["zero"] = tiny_flux.write_zero_lora(root / "zero.safetensors")
    return found


def load(model_dir: Path):
    return load_pipeline(PipelineConfig(model=str(model_dir), device="cpu"), Target("cpu", "float32"))


def image(pipe) -> np.ndarray:
    out = pipe("a photo of sks person", width=32, height=32, num_inference_steps=2,
               generator=torch.Generator().manual_seed(7), output_type="np")
    return np.asarray(out.images[0])


@pytest.fixture(scope="module")
def fresh(model_dir, files) -> dict[str, np.ndarray]:
    """Each LoRA loaded by diffusers itself (`load_lora_weights`) into its own freshly loaded pipeline."""
    images = {}
    for name, path in files.items():
        if name == "zero":
            continue
        pipe = load(model_dir)
        pipe.load_lora_weights(str(path), adapter_name="fresh")
        images[name] = image(pipe)
    return images


@pytest.mark.parametrize(
    "group",
    [
        ("peft_a4", "peft_a2", "peft_a1"),  # same weights, alphas 4/2/1: the hot-swap that kept the first scaling
        ("saved_a8", "saved_a2", "saved_a2_r8"),  # save_lora_weights files: alpha and rank in stored metadata
        ("rank8", "kohya", "peft_a2"),  # other ranks and formats (kohya folds alpha into the weights)
    ],
)
def test_every_load_order_gives_the_fresh_load_image_bit_for_bit(model_dir, files, fresh, group):
    images = list(fresh[name] for name in group)
    assert all(np.abs(a - b).max() > 1e-3 for a, b in itertools.combinations(images, 2))  # the LoRAs differ
    manager = LoraManager(load(model_dir))
    for order in itertools.permutations(group):
        for name in order:
            manager.use(files[name])
            got = image(manager.pipe)
            assert np.array_equal(got, fresh[name]), f"{name} after {order}: max diff {np.abs(got - fresh[name]).max()}"
    sequence = [name for order in itertools.permutations(group) for name in order]
    switches = 1 + sum(a != b for a, b in zip(sequence, sequence[1:]))
    assert manager.loads + manager.swaps == switches  # a repeated file keeps its adapter


def test_same_scaling_sweep_still_hot_swaps_and_is_exact(model_dir, files, fresh, tmp_path):
    other = tiny_flux.write_peft_alpha_lora(tmp_path / "peft_a2_other.safetensors", alpha=2, seed=99)
    pipe = load(model_dir)
    pipe.load_lora_weights(str(other), adapter_name="fresh")
    fresh_other = image(pipe)
    manager = LoraManager(load(model_dir))
    manager.use(files["peft_a2"])
    manager.use(other)
    assert (manager.loads, manager.swaps) == (1, 1)  # same modules, ranks and alphas: swapped in place
    assert np.array_equal(image(manager.pipe), fresh_other)
    manager.use(files["peft_a4"])  # other alpha: replaced, not swapped
    assert (manager.loads, manager.swaps) == (2, 1)
    assert np.array_equal(image(manager.pipe), fresh["peft_a4"])


def test_a_lora_with_zero_delta_is_an_error_naming_the_file(model_dir, files):
    pipe = load(model_dir)
    with pytest.raises(LoraNoEffectError, match=r"zero\.safetensors: this LoRA changes nothing: all 4 module\(s\) have a zero delta"):
        LoraManager(pipe).use(files["zero"])
    assert pipe.get_list_adapters() in ({}, {"transformer": []}) or not any(pipe.get_list_adapters().values())
    assert not validate_lora(pipe, files["peft_a1"]).zero_delta


# --- the image cache verifies pixels -------------------------------------------------------------------------


def _cases(root: Path, lora: Path):
    from lora_harness.core.config import parse_config
    from lora_harness.sources import collect_cases

    data = {"run": {"name": "t", "report_dir": str(root / "reports")}, "judges": [{"name": "image_stats"}],
            "sources": [{"kind": "generate", "lora": str(lora), "prompts": ["a photo of sks --w 32 --h 32 --s 2"], "seeds": [3, 4]}]}
    return collect_cases(parse_config(data, base_dir=root))


def _corrupt_idat(path: Path) -> None:
    """Flip bytes inside the PNG's pixel data, after the text chunk that holds the key."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    for offset in range(start, min(start + 24, len(data) - 12)):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _overwrite_pixels(path: Path) -> None:
    """Another tool rewrites the image with other pixels but keeps the text chunk (PIL round trip)."""
    from PIL import Image, PngImagePlugin

    with Image.open(path) as img:
        text = img.info["lora_harness"]
        pixels = np.asarray(img.convert("RGB")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    info = PngImagePlugin.PngInfo()
    info.add_text("lora_harness", text)
    Image.fromarray(pixels).save(path, pnginfo=info)


def _reseal_crc(path: Path) -> None:
    """Alter pixel data and fix the chunk CRC (as a tool editing bytes would): only the seal can tell."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    pos = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[pos:pos + 4])
    data[pos + 8 + length // 2] ^= 0x01
    body = bytes(data[pos + 4:pos + 8 + length])
    data[pos + 8 + length:pos + 12 + length] = struct.pack(">I", zlib.crc32(body))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) * 2 // 3]), r"cached PNG is damaged \(truncated inside a IDAT chunk"),
        (_corrupt_idat, r"cached PNG is damaged \(CRC mismatch in a IDAT chunk at byte \d+: the bytes were altered"),
        (_reseal_crc, "pixel data differs from the seal written with it"),
        (_overwrite_pixels, "pixels differ from the digest stored when it was generated"),  # no seal: full decode
    ],
    ids=["truncated", "corrupt-idat", "altered-valid-crc", "other-pixels"],
)
def test_a_damaged_cached_png_is_regenerated_and_the_log_says_why(model_dir, files, tmp_path, damage, reason):
    import re

    from generation_log import read_log
    from lora_harness.generation.cache import check_cached
    from lora_harness.generation.engine import ImageGenerator
    from lora_harness.generation.settings import PipelineConfig as Config

    cases = _cases(tmp_path, files["peft_a2"])
    first = ImageGenerator(Config(model=str(model_dir), device="cpu"), images_dir=tmp_path / "images")
    for case in cases:
        first.materialize(case, cases)
    original = {c.key: c.image_path.read_bytes() for c in cases}
    damaged, intact = cases
    damage(damaged.image_path)
    assert damaged.image_path.read_bytes() != original[damaged.key]
    rerun = ImageGenerator(Config(model=str(model_dir), device="cpu"), images_dir=tmp_path / "images", worker="rerun")
    for case in cases:
        rerun.materialize(case, cases)
    assert rerun.stats["generated"] == 1 and rerun.stats["reused"] == 1 and rerun.stats["corrupt"] == 1
    assert {c.key: c.image_path.read_bytes() for c in cases} == original  # regenerated bit for bit
    (invalid,) = [e for e in read_log(tmp_path / "images") if e.get("action") == "invalid"]
    assert invalid["case"] == damaged.key and re.search(reason, invalid["reason"])
    assert check_cached(intact.image_path, rerun._key(intact).digest).usable


# --- a LoRA that changes nothing, after generation -----------------------------------------------------------


def test_a_lora_whose_images_equal_the_base_models_fails_even_from_the_cache(model_dir, files, tmp_path):
    from lora_harness.core.config import parse_config
    from generation_log import read_log
    from lora_harness.generation.engine import REFERENCE_DIRNAME, ImageGenerator
    from lora_harness.generation.errors import CaseGenerationError
    from lora_harness.generation.settings import PipelineConfig as Config
    from lora_harness.sources import collect_cases

    faint = tiny_flux.write_diffusers_lora(tmp_path / "faint.safetensors", strength=1e-6)  # non-zero, no visible effect
    prompts = ["a photo of sks --w 32 --h 32 --s 2"]
    data = {"run": {"name": "t", "report_dir": str(tmp_path / "reports")}, "judges": [{"name": "image_stats"}],
            "sources": [{"kind": "generate", "lora": str(faint), "prompts": prompts, "seeds": [3, 4], "baseline": "none"},
                        {"kind": "generate", "lora": str(files["peft_a2"]), "prompts": prompts, "seeds": [3, 4]}]}
    cases = collect_cases(parse_config(data, base_dir=tmp_path))
    assert not validate_lora(load(model_dir), faint).zero_delta  # passes the load-time check: only pixels tell

    def outcome(generator):
        results = {}
        for case in cases:
            try:
                generator.materialize(case, [c for c in cases if c.lora == case.lora])
                results[case.loraname, case.seed] = "ok"
            except CaseGenerationError as exc:
                results[case.loraname, case.seed] = str(exc)
        return results

    first = ImageGenerator(Config(model=str(model_dir), device="cpu"), images_dir=tmp_path / "images")
    results = outcome(first)
    assert results[("peft_a2", 3)] == results[("peft_a2", 4)] == results[("base-model", 3)] == "ok"
    for seed in (3, 4):
        assert re.search(r"cannot generate faint-\S+: this LoRA does not change the image: faint\.safetensors at scale 1 "
                         r"gives the base model's image for prompt 00 seed 3 \(max pixel difference [01] <= 1", results[("faint", seed)])
    (reference,) = (tmp_path / "images" / REFERENCE_DIRNAME).glob("*.png")  # one base image serves both LoRAs (seed 3)
    base3 = next(c for c in cases if c.lora is None and c.seed == 3)
    assert np.array_equal(np.asarray(Image.open(reference)), np.asarray(Image.open(base3.image_path)))  # scale 0 is exact
    assert first.stats["reference"] == 1
    # A rerun from the cache fails the same way without building the pipeline.
    rerun = ImageGenerator(Config(model=str(model_dir), device="cpu"), images_dir=tmp_path / "images", worker="rerun")
    again = outcome(rerun)
    assert again == results and rerun._pipe is None and rerun.stats["generated"] == 0
    assert [e["action"] for e in read_log(tmp_path / "images") if e["event"] == "lora" and e["action"] == "no_effect"] == ["no_effect"] * 2
