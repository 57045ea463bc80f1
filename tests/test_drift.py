"""Base-model drift on the tiny CPU FLUX pipeline, with known answers: the same kohya sweep generated at LoRA
scale 0 (the LoRA changes nothing, so each leakage image IS the base image and drift is exactly 0) and at
scale 1 (the picture moves: drift > 0). The base image is generated once per prompt and seed, the values land
in the store as metrics of the `<lora>-leakage` cases per step, and `max_drift` gates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")

import tiny_flux  # noqa: E402
from lora_harness.core.cases import Checkpoint  # noqa: E402
from lora_harness.checks.extra_cases import LEAKAGE  # noqa: E402
from lora_harness.checks.drift import base_twin, pixel_drift  # noqa: E402
from lora_harness.checks.extra_cases import cases_for  # noqa: E402
from lora_harness.checks.leakage import evaluate_leakage  # noqa: E402
from lora_harness.checks.registry import run_check  # noqa: E402
from lora_harness.core.config import ConfigError, parse_config  # noqa: E402
from lora_harness.run.harness import Harness  # noqa: E402
from lora_harness.run.store import latest_rows, read_rows  # noqa: E402

pytestmark = pytest.mark.slow

E1, E2 = Checkpoint("tiny-person", 1, "epoch"), Checkpoint("tiny-person", 2, "epoch")


def config_data(root: Path, model: Path, scale: float = 1.0, **leakage) -> dict:
    return {
        "run": {"name": f"drift-scale{scale:g}", "report_dir": str(root / "reports")},
        "pipeline": {"model": str(model), "device": "cpu"},
        "sources": [{"kind": "generate", "lora": str(root / "out"), "scale": scale,
                     "prompts": ["a photo of <phigep> --w 32 --h 32 --s 2 --d 11"]}],
        "judges": [{"name": "pixel_similarity"}],
        "person": {"references": [str(root / "refs")]},
        "gate": {"checkpoints": "all"},
        "leakage": {"prompts": ["a man in a park", "a bowl of fruit"], "metric": "pixel_similarity_max",
                    "max_identity": 1.01, **leakage},
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drift")
    tiny_flux.save_tiny_flux(root / "tiny")
    tiny_flux.write_kohya_sweep(root / "out", epochs=(1, 2), final=False)
    (root / "refs").mkdir()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(root / "refs" / "ref.png")
    return root


@pytest.fixture(scope="module")
def run(root: Path) -> tuple[Harness, Path]:
    harness = Harness(parse_config(config_data(root, root / "tiny", drift=True, max_drift=0.001), base_dir=root), run_id="r1")
    return harness, root


def test_scale_zero_has_no_drift_and_the_lora_fails_the_ceiling(run) -> None:
    harness, root = run
    off = Harness(parse_config(config_data(root, root / "tiny", 0.0, drift=True, max_drift=0.001), base_dir=root), run_id="r0")
    for checkpoint in (E1, E2):
        clean = evaluate_leakage(off, checkpoint)
        assert clean.passed, clean.describe()
        drift_lines = [line for line in clean.lines if "drift_pixel" in line]
        assert len(drift_lines) == 2 and all("drift_pixel = 0.0000 (ceiling 0.001)" in line for line in drift_lines)
    drifted = evaluate_leakage(harness, E2)
    assert not drifted.errors
    assert len(drifted.failures) == 2 and all("drift_pixel" in f and "> ceiling 0.001" in f for f in drifted.failures)
    with pytest.raises(AssertionError, match="drift_pixel"):
        run_check(harness, "lora_leakage_check", E2).check()


def test_values_are_the_image_pair_measured_by_hand_and_stored_per_step(run) -> None:
    harness, root = run
    evaluate_leakage(harness, E2)
    leak = cases_for(harness, E2, LEAKAGE)[0]
    twin = base_twin(leak, harness.config.run_dir)
    twin_e1 = base_twin(cases_for(harness, E1, LEAKAGE)[0], harness.config.run_dir)
    assert twin.key == twin_e1.key and twin.image_path == twin_e1.image_path  # one base image per prompt and seed
    assert twin.lora is None and twin.lora_scale == 0.0 and twin.seed == leak.seed and twin.prompt == leak.prompt
    image, base = np.asarray(Image.open(leak.image_path).convert("RGB")), np.asarray(Image.open(twin.image_path).convert("RGB"))
    assert not np.array_equal(image, base)
    evaluate_leakage(harness, E1)
    rows = [r for r in latest_rows(read_rows(root / "reports" / "drift-scale1")) if r.metric == "drift_pixel"]
    by_key = {r.case_key: r for r in rows}
    assert by_key[leak.key].value == pytest.approx(pixel_drift(image, base)) and by_key[leak.key].value > 0.001
    assert by_key[leak.key].loraname == "tiny-person-leakage" and by_key[leak.key].raw["base_image"] == str(twin.image_path)
    assert {(r.loraname, r.training_step) for r in rows} == {("tiny-person-leakage", 1), ("tiny-person-leakage", 2)}


def test_max_drift_needs_drift_and_known_metrics(root: Path) -> None:
    with pytest.raises(ConfigError, match="drift = true"):
        parse_config(config_data(root, root / "tiny", max_drift=0.1), base_dir=root)
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_config(config_data(root, root / "tiny", drift=True, max_drift={"drift_pixl": 0.1}), base_dir=root)
