"""Diversity per checkpoint with known answers: the set math on vectors checked by hand, then a kohya sample
folder whose step-200 checkpoint is one photo repeated with slight noise and shifts (collapsed: must fail
"all images look alike") and whose step-400 checkpoint holds different real photos (varied: passes), judged
from the sample files alone (no GPU); the values are stored per checkpoint for the trend plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from face_images import astronaut, lfw_face
from lora_harness.core.cases import Checkpoint
from lora_harness.checks.diversity import set_scores
from lora_harness.checks.registry import params, run_check
from lora_harness.core.config import ConfigError, parse_config
from lora_harness.analyses.diversity_metrics import image_embeddings, mean_pairwise_cosine_distance, mean_pairwise_distance, vendi_score
from lora_harness.run.harness import Harness
from lora_harness.run.store import latest_rows, read_rows

LORA = "person-lora"


def test_vendi_counts_distinct_items() -> None:
    same = np.tile([[1.0, 2.0, 3.0]], (5, 1))
    assert vendi_score(same) == pytest.approx(1.0)
    assert vendi_score(np.eye(4)) == pytest.approx(4.0)
    two_groups = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    assert vendi_score(two_groups) == pytest.approx(2.0)


def test_pairwise_distances_by_hand() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # pairs: (0,1) cos 0 -> 1; (0,2) cos -1 -> 2; (1,2) cos 0 -> 1
    assert mean_pairwise_cosine_distance(x) == pytest.approx(4 / 3)
    assert mean_pairwise_distance(x) == pytest.approx((np.sqrt(2) + 2 + np.sqrt(2)) / 3)
    with pytest.raises(ValueError, match="at least two"):
        mean_pairwise_cosine_distance(x[:1])


def collapsed(n: int, side: int = 256) -> list[np.ndarray]:
    """One picture n times: a few px shift and mild noise each (what a collapsed LoRA draws)."""
    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(astronaut()).resize((side + 8, side + 8)))
    out = []
    for i in range(n):
        dx, dy = rng.integers(0, 5, size=2)
        crop = base[dy:dy + side, dx:dx + side].astype(np.int16) + rng.integers(-6, 7, size=(side, side, 3))
        out.append(np.clip(crop, 0, 255).astype(np.uint8))
    return out


def varied(side: int = 256) -> list[np.ndarray]:
    """Different pictures (two of them the same person, framed differently)."""
    sources = [astronaut()[0:300, 100:400], astronaut(), data.chelsea(), lfw_face(74, face_px=140)]
    return [np.asarray(Image.fromarray(np.ascontiguousarray(s)).convert("RGB").resize((side, side))) for s in sources]


def test_collapsed_set_scores_near_zero_and_a_varied_one_high() -> None:
    low = set_scores(collapsed(4), None, 0)
    high = set_scores(varied(), None, 0)
    low_v, high_v = {s.metric: s.value for s in low}, {s.metric: s.value for s in high}
    assert low_v["diversity_image"] < 0.05 and high_v["diversity_image"] > 0.3
    assert low_v["vendi_image"] < 1.2 and high_v["vendi_image"] > 2.5
    reframed = image_embeddings(varied()[:2])  # the same photo, re-framed: diverse enough to pass the default
    assert mean_pairwise_cosine_distance(reframed) > 0.3


def sample_folder(root: Path) -> Path:
    folder = root / "samples" / LORA
    folder.mkdir(parents=True)
    (folder / "sample_prompts.txt").write_text("\n".join(f"<phigep> photo {i} --d 42" for i in range(4)) + "\n")
    for step, images in ((200, collapsed(4)), (400, varied())):
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{LORA}_{step:06d}_{i:02d}_20250106170134.png")
    return folder


def harness_for(root: Path, diversity: dict | None, judges: list | None = None) -> Harness:
    data_ = {
        "run": {"name": "div", "report_dir": str(root / "reports")},
        "sources": [{"path": str(sample_folder(root) if not (root / "samples").exists() else root / "samples" / LORA)}],
        "judges": judges or [{"name": "image_stats"}],
        "gate": {"checkpoints": "all"},
    }
    if diversity is not None:
        data_["diversity"] = diversity
    return Harness(parse_config(data_, base_dir=root), run_id="r1")


def test_collapsed_checkpoint_fails_its_minimum_and_varied_passes(tmp_path: Path) -> None:
    harness = harness_for(tmp_path, {"identity": False})
    values, ids = params(harness, "lora_diversity_check")
    assert values == [Checkpoint(LORA, 200, "step"), Checkpoint(LORA, 400, "step")]
    collapsed_check = run_check(harness, "lora_diversity_check", values[0])
    with pytest.raises(AssertionError, match="all images look alike") as failure:
        collapsed_check.check()
    assert "diversity_image = 0.0" in str(failure.value) and "< minimum 0.1" in str(failure.value)
    run_check(harness, "lora_diversity_check", values[1]).check()  # varied: passes
    rows = [r for r in latest_rows(read_rows(tmp_path / "reports" / "div")) if r.judge == "diversity"]
    by_step = {(r.training_step, r.metric): r.value for r in rows}
    assert by_step[(200, "diversity_image")] < 0.05 < 0.3 < by_step[(400, "diversity_image")]
    assert {r.metric for r in rows} == {"diversity_image", "vendi_image"}  # identity = false: image metrics only


def test_without_section_one_skipping_parameter_and_unknown_metric_is_refused(tmp_path: Path) -> None:
    assert params(harness_for(tmp_path, None), "lora_diversity_check") == ([None], ["no-diversity-config"])
    with pytest.raises(ConfigError, match="unknown diversity metric"):
        harness_for(tmp_path, {"min": {"diversty_image": 0.1}})


@pytest.mark.slow
@pytest.mark.parametrize("judges", [[{"name": "face_identity"}], [{"name": "image_stats"}]], ids=["stored", "detected"])
def test_identity_diversity_from_real_faces(tmp_path: Path, judges: list) -> None:
    """With face_identity configured, its stored descriptors are reused; without it, faces are detected here."""
    pytest.importorskip("dlib", reason="identity diversity needs the `face` extra")
    harness = harness_for(tmp_path, {"min": {"diversity_identity": 0.2}}, judges=judges)
    with pytest.raises(AssertionError, match=r"diversity_identity = 0\.\d+ < minimum 0\.2"):
        run_check(harness, "lora_diversity_check", Checkpoint(LORA, 200, "step")).check()
    run_check(harness, "lora_diversity_check", Checkpoint(LORA, 400, "step")).check()
    rows = {(r.training_step, r.metric): r for r in latest_rows(read_rows(tmp_path / "reports" / "div")) if r.judge == "diversity"}
    varied_identity = rows[(400, "diversity_identity")]
    assert varied_identity.value > 0.3  # the astronaut twice and an LFW stranger: one pair far apart
    assert varied_identity.raw["images_without_face"] == 1  # the cat
    if judges[0]["name"] == "face_identity":  # the same faces either way: the judge's stored descriptors were used
        assert {r.metric for r in latest_rows(read_rows(tmp_path / "reports" / "div")) if r.judge == "face_identity"}


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_stock_check_suite_fails_the_collapsed_checkpoint(pytester: pytest.Pytester) -> None:
    folder = sample_folder(pytester.path)
    (pytester.path / "test_suite_checks.py").write_text((REPO / "evals" / "test_lora_checks.py").read_text())
    (pytester.path / "lora_eval.toml").write_text(
        f'[run]\nname = "div"\nreport_dir = "reports"\n\n[[sources]]\npath = "{folder}"\n\n[[judges]]\nname = "image_stats"\n\n'
        '[gate]\ncheckpoints = "all"\n\n[diversity]\nidentity = false\nmin = { diversity_image = 0.1 }\n'
    )
    result = pytester.runpytest_subprocess("--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider",
                                           "-p", "no:xdist", "-k", "diversity")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_diversity*step000200*", "*all images look alike*"], consecutive=False)
