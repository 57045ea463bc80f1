"""pytest conventions the eval suite keeps: node ids that do not change with `-n`, so `--lf`, copied ids and
JUnit test names work; JUnit properties with the case and its scores; prefixed options (old spellings as
hidden aliases); config errors that exit with pytest's usage-error code 4 once, under any `-n`; `--lora-samples`
with a config naming other LoRAs; `--collect-only` writing nothing."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_harness.plugin.xdist_scheduler import param_id, scope_for
from test_plugin_e2e import run, write_suite

pytestmark = pytest.mark.slow


def junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {f"{case.get('classname')}::{case.get('name')}": case for case in root.iter("testcase")}


def node_ids(result: pytest.RunResult) -> set[str]:
    """Node ids from `-v` lines (`path::test[id] PASSED` / `[gw0] PASSED path::test[id]`)."""
    return set(re.findall(r"(test_lora\.py::test_\w+\[[^\]]+\])", result.stdout.str()))


def test_node_ids_and_junit_names_are_the_same_for_n0_and_n4(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    serial = run(pytester, "-v", "--lora-run-name", "s", "--junitxml", "serial.xml")
    parallel = run(pytester, "-v", "--lora-run-name", "p", "-n", "4", "--junitxml", "parallel.xml")
    serial.assert_outcomes(passed=8, xfailed=24)
    parallel.assert_outcomes(passed=8, xfailed=24)
    assert "@" not in parallel.stdout.str().split("short test summary")[0].replace("@pytest", "")
    assert node_ids(serial) == node_ids(parallel) and len(node_ids(serial)) == 32
    serial_names, parallel_names = junit_cases(pytester.path / "serial.xml"), junit_cases(pytester.path / "parallel.xml")
    assert serial_names.keys() == parallel_names.keys() and len(serial_names) == 32


def test_junit_properties_are_the_case_and_its_scores(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    run(pytester, "-n", "2", "--junitxml", "out.xml").assert_outcomes(passed=8, xfailed=24)
    cases = junit_cases(pytester.path / "out.xml")
    case = next(c for name, c in cases.items() if "test_image[personal-lora-demo-r4-step000800-p01-s42]" in name)
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["lora"] == "personal-lora-demo-r4" and props["step"] == "000800"
    assert props["prompt"] == "01" and props["seed"] == "42"
    assert 0.5 <= float(props["score.spectral_score"]) <= 1.0
    assert "lora_harness_progress" not in props
    checkpoint = next(c for name, c in cases.items() if "test_checkpoint[personal-lora-demo-r32-step000400]" in name)
    assert {p.get("name"): p.get("value") for p in checkpoint.iter("property")} == {
        "lora": "personal-lora-demo-r32", "step": "000400", "verdict": "fail",
    }


def test_last_failed_reruns_exactly_the_failed_tests_after_n2(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path, gate='"all"')  # every degraded step now fails instead of xfail
    config = ["--lora-config", str(pytester.path / "lora_eval.toml")]
    first = pytester.runpytest_subprocess(*config, "-n", "2", "-q")
    failed = set(re.findall(r"FAILED (\S+)", first.stdout.str()))
    outcomes = first.parseoutcomes()
    assert outcomes["failed"] == len(failed) > 0
    again = pytester.runpytest_subprocess(*config, "--lf", "-v")
    assert "not in selected tests" not in again.stdout.str()
    assert again.parseoutcomes()["failed"] == len(failed)
    assert again.parseoutcomes().get("passed", 0) == 0
    copied = sorted(failed)[0]  # an id copied from the output runs as is
    single = pytester.runpytest_subprocess(*config, copied, "-q")
    single.assert_outcomes(failed=1)


def test_old_option_spellings_still_work_with_a_deprecation_note(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    result = run(pytester, "--gate", "all", "--run-name", "old", "-k", "r4-step000800-p00")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "reports" / "old" / "scores.csv").is_file()
    result.stdout.fnmatch_lines(["*--gate is now --lora-gate*"])
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    assert "--lora-gate" in help_text and "--lora-samples" in help_text
    assert not re.search(r"^\s+--gate\b", help_text, re.M)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_config_error_exits_4_and_is_printed_once(pytester: pytest.Pytester, workers: str) -> None:
    write_suite(pytester.path, extra="\n[thresholds.spectral_scor]\nimage = 0.5\n")
    result = run(pytester, "-n", workers)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert output.count("spectral_scor ") + output.count("spectral_scor\n") + output.count("spectral_scor,") >= 1
    assert output.count("no configured judge produces") == 1
    assert not (pytester.path / "reports").exists()


def test_samples_with_a_config_naming_other_loras_runs_with_a_note(pytester: pytest.Pytester, tmp_path: Path) -> None:
    write_suite(pytester.path, extra='\n[baseline]\nlora = "personal-lora-demo-r4"\nmargin = 0.05\n')
    folder = tmp_path / "output" / "sample"
    folder.mkdir(parents=True)
    (folder.parent / "sample_prompts.txt").write_text("<phigep> a portrait --d 7\n")
    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 40 + 100).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "mine_000100_00_20250101120000.png")
    for workers in ("0", "2"):
        result = run(pytester, "--lora-samples", str(folder), "-n", workers)
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()
        assert result.stdout.str().count("[baseline] skipped: lora = 'personal-lora-demo-r4'") == 1


def test_collect_only_writes_nothing(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    result = run(pytester, "--collect-only", "-q")
    assert result.ret == 0
    assert not (pytester.path / "reports").exists()


@pytest.mark.parametrize(
    ("nodeid", "expected"),
    [
        ("evals/test_lora.py::test_image[lora-a-step000200-p00]", "G1"),
        ("evals/test_lora.py::test_image[x-lora-a-step000200-p00]", "G1"),  # a stacked parametrize
        ("evals/test_lora.py::test_other", "evals/test_lora.py::test_other"),
        ("evals/test_lora.py::test_image[unknown]", "evals/test_lora.py::test_image[unknown]"),
    ],
)
def test_scope_comes_from_the_parameter_id(nodeid: str, expected: str) -> None:
    assert scope_for(nodeid, {"lora-a-step000200-p00": "G1"}) == expected
    assert param_id("a.py::t[b[c]]") == "b[c]"


def test_stale_sections_only_with_names_absent_or_a_single_lora(tmp_path: Path) -> None:
    from lora_harness.core.config import parse_config
    from lora_harness.core.stale_sections import stale_sections, without_stale

    config = parse_config(
        {"sources": [{"path": "x"}], "baseline": {"lora": "r4"},
         "judges": [{"name": "image_stats"}, {"name": "llm_pairwise", "options": {"baseline": "r4@800", "candidate": "r32"}}]},
        base_dir=tmp_path,
    )
    assert stale_sections(config, {"r4", "r32"}, {"sample"}) == []
    only = stale_sections(config, {"r4"}, {"sample"})  # a source name is no second LoRA for [baseline]
    assert [s.key for s in only] == ["baseline.lora", "judges[1].options.candidate"]
    assert "only LoRA" in only[0].note
    other = stale_sections(config, {"mine"})
    assert [s.key for s in other] == ["baseline.lora", "judges[1].options.baseline"]
    reduced = without_stale(config, other)
    assert reduced.baseline is None and [j.name for j in reduced.judges] == ["image_stats"]
