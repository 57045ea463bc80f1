"""Paired baseline comparison: known answers, the study's CSVs against an independent computation, the plan's
validation and checkpoint choice, a stored-run baseline, and end-to-end gates (worse fails, equal passes)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from lora_harness.verdicts.baseline import (
    BaselineError,
    BaselinePlan,
    Observation,
    compare_observations,
    compare_paired,
    default_margin,
    read_observations,
)
from lora_harness.core.cases import Checkpoint
from lora_harness.core.config import BaselineConfig, ConfigError, StatsConfig, parse_config
from lora_harness.run.harness import Harness
from lora_harness.run.regression_targets import comparison_targets, resolve, xdist_groups

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"
R4 = DEMO / "samples" / "personal-lora-demo-r4"
STUDY = Path("/work/shared/reference/seed_results")


def r4_images(step: int) -> list[Path]:
    return sorted(R4.glob(f"personal-lora-demo-r4_{step:06d}_*.png"))


def sample_folder(root: Path, name: str, images: dict[int, list[Path]]) -> Path:
    """A kohya sample folder named `name` whose step N images are copies of the given files."""
    folder = root / name
    folder.mkdir(parents=True)
    shutil.copy(R4 / "sample_prompts.txt", folder)
    for step, sources in images.items():
        for prompt, source in enumerate(sources):
            shutil.copy(source, folder / f"{name}_{step:06d}_{prompt:02d}_20250101120000.png")
    return folder


def config_text(sources: list[str], extra: str = "", gate: str = '"latest"') -> str:
    listed = "".join(f'[[sources]]\npath = "{s}"\n\n' for s in sources)
    return f"""[run]
name = "e2e"
report_dir = "reports"

{listed}[person]
references = ["{DEMO / 'reference'}"]

[[judges]]
name = "image_stats"

[gate]
checkpoints = {gate}

{extra}
"""


def harness_for(root: Path, sources: list[str], extra: str = "", gate: str = '"latest"', run_id: str = "t") -> Harness:
    import tomllib

    return Harness(parse_config(tomllib.loads(config_text(sources, extra, gate)), base_dir=root), run_id=run_id)


# --- compare_paired: known answers and the message -----------------------------------------------------------


def test_known_answer_and_failure_message_names_metric_difference_ci_and_worst_cases() -> None:
    candidate = {("00", 1): [0.9], ("01", 1): [0.8], ("02", 1): [0.7], ("03", 1): [0.6]}
    baseline = {("00", 1): [0.8], ("01", 1): [0.8], ("02", 1): [0.8], ("03", 1): [0.8]}
    result = compare_paired(
        candidate, baseline, metric="identity", margin=0.02, candidate_label="new", baseline_label="old",
        labels={("03", 1): "new-step000800-p03-s1"},
    )
    assert result.result.n == 4 and result.result.diff.mean == pytest.approx(-0.05)
    assert result.result.diff.low < -0.02 < result.result.diff.high and result.decision == "inconclusive"
    message = result.describe()
    assert message.startswith("identity: new vs baseline old: difference -0.0500 (98% CI [")
    assert "INCONCLUSIVE: the CI straddles -margin -0.0200; about " in message
    assert "means: candidate 0.7500, baseline 0.8000" in message
    # largest drops first, with their case keys; the pair that improved is not a "drop"
    assert "worst cases (largest drops): new-step000800-p03-s1: 0.6000 vs 0.8000 (-0.2000); 02-1: 0.7000 vs 0.8000 (-0.1000)" in message
    with pytest.raises(AssertionError, match="(?s)identity: new vs baseline old.*the evidence cannot decide"):
        result.check()  # `[gate] inconclusive = "fail"` by default


def test_a_clear_drop_fails_and_names_the_ci_high() -> None:
    base = {k: [0.8] for k in range(6)}
    cand = {k: [v] for k, v in enumerate([0.5, 0.52, 0.48, 0.5, 0.51, 0.49])}
    result = compare_paired(cand, base, metric="m", margin=0.05)
    assert result.decision == "fail"
    assert f"FAILS: CI high {result.result.diff.high:+.4f} < -margin -0.0500" in result.describe()
    with pytest.raises(AssertionError, match="FAIL"):
        result.check()


def test_equal_candidate_passes_the_default_margin_but_not_margin_zero() -> None:
    values = {(f"{i:02d}", 1): [v] for i, v in enumerate([0.4, 0.9, 0.6, 0.7, 0.5, 0.8])}
    result = compare_paired(values, values, metric="m", margin=None)
    assert result.margin == 0.05 and result.passed  # scores in [0, 1]: the documented default
    assert result.result.diff.low < 0 < result.result.diff.high  # the sd floor: never a zero-width interval
    assert "no paired case dropped" in result.describe()
    result.check()
    assert compare_paired(values, values, metric="m", margin=0.0).decision == "inconclusive"


def test_default_margin_follows_the_metric_kind() -> None:
    assert default_margin([1.0, 0.0], [1.0, 1.0]) == 0.10
    assert default_margin([0.5, 0.7], [0.6, 0.6]) == 0.05
    assert default_margin([30.0, 32.0], [31.0, 29.0]) == pytest.approx(0.05 * 30.0)


def test_a_small_drop_inside_the_margin_passes() -> None:
    base = {k: [v] for k, v in enumerate([0.5, 0.7, 0.9, 0.6, 0.8])}
    cand = {k: [v - 0.01] for k, v in enumerate([0.5, 0.7, 0.9, 0.6, 0.8])}
    assert compare_paired(cand, base, metric="m", margin=0.05).passed
    assert not compare_paired(cand, base, metric="m", margin=0.0).passed


def test_replicates_average_and_unpaired_cases_are_listed() -> None:
    candidate = {"a": [0.4, 0.6], "b": [1.0], "only-new": [0.3]}
    baseline = {"a": [0.5], "b": [0.5, None], "only-old": [0.2]}
    result = compare_paired(candidate, baseline, metric="m", margin=0.1)
    assert result.result.n == 2
    assert result.result.diff.mean == pytest.approx(0.25)  # a: 0.5 - 0.5, b: 1.0 - 0.5
    message = result.describe()
    assert "1 candidate case(s) without a partner: only-new" in message
    assert "1 baseline case(s) without a partner: only-old" in message


def test_too_few_pairs_fail_with_the_reason() -> None:
    result = compare_paired({"a": [0.9]}, {"a": [0.1], "b": [0.2]}, metric="m", margin=1.0)
    assert not result.passed
    assert "only 1 paired case(s)" in result.describe() and "share prompt ids and seeds" in result.describe()


# --- the study's CSVs: rank 4 vs rank 32 on eval_same_person_llm ---------------------------------------------


@pytest.mark.skipif(not STUDY.is_dir(), reason="the study's reference CSVs are not available")
def test_study_rank32_vs_rank4_matches_an_independent_computation() -> None:
    r4_csv, r32_csv = STUDY / "res_florence.csv", STUDY / "res_florencer16.csv"
    metric = "eval_same_person_llm"

    # independent: pandas + plain numpy resampling, nothing from lora_harness
    def per_key(path: Path) -> pd.Series:
        frame = pd.read_csv(path, dtype={"training_step": str, "prompt_id": str})
        return frame.groupby(["training_step", "prompt_id"])[metric].mean()  # r16 has 2 images per key

    old, new = per_key(r4_csv), per_key(r32_csv)
    shared = old.index.intersection(new.index)
    assert len(shared) == 36  # 12 common steps x 3 prompts
    diffs = (new[shared] - old[shared]).to_numpy()
    expected = scipy_stats.ttest_1samp(diffs, 0.0).confidence_interval(0.98)

    result = compare_observations(
        read_observations(r32_csv), read_observations(r4_csv), metric=metric, margin=0.05,
        on=("training_step", "prompt_id"), stats=StatsConfig(resamples=40000),
    )
    assert result.result.n == 36
    assert result.result.diff.mean == pytest.approx(diffs.mean(), abs=1e-12)
    assert result.result.candidate_mean == pytest.approx(new[shared].mean(), abs=1e-12)
    assert result.result.diff.low == pytest.approx(expected.low, abs=1e-9)
    assert result.result.diff.high == pytest.approx(expected.high, abs=1e-9)
    # rank 32 is worse at telling the same person on the steps both trained (the CI excludes 0), but 36
    # pairs cannot show it is more than the 0.05 margin worse: inconclusive, which fails the gate by default
    assert result.result.diff.high < 0 and result.decision == "inconclusive"
    with pytest.raises(AssertionError, match="INCONCLUSIVE"):
        result.check()
    assert "step000600-p02: 0.0000 vs 0.8000 (-0.8000)" in result.describe()
    assert len(result.unpaired_candidate) == 21  # r16's steps 2600..3800 have no rank-4 partner


def test_reading_a_wide_csv_with_seeds_and_epochs(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    pd.DataFrame(
        {"loraname": ["a", "a"], "training_step": ["000800", "e000004"], "prompt_id": ["00", "01"],
         "timestamp": ["", ""], "m": [0.5, None], "seed": [42, None], "image": ["x", "y"], "run_id": ["r", "r"]}
    ).to_csv(path, index=False)
    observations = read_observations(path)
    assert observations == [
        Observation("a", 800, "step", "00", 42, "m", 0.5),
        Observation("a", 4, "epoch", "01", None, "m", None),
    ]


def test_reading_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="baseline run not found: .*nowhere"):
        read_observations(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaselineError, match="no stored scores .* and no scores.csv"):
        read_observations(tmp_path / "empty")
    bad = tmp_path / "bad.csv"
    bad.write_text("loraname,training_step,prompt_id,m\na,step800,00,0.5\n")
    with pytest.raises(BaselineError, match="training_step 'step800' is not a step such as 000800"):
        read_observations(bad)


# --- the plan: validation and which baseline checkpoint --------------------------------------------------------


CKPTS = [Checkpoint(name, step) for name in ("base", "cand") for step in (200, 400, 800)]


def plan(**config: object) -> BaselinePlan:
    return BaselinePlan(BaselineConfig(**config), CKPTS, ["identity", "artifacts"])


def test_plan_validation_errors() -> None:
    with pytest.raises(ConfigError, match="baseline.lora = 'nope' is not a LoRA of this run; LoRAs found: base, cand"):
        plan(lora="nope")
    with pytest.raises(ConfigError, match="baseline.step = 600: LoRA 'base' has no such checkpoint; its steps: \\[200, 400, 800\\]"):
        plan(lora="base", step=600)
    with pytest.raises(ConfigError, match="baseline.margins names metric\\(s\\) identiy that no configured judge produces"):
        plan(lora="base", margins={"identiy": 0.1})
    with pytest.raises(ConfigError, match="only LoRA of this run"):
        BaselinePlan(BaselineConfig(lora="base"), CKPTS[:3], ["identity"])
    with pytest.raises(ValueError, match="set exactly one of `lora`"):
        BaselineConfig()


def test_plan_metrics_and_margins() -> None:
    assert plan(lora="base").metrics == ["identity", "artifacts"]
    margins = plan(lora="base", margin=0.01, margins={"identity": 0.05})
    assert margins.metrics == ["identity"] and margins.margin("identity") == 0.05 and margins.margin("artifacts") == 0.01
    assert plan(lora="base", metrics=["artifacts"]).metrics == ["artifacts"]
    assert plan(lora="base").candidates == ["cand"]


def test_in_run_baseline_checkpoint_rules() -> None:
    p = plan(lora="base")
    latest = lambda name: [Checkpoint(name, 800)]  # noqa: E731
    every = lambda name: [c for c in CKPTS if c.loraname == name]  # noqa: E731
    assert p.baseline_checkpoint(Checkpoint("cand", 800), latest) == Checkpoint("base", 800)
    assert p.baseline_checkpoint(Checkpoint("cand", 400), every) == Checkpoint("base", 400)  # same step when gated
    assert p.baseline_checkpoint(Checkpoint("cand", 400), latest) == Checkpoint("base", 800)  # else the gated one
    assert plan(lora="base", step=200).baseline_checkpoint(Checkpoint("cand", 800), latest) == Checkpoint("base", 200)


def test_stored_baseline_checkpoint_and_name_rules(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    rows = [(name, f"{step:06d}", "00", 0.5) for name in ("cand", "other") for step in (400, 1000)]
    pd.DataFrame(rows, columns=["loraname", "training_step", "prompt_id", "identity"]).to_csv(path, index=False)
    # checked up front: candidate "base" has no same-named LoRA in the stored run, and there are two
    with pytest.raises(ConfigError, match="holds several LoRAs \\(cand, other\\) and none is named 'base'; set baseline.loraname"):
        plan(run=path)
    only_cand = BaselinePlan(BaselineConfig(run=path), [Checkpoint("cand", 800)], ["identity"])
    assert only_cand.candidates == ["cand"] and only_cand.stored_name("cand") == "cand"
    p = plan(run=path, loraname="other")
    assert p.candidates == ["base", "cand"]
    assert p.baseline_checkpoint(Checkpoint("cand", 400), lambda n: []) == Checkpoint("other", 400)  # same step
    assert p.baseline_checkpoint(Checkpoint("cand", 800), lambda n: []) == Checkpoint("other", 1000)  # else latest
    with pytest.raises(ConfigError, match="baseline.loraname = 'zzz' is not in"):
        plan(run=path, loraname="zzz")


def test_xdist_groups_put_candidate_and_baseline_checkpoints_together() -> None:
    fake = SimpleNamespace(
        checkpoints=CKPTS,
        config=SimpleNamespace(gate=SimpleNamespace(checkpoints="latest")),
        baseline=plan(lora="base"),
        gated={Checkpoint("base", 800), Checkpoint("cand", 800)},
    )
    fake.gated_of = lambda name: [c for c in CKPTS if c.loraname == name and c in fake.gated]
    groups = xdist_groups(fake)  # type: ignore[arg-type]
    assert groups[Checkpoint("cand", 800)] == groups[Checkpoint("base", 800)] == "base-step000800"
    assert len({groups[c] for c in CKPTS}) == 5  # the other four stay apart: parallel work
    fake.config.gate.checkpoints = "best"
    groups = xdist_groups(fake)  # type: ignore[arg-type]
    assert set(groups.values()) == {"base-step000200"}  # best needs both sweeps in one process
    fake.baseline = None
    groups = xdist_groups(fake)  # type: ignore[arg-type]
    assert {groups[c] for c in CKPTS} == {"base-step000200", "cand-step000200"}


# --- whole runs, in process -------------------------------------------------------------------------------


def test_in_run_comparison_worse_candidate_fails_equal_passes(tmp_path: Path) -> None:
    sample_folder(tmp_path, "base", {800: r4_images(800)})
    sample_folder(tmp_path, "equal", {800: r4_images(800)})
    sample_folder(tmp_path, "worse", {800: r4_images(600)})  # mild periodic pattern: spectral score drops
    harness = harness_for(tmp_path, ["base", "equal", "worse"], '[baseline]\nlora = "base"\nmargin = 0.1\n')
    results = {
        (t.target.loraname, t.metric): harness.baseline.compare(harness, resolve(harness, t.target), t.metric)  # type: ignore[union-attr]
        for t in comparison_targets(harness)
    }
    assert set(results) == {(n, m) for n in ("equal", "worse") for m in ("spectral_score", "magnitude_score")}
    assert all(results[("equal", m)].passed for m in ("spectral_score", "magnitude_score"))
    assert results[("equal", "spectral_score")].result.diff.mean == 0.0
    worse = results[("worse", "spectral_score")]
    assert not worse.passed and worse.result.diff.high < -0.5
    assert "worse-step000800-p00-s42" in worse.describe()


def test_stored_run_baseline_reads_the_earlier_runs_store(tmp_path: Path) -> None:
    sample_folder(tmp_path, "mylora", {800: r4_images(800)})
    first = harness_for(tmp_path, ["mylora"], run_id="first")
    for case in first.cases:
        first.score(case)  # stored under reports/e2e/scores/first.main.jsonl
    shutil.copytree(tmp_path / "reports" / "e2e", tmp_path / "release-1")
    for png in (tmp_path / "mylora").glob("*.png"):  # retrained: now worse
        png.unlink()
    shutil.rmtree(tmp_path / "reports")
    for prompt, source in enumerate(r4_images(600)):
        shutil.copy(source, tmp_path / "mylora" / f"mylora_000800_{prompt:02d}_20250102120000.png")
    second = harness_for(tmp_path, ["mylora"], '[baseline]\nrun = "release-1"\nmargins = { spectral_score = 0.05 }\n', run_id="second")
    (target,) = comparison_targets(second)
    result = second.baseline.compare(second, resolve(second, target.target), "spectral_score")  # type: ignore[union-attr]
    assert not result.passed
    assert result.baseline.endswith("mylora-step000800 in " + str((tmp_path / "release-1").resolve()))
    assert result.result.n == 3 and result.result.diff.mean < -0.5


def test_stored_run_missing_is_a_config_error(tmp_path: Path) -> None:
    sample_folder(tmp_path, "mylora", {800: r4_images(800)})
    with pytest.raises(ConfigError, match="baseline.run: baseline run not found: .*release-0"):
        harness_for(tmp_path, ["mylora"], '[baseline]\nrun = "release-0"\n')


# --- end to end: pytest runs of the eval suite ----------------------------------------------------------------


EVAL_TESTS = (REPO / "evals" / "test_regression.py").read_text()


@pytest.mark.slow
def test_gate_run_worse_candidate_fails_and_names_metric_difference_ci(pytester: pytest.Pytester) -> None:
    sample_folder(pytester.path, "base", {800: r4_images(800)})
    sample_folder(pytester.path, "equal", {800: r4_images(800)})
    sample_folder(pytester.path, "worse", {800: r4_images(600)})
    (pytester.path / "lora_eval.toml").write_text(
        config_text(["base", "equal", "worse"], '[baseline]\nlora = "base"\nmargins = { spectral_score = 0.1 }\n')
    )
    (pytester.path / "test_regression.py").write_text(EVAL_TESTS)
    args = ("--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider", "-k", "test_baseline")
    result = pytester.runpytest_subprocess(*args, "-n", "2", "-v")
    # margins name only spectral_score: one comparison per candidate
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*PASSED*test_baseline?equal-latest-spectral_score?*"])
    result.stdout.fnmatch_lines([
        "E * spectral_score: worse-step000800 vs baseline base-step000800: difference -0.9* (98% CI [[]-1.0000, -0.*], "
        "n=3 pairs), non-inferiority margin 0.1000: FAILS: CI high -0.* < -margin -0.1000 (worse beyond the margin)",
        "E * worst cases (largest drops): worse-step000800-p0?-s42: 0.* vs 0.99* (-0.*",
        "*FAILED*test_baseline?worse-latest-spectral_score?*",
    ])
    assert "def check(self)" not in result.stdout.str()  # the message, not the library's internals


@pytest.mark.slow
def test_baseline_test_is_skipped_with_a_reason_when_none_is_configured(pytester: pytest.Pytester) -> None:
    sample_folder(pytester.path, "base", {800: r4_images(800)})
    (pytester.path / "lora_eval.toml").write_text(config_text(["base"]))
    (pytester.path / "test_regression.py").write_text(EVAL_TESTS)
    result = pytester.runpytest_subprocess(
        "--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider", "-rs", "-k", "test_baseline"
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*no baseline configured: add [[]baseline] with `lora = *` or `run = *`*"])


@pytest.mark.slow
def test_baseline_of_a_metric_whose_judge_cannot_run_here_is_incomplete_not_passed(pytester: pytest.Pytester) -> None:
    sample_folder(pytester.path, "base", {800: r4_images(800)})
    sample_folder(pytester.path, "equal", {800: r4_images(800)})
    extra = (
        '[[judges]]\nname = "clip_score"\noptions = { model = "./models/clip-not-downloaded" }\n\n'
        '[baseline]\nlora = "base"\nmargins = { spectral_score = 0.1, clip_score = 0.02 }\n'
    )
    (pytester.path / "lora_eval.toml").write_text(config_text(["base", "equal"], extra))
    (pytester.path / "test_regression.py").write_text(EVAL_TESTS)
    args = ("--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider", "-rs", "-k", "test_baseline")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1, failed=1)  # spectral_score compared; clip_score incomplete: fails, saying why
    result.stdout.fnmatch_lines(["E * INCOMPLETE*", "E * not judged: *clip-not-downloaded*", "E *--allow-incomplete*"])
    accepted = pytester.runpytest_subprocess(*args, "--allow-incomplete")
    accepted.assert_outcomes(passed=1, skipped=1)
    accepted.stdout.fnmatch_lines(["*SKIPPED*accepted by --allow-incomplete*clip-not-downloaded*"])

