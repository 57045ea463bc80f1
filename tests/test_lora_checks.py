"""LoRA-specific checks (lora_harness.checks) end to end on the tiny CPU FLUX pipeline, in process.

What the known answers prove. The tiny pipeline has random weights (no faces), so identity is measured with
the model-free `pixel_similarity` judge, and references / training images are copies of generated images:
a copy scores exactly 1.0, while distinct tiny-pipeline images correlate at most ~0.999 (measured 0.98-0.999),
so ceilings of 0.9999 separate "is this very image" from "is another image". With that:
- leakage: the reference is the epoch-2 leakage image, so epoch 2 leaks (gated: fails) and epoch 1 does not;
- strength: a reference equal to the epoch-2 scale-1.0 image makes identity(1.0) = 1 > identity(0) there
  (passes), while at epoch 1 the gain is negative (ungated: xfail); scale 0 is the same base image at both;
- memorization: a training folder holding a copy of the epoch-2 image and an unrelated photo flags exactly
  that image, naming the copy, and not the epoch-1 image;
and every value lands in the store / scores.csv under `<lora>-leakage` and `<lora>-scale<s>` per step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("diffusers")

import tiny_flux  # noqa: E402
from lora_harness.core.cases import Checkpoint  # noqa: E402
from lora_harness.checks.leakage import evaluate_leakage  # noqa: E402
from lora_harness.checks.memorization import MemorizationCheck  # noqa: E402
from lora_harness.checks.strength import evaluate_strength, scale_means  # noqa: E402
from lora_harness.checks.result import CheckResult  # noqa: E402
from lora_harness.checks.registry import params, run_check  # noqa: E402
from lora_harness.core.config import ConfigError, parse_config  # noqa: E402
from lora_harness.run.harness import Harness  # noqa: E402
from lora_harness.judges import JudgeContext, create_judge  # noqa: E402
from lora_harness.report.csv import write_score_csvs  # noqa: E402
from lora_harness.run.store import latest_rows, read_rows  # noqa: E402

pytestmark = pytest.mark.slow  # builds and runs the tiny pipeline once for the module (a few seconds)

E1, E2 = Checkpoint("tiny-person", 1, "epoch"), Checkpoint("tiny-person", 2, "epoch")


def astronaut(path: Path) -> Path:
    from skimage import data

    Image.fromarray(data.astronaut()).resize((64, 64)).save(path)
    return path


def config_data(root: Path, model: Path) -> dict:
    return {
        "run": {"name": "checks", "report_dir": str(root / "reports")},
        "pipeline": {"model": str(model), "device": "cpu"},
        "sources": [{"kind": "generate", "lora": str(root / "out"), "prompts": ["a photo of <phigep> --w 32 --h 32 --s 2 --d 11"]}],
        "person": {"references": [str(root / "refs")]},
        "judges": [{"name": "pixel_similarity"}],
        "gate": {"checkpoints": "latest"},
        "leakage": {"prompts": ["a man in a park"], "metric": "pixel_similarity_max", "max_identity": 0.9999},
        "strength": {"scales": [0, 0.5, 1.0], "metric": "pixel_similarity_max", "margin": 0.005, "checkpoints": "all"},
        "memorization": {"training_dir": str(root / "train"), "judges": ["pixel_similarity"], "max_similarity": 0.9999},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Harness, Path]:
    root = tmp_path_factory.mktemp("checks")
    model = tiny_flux.save_tiny_flux(root / "tiny")
    tiny_flux.write_kohya_sweep(root / "out", epochs=(1, 2), final=False)
    (root / "refs").mkdir()
    (root / "train" / "10_person").mkdir(parents=True)
    harness = Harness(parse_config(config_data(root, model), base_dir=root), run_id="r1")
    by_key = {c.key: c for c in harness.cases + harness.check_cases}
    for case in by_key.values():
        harness.image(case)  # generate everything first; references are read lazily at the first judging
    shutil.copy(by_key["tiny-person-leakage-epoch000002-pL00-s11"].image_path, root / "refs" / "leak2.png")
    shutil.copy(by_key["tiny-person-scale1-epoch000002-pS00-s11"].image_path, root / "refs" / "strength2.png")
    shutil.copy(by_key["tiny-person-epoch000002-p00-s11"].image_path, root / "train" / "10_person" / "copy.png")
    astronaut(root / "train" / "10_person" / "unrelated.png")
    (root / "train" / "10_person" / "copy.txt").write_text("caption files are ignored")
    return harness, root


def test_check_cases_have_their_own_names_roles_and_scales(run) -> None:
    harness, _ = run
    keys = sorted(c.key for c in harness.check_cases)
    assert keys == sorted(
        [f"tiny-person-leakage-epoch00000{e}-pL00-s11" for e in (1, 2)]
        + [f"tiny-person-scale{s}-epoch00000{e}-pS00-s11" for e in (1, 2) for s in ("0", "0.5", "1")]
    )
    scale_half = next(c for c in harness.check_cases if c.loraname == "tiny-person-scale0.5")
    assert (scale_half.lora_scale, scale_half.role, scale_half.extra) == (0.5, "strength", {"scale": "0.5", "of": "tiny-person"})
    leak = next(c for c in harness.check_cases if c.role == "leakage")
    assert leak.prompt.text == "a man in a park" and (leak.prompt.width, leak.prompt.steps) == (32, 2)  # source settings
    # The LoRA's own cases, checkpoints and gates do not include them (no trigger-prompt thresholds apply).
    assert not any(c.is_check for c in harness.cases)
    assert harness.checkpoints == [E1, E2] and harness.gated == {E2}
    # Scale 0 is the base model: the same image at both checkpoints; scale 1 is the LoRA's own image.
    images = {c.key: np.asarray(Image.open(c.image_path)) for c in harness.cases + harness.check_cases}
    assert np.array_equal(images["tiny-person-scale0-epoch000001-pS00-s11"], images["tiny-person-scale0-epoch000002-pS00-s11"])
    assert np.array_equal(images["tiny-person-scale1-epoch000002-pS00-s11"], images["tiny-person-epoch000002-p00-s11"])
    assert not np.array_equal(images["tiny-person-scale1-epoch000002-pS00-s11"], images["tiny-person-scale0-epoch000002-pS00-s11"])


def test_leakage_fails_where_the_reference_appears_without_the_trigger(run) -> None:
    harness, _ = run
    leaked, clean = evaluate_leakage(harness, E2), evaluate_leakage(harness, E1)
    assert len(leaked.failures) == 1 and "pixel_similarity_max = 1.0000 >= ceiling 0.9999" in leaked.failures[0]
    assert "a man in a park" in leaked.failures[0] and not leaked.errors
    assert clean.passed and len(clean.lines) == 1 and "< 0.9999" in clean.lines[0]
    with pytest.raises(AssertionError, match="leakage of tiny-person-epoch000002: FAIL\\b"):
        run_check(harness, "lora_leakage_check", E2).check()  # gated (latest): fails
    run_check(harness, "lora_leakage_check", E1).check()  # passes


def test_strength_gain_is_gated_per_checkpoint(run) -> None:
    harness, _ = run
    good = evaluate_strength(harness, E2)
    means = scale_means(harness, E2, CheckResult("strength", E2))
    assert means[1.0] == pytest.approx(1.0) and means[0.0] < 0.9999 and set(means) == {0.0, 0.5, 1.0}
    assert good.passed and good.lines[0].startswith("pixel_similarity_max(1) - pixel_similarity_max(0) = 1.0000 - ")
    assert any(line.startswith("scale 0.5: pixel_similarity_max = ") for line in good.lines)
    bad = evaluate_strength(harness, E1)
    assert len(bad.failures) == 1 and "< margin 0.005" in bad.failures[0]
    with pytest.raises(pytest.xfail.Exception, match="not gated: strength of tiny-person-epoch000001: FAIL\\b"):
        run_check(harness, "lora_strength_check", E1).check()  # ungated: reported, not failed


def test_memorization_flags_the_copied_image_and_names_the_training_file(run) -> None:
    harness, root = run
    checker = MemorizationCheck()
    copied, other = checker.evaluate(harness, E2), checker.evaluate(harness, E1)
    assert len(copied.failures) == 1
    assert "memorization_pixel_similarity_max = 1.0000 > ceiling 0.9999" in copied.failures[0]
    assert str(root / "train" / "10_person" / "copy.png") in copied.failures[0]
    assert other.passed and "closest:" in other.lines[0]
    # Recorded in the store with the matching training image and the closest ones.
    stored = {r.case_key: r for r in latest_rows(read_rows(root / "reports" / "checks"))
              if r.metric == "memorization_pixel_similarity_max"}
    memo = stored["tiny-person-epoch000002-p00-s11"]
    assert memo.value == pytest.approx(1.0) and memo.raw["training_image"] == str(root / "train" / "10_person" / "copy.png")
    assert len(memo.raw["closest_training_images"]) == 2  # the caption .txt is not an image
    assert stored["tiny-person-epoch000001-p00-s11"].value < 0.9999
    # The case's own judges still run afterwards (memorization does not stand in for its score set).
    assert set(harness.score(harness.cases_of(E1)[0])) == {"pixel_similarity_mean", "pixel_similarity_max"}
    # The report lists the near-copy among the failing cases, with the ceiling it broke.
    from lora_harness.report.view import Rules, build_view

    view = build_view(latest_rows(read_rows(root / "reports" / "checks")), Rules.of(harness.config))
    flagged = {c.key: c.findings for c in view.failing_cases}
    assert "memorization_pixel_similarity_max = 1.0000 > 0.9999 (per-image maximum)" in flagged["tiny-person-epoch000002-p00-s11"]
    assert not any("memorization" in f for f in flagged.get("tiny-person-epoch000001-p00-s11", []))


def test_check_scores_reach_the_store_and_csv_per_step(run) -> None:
    harness, root = run
    for checkpoint in (E1, E2):
        evaluate_leakage(harness, checkpoint), evaluate_strength(harness, checkpoint)
    run_dir = root / "reports" / "checks"
    write_score_csvs(latest_rows(read_rows(run_dir)), run_dir)
    wide = pd.read_csv(run_dir / "scores.csv", dtype=str)
    rows = wide[wide["loraname"].str.startswith("tiny-person-")]
    assert sorted(set(zip(rows["loraname"], rows["training_step"]))) == sorted(
        (f"tiny-person-{name}", step) for name in ("leakage", "scale0", "scale0.5", "scale1") for step in ("e000001", "e000002")  # kohya epochs
    )
    assert rows["pixel_similarity_max"].notna().all()


def test_without_sections_each_check_has_one_skipping_parameter(run, tmp_path) -> None:
    harness, root = run
    data = config_data(root, root / "tiny")
    for key in ("leakage", "strength", "memorization"):
        del data[key]
    bare = Harness(parse_config(data, base_dir=root), run_id="r2")
    assert bare.check_cases == []
    assert params(bare, "lora_leakage_check") == ([None], ["no-leakage-config"])
    assert params(bare, "lora_memorization_check") == ([None], ["no-memorization-config"])
    assert params(harness, "lora_strength_check") == ([E1, E2], ["tiny-person-epoch000001", "tiny-person-epoch000002"])
