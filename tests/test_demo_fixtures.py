"""The committed demo data under fixtures/demo is exactly what fixtures/demo/make_demo.py generates."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DEMO_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
SCRIPT = DEMO_DIR / "make_demo.py"
KOHYA_NAME = re.compile(r"^(?P<name>.+)_(?P<step>\d{6})_(?P<prompt>\d{2})_(?P<ts>\d{14})\.png$")
VARIANTS = ("personal-lora-demo-r4", "personal-lora-demo-r32")
STEPS = (200, 400, 600, 800)
MAX_BYTES = 5 * 1024 * 1024


MODULE_NAME = "_lora_harness_demo_make_demo"


def _load_script():
    pytest.importorskip("skimage", reason="make_demo.py needs scikit-image (the 'dev' extra)")
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    spec = importlib.util.spec_from_file_location(MODULE_NAME, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module  # dataclasses resolve string annotations through sys.modules
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # keep fixtures/demo free of __pycache__
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(MODULE_NAME, None)
        raise
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def _generated_files(root: Path) -> dict[str, Path]:
    """Everything under reference/ and samples/, keyed by path relative to root."""
    files = [p for sub in ("reference", "samples") for p in (root / sub).rglob("*") if p.is_file()]
    return {p.relative_to(root).as_posix(): p for p in files}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image, dtype=np.float64)


def _samples(variant: str, step: int) -> list[Path]:
    paths = sorted((DEMO_DIR / "samples" / variant).glob(f"{variant}_{step:06d}_*.png"))
    assert len(paths) == 3, paths
    return paths


def _checker_energy(path: Path) -> float:
    """Share of spectral magnitude at the 4 px checkerboard frequency (relative to the whole spectrum)."""
    grey = _rgb(path).mean(axis=2)
    spectrum = np.abs(np.fft.fft2(grey - grey.mean()))
    h, w = grey.shape
    return float(spectrum[h // 4, w // 4] + spectrum[-h // 4, -w // 4]) / float(spectrum.sum())


def _content(path: Path) -> bytes:
    """Pixels for images (PNG bytes vary with the Pillow/zlib version), bytes for everything else."""
    if path.suffix == ".png":
        with Image.open(path) as image:
            return image.mode.encode() + repr(image.size).encode() + image.tobytes()
    return path.read_bytes()


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    module = _load_script()
    written = module.build_demo(tmp_path / "demo")
    fresh = _generated_files(tmp_path / "demo")
    committed = _generated_files(DEMO_DIR)
    assert sorted(fresh) == sorted(p.relative_to(tmp_path / "demo").as_posix() for p in written)
    assert sorted(fresh) == sorted(committed), "file set differs: rerun .venv/bin/python fixtures/demo/make_demo.py"
    changed = [name for name in fresh if _content(fresh[name]) != _content(committed[name])]
    assert changed == [], f"regenerated files differ from the committed ones: {changed}"


def test_rerun_in_place_is_idempotent_and_removes_only_its_own_files(tmp_path: Path) -> None:
    module = _load_script()
    out = tmp_path / "demo"
    module.build_demo(out)
    first = {name: _sha256(p) for name, p in _generated_files(out).items()}
    stale = out / "samples" / VARIANTS[0] / f"{VARIANTS[0]}_000100_00_20250101000000.png"
    stale.write_bytes(b"stale")
    foreign = out / "samples" / VARIANTS[0] / "notes.txt"
    foreign.write_text("keep me")
    module.build_demo(out)
    assert not stale.exists()
    assert foreign.read_text() == "keep me"
    foreign.unlink()
    assert {name: _sha256(p) for name, p in _generated_files(out).items()} == first


def test_layout_counts_and_kohya_names() -> None:
    files = _generated_files(DEMO_DIR)
    assert [n for n in files if n.startswith("reference/")] == ["reference/astronaut.png"]
    prompt_files = sorted(n for n in files if n.endswith("sample_prompts.txt"))
    assert prompt_files == sorted(f"samples/{v}/sample_prompts.txt" for v in VARIANTS)
    samples = [p for n, p in files.items() if n.startswith("samples/") and n.endswith(".png")]
    assert len(samples) == 24
    assert len(files) == 27

    seen = set()
    for path in samples:
        match = KOHYA_NAME.match(path.name)
        assert match, path.name
        assert match["name"] == path.parent.name
        assert match["name"] in VARIANTS
        seen.add((match["name"], int(match["step"]), int(match["prompt"])))
        ts = match["ts"]
        assert ts.startswith("20250106"), ts
    assert seen == {(v, s, p) for v in VARIANTS for s in STEPS for p in range(3)}


def test_prompt_files() -> None:
    for variant in VARIANTS:
        text = (DEMO_DIR / "samples" / variant / "sample_prompts.txt").read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == 3
        assert "" in text.splitlines(), "prompts are separated by blank lines"
        assert all(line.startswith("<phigep> ") for line in lines)
        assert "--w 256 --h 256" in lines[0] and "--n " in lines[2]


def test_total_size_under_5_mb() -> None:
    total = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert total < MAX_BYTES, f"fixtures/demo is {total} bytes"


def test_images_are_256_rgb_and_differ_from_the_reference() -> None:
    reference = _rgb(DEMO_DIR / "reference" / "astronaut.png")
    assert reference.shape == (256, 256, 3)
    for variant in VARIANTS:
        for step in STEPS:
            for path in _samples(variant, step):
                image = _rgb(path)
                assert image.shape == (256, 256, 3)
                assert np.abs(image - reference).mean() > 5.0, f"{path.name} is (nearly) a copy of the reference"


def test_variants_are_not_identical() -> None:
    for step in STEPS:
        for a, b in zip(_samples(VARIANTS[0], step), _samples(VARIANTS[1], step)):
            assert _sha256(a) != _sha256(b)
            assert np.abs(_rgb(a) - _rgb(b)).mean() > 1.0


def test_degradations_per_step() -> None:
    for variant in VARIANTS:
        energy = {step: [_checker_energy(p) for p in _samples(variant, step)] for step in STEPS}
        white = {step: [(_rgb(p) == 255).all(axis=2).mean() for p in _samples(variant, step)] for step in STEPS}
        for i in range(3):
            # Periodic artifact: strong at 200, borderline at 600, absent at 400 and 800.
            assert energy[200][i] > 2 * energy[600][i] > 20 * energy[800][i]
            assert energy[400][i] < energy[600][i] / 20
            # Blown-out region at 400 covers at least the ~12% white core; the clean checkpoint has almost none.
            assert white[400][i] >= 0.12
            assert white[800][i] < 0.01
            assert white[600][i] < 0.01


def test_r32_is_worse_than_r4_early() -> None:
    r4, r32 = VARIANTS
    for a, b in zip(_samples(r4, 200), _samples(r32, 200)):
        assert _checker_energy(b) > _checker_energy(a)
    for a, b in zip(_samples(r4, 400), _samples(r32, 400)):
        assert (_rgb(b) == 255).all(axis=2).mean() > (_rgb(a) == 255).all(axis=2).mean()
