"""Generation mode through the full plugin path in a pytest subprocess: a kohya checkpoint sweep x prompts is
generated with a tiny FLUX pipeline on CPU, judged by image_stats and written to CSV; a rerun reuses every
image without building the pipeline; the `flux_pipeline` and `lora` fixtures work in a user's own test."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("diffusers")

import tiny_flux  # noqa: E402
from generation_log import read_log  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVAL_TEST = (REPO / "evals" / "test_lora.py").read_text()

FIXTURE_TESTS = '''
import numpy as np
import torch

LORA = {lora!r}


def generate(pipe):
    image = pipe("a photo", width=32, height=32, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    return np.asarray(image).astype(int)


def test_lora_fixture_switches_on_the_shared_pipeline(flux_pipeline, lora):
    base = generate(flux_pipeline)
    lora.use(LORA)
    assert lora.adapters() == [lora.active.adapter]
    assert np.abs(generate(flux_pipeline) - base).mean() > 1.0
    lora.use(None)
    assert np.array_equal(generate(flux_pipeline), base)
    lora.use(LORA)  # left active on purpose: the fixture removes it after the test


def test_adapters_are_gone_after_the_previous_test(flux_pipeline, lora):
    assert lora.adapters() == [] and lora.active is None
'''


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gen-assets")
    model = tiny_flux.save_tiny_flux(root / "tiny-flux")
    tiny_flux.write_kohya_sweep(root / "output", name="tiny-person", epochs=(1, 2), final=False)
    extra = tiny_flux.write_diffusers_lora(root / "other.safetensors")
    return {"model": model, "output": root / "output", "other": extra}


def write_suite(root: Path, assets: dict[str, Path]) -> None:
    (root / "sample_prompts.txt").write_text(
        "# prompts as kohya reads them\n"
        "a photo of <phigep> --w 32 --h 32 --s 2 --d 11\n"
        "<phigep> on a beach --w 48 --h 32 --s 2 --d 12\n"
    )
    (root / "lora_eval.toml").write_text(
        f"""[run]
name = "gen"
report_dir = "reports"

[pipeline]
model = "{assets['model']}"

[[sources]]
kind = "generate"
lora = "{assets['output']}"
prompts = "sample_prompts.txt"

[[judges]]
name = "image_stats"

[thresholds.magnitude_score]
image = 0.0
"""
    )
    (root / "test_lora.py").write_text(EVAL_TEST)
    (root / "test_fixtures.py").write_text(FIXTURE_TESTS.format(lora=str(assets["other"])))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider", *args)


def events(run_dir: Path) -> list[dict]:
    """Every worker's generation log, oldest first."""
    return read_log(run_dir / "images")


def test_generate_judge_csv_then_a_rerun_reuses_every_image(pytester: pytest.Pytester, assets, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a shared 2-core machine: one thread per process
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_suite(pytester.path, assets)
    run_dir = pytester.path / "reports" / "gen"

    first = run(pytester, "-W", "always::UserWarning")
    # 2 checkpoints x 2 prompts x 1 seed images, 2 checkpoint tests, 2 fixture tests.
    first.assert_outcomes(passed=8)
    first.stdout.fnmatch_lines(["*no GPU visible to torch: worker main generates on the CPU*"])
    images = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "images").rglob("*.png") if "_reference" not in p.parts)
    assert len(list((run_dir / "images" / "_reference").glob("*.png"))) == 1  # base model, prompt 00: the no-effect check
    assert images == [
        "images/tiny-person/tiny-person_e000001_00_11.png", "images/tiny-person/tiny-person_e000001_01_12.png",
        "images/tiny-person/tiny-person_e000002_00_11.png", "images/tiny-person/tiny-person_e000002_01_12.png",
    ]
    wide = pd.read_csv(run_dir / "scores.csv", dtype=str)
    assert len(wide) == 4 and set(wide["loraname"]) == {"tiny-person"}
    assert set(wide["training_step"]) == {"e000001", "e000002"} and set(wide["prompt_id"]) == {"00", "01"}
    assert set(wide["seed"]) == {"11", "12"} and wide["spectral_score"].notna().all()
    assert {Path(p).name for p in wide["image"]} == {Path(p).name for p in images}
    log = events(run_dir)
    assert sorted(e["action"] for e in log if e["event"] == "image") == ["generated"] * 4
    assert [e["event"] for e in log].count("pipeline") == 1
    # Each checkpoint's LoRA was applied once, before all of that checkpoint's images (then the next one).
    sweep = [(e["event"], Path(e.get("file") or e.get("image")).name) for e in log
             if e["event"] == "image" or "tiny-person" in e.get("file", "")]
    assert [name for _, name in sweep] == [
        "tiny-person-000001.safetensors", "tiny-person_e000001_00_11.png", "tiny-person_e000001_01_12.png",
        "tiny-person-000002.safetensors", "tiny-person_e000002_00_11.png", "tiny-person_e000002_01_12.png",
    ]

    # The rerun (two xdist workers) judges again from the cache: no pipeline, no LoRA, no image made.
    mtimes = {p: p.stat().st_mtime_ns for p in (run_dir / "images").rglob("*.png")}
    before = len(events(run_dir))
    second = run(pytester, "test_lora.py", "-n", "2", "--lora-progress", "0")
    second.assert_outcomes(passed=6)
    second.stdout.fnmatch_lines(["*lora-harness generating and judging: 2/2 checkpoints (4/4 images), *, done"])
    new = events(run_dir)[before:]
    assert sorted((e["event"], e["action"]) for e in new) == [("image", "reused")] * 4
    assert {e["worker"] for e in new} <= {"gw0", "gw1"}
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "images").rglob("*.png")} == mtimes
    stored = [json.loads(line) for path in (run_dir / "scores").glob("*.jsonl") for line in path.read_text().splitlines() if line]
    assert len({row["run_id"] for row in stored}) == 2  # the rerun re-judged the cached images; both runs' rows kept
