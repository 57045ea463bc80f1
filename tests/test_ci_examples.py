"""CI integration: the Markdown verdict (`--lora-summary-md`), and the example workflows under examples/ci/.

The GitHub Actions example is run step by step, in order, on the demo: `run:` steps in bash with the job's
env, `$GITHUB_OUTPUT` and `$GITHUB_STEP_SUMMARY` files and the few `${{ }}` expressions it uses; the
`uses:` steps are stood in for by what they do here (the cache steps copy the cache folder to and from a
store folder, the upload step checks every listed path exists). A passing and a failing sample folder show
that the job fails exactly on the gate, with the artifacts uploaded either way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lora_harness.report.summary_md import EXIT_CODES, CheckpointOutcome, RunVerdict, render_summary
from test_plugin_e2e import run, write_suite
from test_readme_commands import REPO, _workspace

EXAMPLES = REPO / "examples" / "ci"


def test_summary_lists_gated_checkpoints_failing_metrics_exit_code_and_link() -> None:
    verdict = RunVerdict("fail", [CheckpointOutcome("r4", "000800", "fail", ["spectral_score"]),
                                  CheckpointOutcome("r32", "000800", "pass", [])], failing_cases=2)
    text = render_summary("demo", verdict, exit_status=1, report_link="reports/demo/report.html")
    assert text.startswith("## ❌ lora-harness: demo — FAIL\n")
    assert "| r4 000800 | fail | spectral_score |" in text and "| r32 000800 | pass | — |" in text
    assert f"Exit code 1: {EXIT_CODES[1]}." in text
    assert "[report.html](reports/demo/report.html)" in text


def test_summary_of_a_usage_error_and_of_a_regression_beyond_thresholds() -> None:
    text = render_summary("configuration error", None, exit_status=4, report_link=None, errors=["bad key x"])
    assert "ERROR" in text.splitlines()[0] and "bad key x" in text and "Exit code 4: usage error" in text
    passing = RunVerdict("pass", [CheckpointOutcome("r4", "000800", "pass", [])], 0)
    text = render_summary("demo", passing, exit_status=1, report_link=None)
    assert "— FAIL" in text.splitlines()[0] and "a regression test failed" in text


@pytest.mark.slow
def test_summary_md_of_a_real_run_appends_and_links_relatively(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    summary = pytester.path / "out" / "summary.md"
    summary.parent.mkdir()
    summary.write_text("previous step's summary\n")
    run(pytester, "--lora-summary-md", str(summary)).assert_outcomes(passed=8, xfailed=24)
    text = summary.read_text()
    assert text.startswith("previous step's summary\n## ✅ lora-harness: e2e — PASS")
    assert "| personal-lora-demo-r4 000800 | pass | — |" in text
    assert "[report.html](../reports/e2e/report.html)" in text
    failing = run(pytester, "--lora-summary-md", str(summary), "--lora-gate", "all", "--lora-run-name", "all")
    assert failing.ret == 1
    assert "| personal-lora-demo-r4 000200 | fail | " in summary.read_text()


# --- the GitHub Actions example, step by step ----------------------------------------------------------------


def _expand(text: str, env: dict[str, str], outputs: dict[str, dict[str, str]]) -> str:
    def value(match: re.Match) -> str:
        expression = match[1].strip()
        if expression.startswith("env."):
            return env[expression[4:]]
        if expression == "github.run_id":
            return "1"
        step = re.fullmatch(r"steps\.(\w+)\.outputs\.(\w+)", expression)
        if step:
            return outputs[step[1]][step[2]]
        raise AssertionError(f"the test does not emulate ${{{{ {expression} }}}}")

    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def run_github_job(workflow: Path, root: Path, samples: str) -> tuple[list[tuple[str, int]], Path, list[str]]:
    """Run the job's steps like the runner does; (step name, exit code) per step, the summary, uploads."""
    job = next(iter(yaml.safe_load(workflow.read_text())["jobs"].values()))
    env = {**os.environ, **{k: str(v) for k, v in job.get("env", {}).items()}, "SAMPLES_DIR": samples,
           "PYTHONPATH": str(REPO), "PATH": f"{root / '.venv' / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYTEST_ADDOPTS", None)
    summary, store = root / "step_summary.md", root.parent / "actions-cache"
    outputs: dict[str, dict[str, str]] = {}
    results: list[tuple[str, int]] = []
    uploaded: list[str] = []
    logs: list[str] = []
    failed = False
    for step in job["steps"]:
        name = step.get("name") or step.get("uses")
        if failed and step.get("if") != "always()":
            continue
        if "run" in step:
            output_file = root / f"output-{len(results)}"
            output_file.write_text("")
            completed = subprocess.run(
                ["bash", "-e", "-c", _expand(step["run"], env, outputs)], cwd=root, capture_output=True, text=True,
                env={**env, "GITHUB_OUTPUT": str(output_file), "GITHUB_STEP_SUMMARY": str(summary)}, timeout=900,
            )
            outputs[step.get("id", name)] = dict(
                line.split("=", 1) for line in output_file.read_text().splitlines() if "=" in line
            )
            code = completed.returncode
            logs.append(completed.stdout[-3000:] + completed.stderr[-3000:])
            assert code in (0, 1), f"{name}: {logs}"
        else:
            action, code = step["uses"].split("@")[0], 0
            inputs = {k: _expand(str(v), env, outputs) for k, v in step.get("with", {}).items()}
            if action == "actions/cache/restore" and (store / "cache").is_dir():
                shutil.copytree(store / "cache", root / inputs["path"], dirs_exist_ok=True)
            elif action == "actions/cache/save" and (root / inputs["path"]).is_dir():
                shutil.copytree(root / inputs["path"], store / "cache", dirs_exist_ok=True)
            elif action == "actions/upload-artifact":
                uploaded = [line.strip() for line in inputs["path"].splitlines() if line.strip()]
                missing = [p for p in uploaded if not (root / p).exists()]
                assert not missing, f"upload step names paths the run did not write: {missing}"
        results.append((name, code))
        failed = failed or code != 0
    return results, summary, uploaded


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / ".venv" / ".installed-stamp").exists(), reason="needs the installed .venv (make install)")
def test_github_example_runs_in_order_and_fails_exactly_on_the_gate(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    workflow = EXAMPLES / "github-actions.yml"
    results, summary, uploaded = run_github_job(workflow, root, "fixtures/demo/samples/personal-lora-demo-r4")
    assert [code for _, code in results] == [0] * len(results), results
    assert results[-1][0] == "Gate" and len(results) == len(yaml.safe_load(workflow.read_text())["jobs"]["eval"]["steps"])
    assert "lora-harness: ci — PASS" in summary.read_text()
    assert {"reports/ci/report.html", "reports/allure-results", "reports/junit.xml"} <= set(uploaded)
    # the judge cache the workflow keeps is where the harness writes it (reports/<run>/cache)
    assert "reports/${{ env.RUN_NAME }}/cache" in workflow.read_text()

    # A sample folder whose latest checkpoint misses the thresholds: the gate step fails the job, and the
    # artifacts and the cache are still saved (`if: always()`).
    degraded = root / "degraded" / "sample"
    degraded.mkdir(parents=True)
    for image in (root / "fixtures/demo/samples/personal-lora-demo-r4").glob("*_000200_*.png"):
        shutil.copy(image, degraded / image.name)
    shutil.copy(root / "fixtures/demo/samples/personal-lora-demo-r4/sample_prompts.txt", degraded.parent)
    summary.unlink()
    results, summary, _ = run_github_job(workflow, root, "degraded/sample")
    codes = dict(results)
    assert codes["Evaluate"] == 0 and codes["Gate"] == 1
    assert "Upload report, allure results and JUnit" in codes and "Save judge cache" in codes
    assert "— FAIL" in summary.read_text() and "| personal-lora-demo-r4 000200 | fail |" in summary.read_text()


def test_gitlab_example_keeps_cache_uploads_artifacts_and_junit() -> None:
    job = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())["lora-eval"]
    script = " ".join(job["script"])
    assert "--lora-summary-md reports/summary.md" in script and "--junitxml reports/junit.xml" in script
    assert "--alluredir reports/allure-results" in script and "-n auto" in script
    assert job["cache"]["paths"] == ["reports/$RUN_NAME/cache/"] and job["cache"]["when"] == "always"
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["reports"]["junit"] == "reports/junit.xml"
    assert "reports/$RUN_NAME/report.html" in job["artifacts"]["paths"]
