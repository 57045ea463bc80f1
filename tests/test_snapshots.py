"""Score snapshots: the tolerance matcher on its own, and syrupy end to end (update, equal, tiny change,
regression; with and without xdist)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("syrupy", reason="snapshots need syrupy (the 'report' extra)")

from lora_harness.core.cases import Checkpoint  # noqa: E402
from lora_harness.core.config import SnapshotConfig  # noqa: E402
from lora_harness.verdicts.snapshots import compare_snapshot, extension_for, snapshot_data  # noqa: E402
from lora_harness.verdicts.stats import CheckpointAggregates, mean_ci  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
R4 = REPO / "fixtures" / "demo" / "samples" / "personal-lora-demo-r4"


def snap(**means: float | None) -> dict:
    return {"metrics": {m: {"mean": v, "n": 3} for m, v in means.items()}}


def test_within_tolerance_matches_beyond_fails_with_the_numbers() -> None:
    config = SnapshotConfig(tolerance=0.02)
    assert compare_snapshot(snap(a=0.80), snap(a=0.81), config).matches
    verdict = compare_snapshot(snap(a=0.75, b=0.5), snap(a=0.80, b=0.5), config)
    assert not verdict.matches
    assert verdict.lines()[0] == "a: snapshot 0.8000, now 0.7500, difference -0.0500 (REGRESSION beyond tolerance 0.02)"
    assert verdict.lines()[1] == "b: snapshot 0.5000, now 0.5000, difference +0.0000 (within tolerance 0.02)"


def test_per_metric_tolerance_overrides_the_default() -> None:
    config = SnapshotConfig(tolerance=0.01, tolerances={"noisy": 0.1})
    assert compare_snapshot(snap(noisy=0.75, exact=0.5), snap(noisy=0.8, exact=0.5), config).matches
    assert not compare_snapshot(snap(noisy=0.8, exact=0.48), snap(noisy=0.8, exact=0.5), config).matches


def test_improvements_pass_unless_configured_to_fail() -> None:
    assert compare_snapshot(snap(a=0.9), snap(a=0.5), SnapshotConfig()).matches
    verdict = compare_snapshot(snap(a=0.9), snap(a=0.5), SnapshotConfig(fail_on_improvement=True))
    assert not verdict.matches and "improvement beyond tolerance" in verdict.lines()[0]


def test_missing_new_and_valueless_metrics_fail() -> None:
    config = SnapshotConfig()
    assert "not produced now" in compare_snapshot(snap(), snap(a=0.5), config).lines()[0]
    assert "--snapshot-update" in compare_snapshot(snap(a=0.5), snap(), config).lines()[0]
    assert "no image has a value" in compare_snapshot(snap(a=None), snap(a=0.5), config).lines()[0]
    assert compare_snapshot(snap(a=None), snap(a=None), config).matches
    assert not compare_snapshot(snap(a=0.5), {"something": "else"}, config).matches


def test_extension_serializes_aggregates_and_matches_with_tolerance() -> None:
    aggregates = CheckpointAggregates(Checkpoint("l", 800), {"a": mean_ci([0.5, 0.7])})
    extension = extension_for(SnapshotConfig(tolerance=0.05))()
    text = extension.serialize(aggregates)
    data = json.loads(text)
    assert data == snapshot_data(aggregates) | {"metrics": {"a": aggregates.metrics["a"].as_dict()}}
    assert data["format"] == "lora-harness/score-snapshot/1" and data["metrics"]["a"]["mean"] == 0.6
    stored = json.dumps({**data, "metrics": {"a": {**data["metrics"]["a"], "mean": 0.62}}})
    assert extension.matches(serialized_data=text, snapshot_data=stored)
    worse = json.dumps({**data, "metrics": {"a": {**data["metrics"]["a"], "mean": 0.7}}})
    assert not extension.matches(serialized_data=text, snapshot_data=worse)
    assert list(extension.diff_lines(text, worse))[0].startswith("a: snapshot 0.7000, now 0.6000, difference -0.1000")
    assert not extension.matches(serialized_data=text, snapshot_data="{not json")
    assert extension_for(SnapshotConfig(tolerance=0.05)) is type(extension)  # one class per settings


# --- syrupy end to end -------------------------------------------------------------------------------------


def write_suite(root: Path, step800_from: int = 800) -> None:
    """One LoRA, one checkpoint (step 800, 3 images); its images are the demo's images of `step800_from`."""
    folder = root / "mylora"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    shutil.copy(R4 / "sample_prompts.txt", folder)
    for prompt, source in enumerate(sorted(R4.glob(f"*_{step800_from:06d}_*.png"))):
        shutil.copy(source, folder / f"mylora_000800_{prompt:02d}_20250101120000.png")
    (root / "lora_eval.toml").write_text(
        f"""[run]
name = "snap"
report_dir = "reports"

[[sources]]
path = "mylora"

[person]
references = ["{REPO / 'fixtures' / 'demo' / 'reference'}"]

[[judges]]
name = "image_stats"

[snapshot]
tolerance = 0.02
"""
    )
    (root / "test_regression.py").write_text((REPO / "evals" / "test_regression.py").read_text())


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider", "-k", "test_snapshot", *args
    )


@pytest.mark.slow
def test_snapshot_update_then_equal_then_tiny_change_then_regression(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # when this suite itself runs under xdist, the inner pytest must not believe it is an xdist worker
    # (syrupy reads PYTEST_XDIST_WORKER from the environment and would then skip its report)
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    write_suite(pytester.path)
    path = pytester.path / "__snapshots__" / "test_regression" / "test_snapshot[mylora-latest].json"

    # 0. a [snapshot] section and nothing stored yet: fails with the exact command that stores it
    missing = run(pytester, "-n", "2")
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(["*no stored snapshot: store this checkpoint's scores with "
                                  "`pytest 'test_regression.py::test_snapshot[[]mylora-latest[]]' --snapshot-update`*"])

    # 1. store, under xdist
    created = run(pytester, "--snapshot-update", "-n", "2")
    created.assert_outcomes(passed=1)
    created.stdout.fnmatch_lines(["*1 snapshot generated*"])
    stored = json.loads(path.read_text())
    assert stored["checkpoint"] == "mylora-step000800" and stored["metrics"]["spectral_score"]["n"] == 3
    assert stored["metrics"]["spectral_score"]["mean"] == pytest.approx(0.9977, abs=1e-3)

    # 2. the same images compare equal
    equal = run(pytester)
    equal.assert_outcomes(passed=1)
    equal.stdout.fnmatch_lines(["*1 snapshot passed*"])

    # 3. a tiny move (as a new judge version might make) passes, and --snapshot-update leaves the file alone
    stored["metrics"]["spectral_score"]["mean"] += 0.01
    path.write_text(json.dumps(stored, indent=2) + "\n")
    tiny = run(pytester, "--snapshot-update")
    tiny.assert_outcomes(passed=1)
    assert json.loads(path.read_text()) == stored

    # 4. a worse candidate (step 600's periodic artifacts in place of step 800) fails with metric and
    #    difference, compared under xdist
    write_suite(pytester.path, step800_from=600)
    worse = run(pytester, "-n", "2")
    worse.assert_outcomes(failed=1)
    worse.stdout.fnmatch_lines([
        "*spectral_score: snapshot 1.00*, now 0.08*, difference -0.9* (REGRESSION beyond tolerance 0.02)*",
    ])
    assert "magnitude_score: snapshot" in worse.stdout.str()

    # 5. a judge that cannot run here (a model not downloaded): incomplete with the reason, not "no value"
    #    (a failure, or a skip with --allow-incomplete), and --snapshot-update leaves the stored means alone
    before = path.read_text()
    config = pytester.path / "lora_eval.toml"
    config.write_text(config.read_text().replace(
        "[snapshot]", '[[judges]]\nname = "clip_score"\noptions = { model = "./models/clip-not-here" }\n\n[snapshot]'))
    for args in ((), ("--snapshot-update",)):
        failed = run(pytester, "-rs", *args)
        failed.assert_outcomes(failed=1)
        failed.stdout.fnmatch_lines(["E * snapshot: INCOMPLETE", "E * not judged: *clip-not-here*"])
        assert path.read_text() == before
        skipped = run(pytester, "-rs", "--allow-incomplete", *args)
        skipped.assert_outcomes(skipped=1)
        skipped.stdout.fnmatch_lines(["*SKIPPED*accepted by --allow-incomplete*clip-not-here*"])
        assert path.read_text() == before


@pytest.mark.slow
def test_without_a_snapshot_section_the_test_skips_saying_how_to_enable_it(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    config = pytester.path / "lora_eval.toml"
    config.write_text(config.read_text().replace("[snapshot]\ntolerance = 0.02\n", ""))
    result = run(pytester, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "*SKIPPED*no [[]snapshot[]] section in *lora_eval.toml: add `[[]snapshot[]]` with `tolerance = 0.02`, then store "
        "the gated checkpoints' scores once with `pytest 'test_regression.py::test_snapshot[[]mylora-latest[]]' --snapshot-update`*"
    ])
    assert not (pytester.path / "__snapshots__").exists()


def test_tolerances_for_unknown_metrics_are_a_config_error(tmp_path: Path) -> None:
    from lora_harness.core.config import ConfigError, load_config
    from lora_harness.run.harness import Harness

    config = load_config(
        REPO / "evals" / "lora_eval.toml",
        {"run.report_dir": str(tmp_path), "snapshot.tolerances": {"spectal_score": 0.1}},
    )
    with pytest.raises(ConfigError, match="snapshot.tolerances names metric\\(s\\) spectal_score that no configured judge produces"):
        Harness(config, run_id="t")
