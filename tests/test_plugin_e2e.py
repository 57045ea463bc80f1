"""End-to-end runs of the plugin in a pytest subprocess: parametrization, gating, xdist, the store, CSV."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"
EVAL_TEST = (REPO / "evals" / "test_lora.py").read_text()


def write_suite(root: Path, *, gate: str = '"latest"', extra: str = "", samples: list[Path] | None = None) -> Path:
    """An eval folder like evals/: the stock test file and a config over copies of the demo samples."""
    samples = samples or [DEMO / "samples" / "personal-lora-demo-r4", DEMO / "samples" / "personal-lora-demo-r32"]
    sources = ""
    for folder in samples:
        target = root / "samples" / folder.name
        if not target.exists():
            shutil.copytree(folder, target)
        sources += f'[[sources]]\npath = "samples/{folder.name}"\n\n'
    (root / "lora_eval.toml").write_text(
        f"""[run]
name = "e2e"
report_dir = "reports"

{sources}
[person]
references = ["{DEMO / 'reference'}"]

[[judges]]
name = "image_stats"

[thresholds.spectral_score]
image = 0.5
checkpoint = 0.6

[thresholds.magnitude_score]
image = 0.5
checkpoint = 0.6

[gate]
checkpoints = {gate}
{extra}
"""
    )
    (root / "test_lora.py").write_text(EVAL_TEST)
    return root


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider", *args)


def store_rows(run_dir: Path) -> list[dict]:
    rows = []
    for path in sorted((run_dir / "scores").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def test_demo_suite_gates_latest_and_writes_research_csv(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    result = run(pytester, "-rx")
    # 24 images + 8 checkpoints; the degraded sweep steps are xfail (reported, not gated).
    result.assert_outcomes(passed=8, xfailed=24)
    result.stdout.fnmatch_lines(["*lora-harness: e2e*", "[*] personal-lora-demo-r4 000800 *"])
    result.stdout.fnmatch_lines(
        ["*XFAIL*test_image*personal-lora-demo-r4-step000200-p00-s42*not gated*spectral_score = *< 0.5000*"]
    )
    wide = pd.read_csv(pytester.path / "reports" / "e2e" / "scores.csv", dtype=str)
    assert list(wide.columns) == [
        "loraname", "training_step", "prompt_id", "timestamp", "magnitude_score", "spectral_score",
        "seed", "image", "run_id",
    ]
    assert len(wide) == 24
    assert set(wide["training_step"]) == {"000200", "000400", "000600", "000800"}
    assert set(wide["prompt_id"]) == {"00", "01", "02"}
    long = pd.read_csv(pytester.path / "reports" / "e2e" / "scores_long.csv")
    assert len(long) == 48 and long["raw"].map(lambda r: isinstance(json.loads(r), dict)).all()


def test_gate_all_fails_the_run_naming_metric_value_threshold_and_image(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    result = run(pytester, "--lora-gate", "all", "-k", "r4-step000200-p00")
    result.assert_outcomes(failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*spectral_score = 0.0* < 0.5000 (per-image minimum)*"])
    result.stdout.fnmatch_lines(["*personal-lora-demo-r4_000200_00_20250106170134.png*"])


def test_checkpoint_mean_failure_is_its_own_case(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path, gate="[400]")
    result = run(pytester, "-k", "test_checkpoint")
    result.assert_outcomes(failed=2, xfailed=4, passed=2)
    result.stdout.fnmatch_lines(
        ["E * checkpoint personal-lora-demo-r4-step000400 (*n=3*): FAIL",
         "E *magnitude_score CI high = 0.0* < 0.6000 (per-checkpoint minimum; mean 0.0*, 98% CI [[]0.0*, 0.0*], n=3)"]
    )


def test_xdist_run_records_the_same_rows_as_a_single_process_run(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    serial = run(pytester, "--lora-run-name", "serial")
    parallel = run(pytester, "--lora-run-name", "parallel", "-n", "4")
    serial.assert_outcomes(passed=8, xfailed=24)
    parallel.assert_outcomes(passed=8, xfailed=24)

    def keyed(name: str) -> dict[tuple[str, str], float]:
        rows = store_rows(pytester.path / "reports" / name)
        keys = [(r["case_key"], r["metric"]) for r in rows]
        assert len(keys) == len(set(keys)), f"duplicated rows in {name}"
        return {(r["case_key"], r["metric"]): r["value"] for r in rows}

    serial_rows, parallel_rows = keyed("serial"), keyed("parallel")
    assert len(serial_rows) == 48
    assert parallel_rows.keys() == serial_rows.keys()
    for key, value in serial_rows.items():
        assert parallel_rows[key] == pytest.approx(value, abs=1e-12), key
    workers = {r["worker"] for r in store_rows(pytester.path / "reports" / "parallel")}
    assert len(workers) > 1 and all(w.startswith("gw") for w in workers)


def test_broken_image_fails_even_when_ungated_and_keeps_other_scores(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    broken = next((pytester.path / "samples" / "personal-lora-demo-r4").glob("*_000200_01_*.png"))
    broken.write_bytes(broken.read_bytes()[:200])  # truncated, as an interrupted trainer leaves it
    result = run(pytester)
    result.assert_outcomes(passed=8, xfailed=23, failed=1)
    result.stdout.fnmatch_lines([f"*{broken.name}*truncated or corrupt*"])
    wide = pd.read_csv(pytester.path / "reports" / "e2e" / "scores.csv", dtype={"training_step": str, "prompt_id": str})
    row = wide[(wide.loraname == "personal-lora-demo-r4") & (wide.training_step == "000200") & (wide.prompt_id == "01")]
    assert row["spectral_score"].isna().all()
    assert wide["spectral_score"].notna().sum() == 23
    long = pd.read_csv(pytester.path / "reports" / "e2e" / "scores_long.csv")
    assert long["error"].dropna().str.contains("truncated or corrupt").sum() == 2


def test_rerun_appends_and_reports_the_newest_rows(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    run(pytester).assert_outcomes(passed=8, xfailed=24)
    run(pytester, "-k", "r4-step000800").assert_outcomes(passed=4)
    rows = store_rows(pytester.path / "reports" / "e2e")
    assert len(rows) == 48 + 6  # history kept: nothing rewritten
    wide = pd.read_csv(pytester.path / "reports" / "e2e" / "scores.csv")
    assert len(wide) == 24 and wide["run_id"].nunique() == 2


def test_config_errors_are_reported_without_a_traceback(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path, gate='"newest"')
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*gate.checkpoints: must be 'latest', 'all'*(got 'newest')*"])
    assert "Traceback" not in result.stdout.str()


def test_unmatched_files_are_a_usage_error_listing_them(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    (pytester.path / "samples" / "personal-lora-demo-r4" / "notes.png").write_bytes(b"x")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # 4: a broken input, not a failed gate
    result.stdout.fnmatch_lines(["*do not match the kohya sample pattern*", "*notes.png*", "*ignore_unmatched = true*"])


def test_samples_option_points_at_a_folder_without_editing_the_config(pytester: pytest.Pytester, tmp_path: Path) -> None:
    write_suite(pytester.path)
    folder = tmp_path / "output" / "sample"
    folder.mkdir(parents=True)
    (folder.parent / "sample_prompts.txt").write_text("<phigep> a portrait --d 7\n")
    rng = np.random.default_rng(0)
    for step in (100, 200):
        pixels = (rng.random((64, 64, 3)) * 40 + 100).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"my_lora-v2_{step:06d}_00_20250101120000.png")
    result = run(pytester, "--lora-samples", str(folder), "--lora-run-name", "mine", "--lora-gate", "all", "-v")
    result.stdout.fnmatch_lines(["*test_image?my_lora-v2-step000100-p00-s7?*", "*test_checkpoint?my_lora-v2-step000200?*"])
    # only the folder's LoRA is collected (the config's demo sources are replaced), and `--lora-gate all`
    # gates step 100 too: noise images miss the spectral minimum, so all four fail (with "latest", 100 would xfail)
    result.assert_outcomes(failed=4)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    scores = pd.read_csv(pytester.path / "reports" / "mine" / "scores.csv")
    assert set(scores["loraname"]) == {"my_lora-v2"} and len(scores) == 2


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed here")
@pytest.mark.parametrize(("pytest_rc", "make_fails"), [(0, False), (1, True), (5, True)])
def test_exit_code_five_is_not_swallowed_by_make(tmp_path: Path, pytest_rc: int, make_fails: bool) -> None:
    """`make eval` runs the real Makefile recipe with a stand-in pytest: 'no tests collected' (5) fails."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "pytest").write_text(f"#!/bin/sh\necho stand-in pytest \"$@\"\nexit {pytest_rc}\n")
    (bin_dir / "pytest").chmod(0o755)
    stamp = tmp_path / ".venv" / ".installed-stamp"
    stamp.touch()
    os.utime(stamp, (time.time() + 60, time.time() + 60))  # newer than Makefile and pyproject: no install
    done = subprocess.run(["make", "eval"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "stand-in pytest evals -n auto" in done.stdout  # the recipe really ran our pytest
    assert (done.returncode != 0) is make_fails, done.stdout + done.stderr
    assert ("pytest collected no tests" in done.stderr) is (pytest_rc == 5)


def test_a_test_computes_its_own_metric_from_lora_image_and_records_it(pytester: pytest.Pytester) -> None:
    """`lora_image` (the decoded pixels the judges also see) + `lora_record`: a metric of the suite's own."""
    write_suite(pytester.path, samples=[DEMO / "samples" / "personal-lora-demo-r4"])
    (pytester.path / "test_lora.py").write_text(
        "def test_image(lora_case, lora_image, lora_record):\n"
        "    assert lora_image.dtype.name == 'uint8' and lora_image.shape[2] == 3\n"
        "    lora_record('mean_grey', float(lora_image.mean()) / 255)\n"
    )
    result = run(pytester)
    result.assert_outcomes(passed=12)
    scores = pd.read_csv(pytester.path / "reports" / "e2e" / "scores.csv")
    assert len(scores) == 12 and scores["mean_grey"].notna().all()
    for _, row in scores.head(3).iterrows():
        image = next((DEMO / "samples" / "personal-lora-demo-r4").glob(f"*_{int(row['training_step']):06d}_{int(row['prompt_id']):02d}_*"))
        with Image.open(image) as pil:
            assert row["mean_grey"] == pytest.approx(np.asarray(pil.convert("RGB")).mean() / 255, abs=1e-6)
