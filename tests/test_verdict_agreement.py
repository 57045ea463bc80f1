"""The tests, the terminal table, run.json and report.html give every checkpoint the same verdict, in any
worker layout (one process, two xdist workers): all four call the verdict layer's one rule."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from test_plugin_e2e import run, write_suite

pytestmark = pytest.mark.slow

THRESHOLDS = """
[thresholds.spectral_score]
checkpoint = 0.1
"""


def _from_junit(path: Path) -> dict[str, str]:
    """checkpoint key -> decision, read from the test outcomes (a failure's first line names it)."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        match = re.match(r"test_checkpoint\[(.+)\]$", case.get("name", ""))
        if not match:
            continue
        failure = case.find("failure")
        if failure is None:
            out[match.group(1)] = "pass"
            continue
        head = (failure.get("message") or "").splitlines()[0]
        out[match.group(1)] = head.rsplit(": ", 1)[-1].lower()
    return out


def _from_run_json(run_dir: Path) -> dict[str, str]:
    manifest = json.loads((run_dir / "run.json").read_text())
    session = manifest["sessions"][-1]
    out = {}
    for record in session["verdicts"]:
        match = re.match(r"checkpoint (\S+) \(", record["where"])
        if match:
            out[match.group(1)] = record["decision"]
    return out


def _from_report(run_dir: Path) -> dict[str, str]:
    from lora_harness.report.manifest import read_manifest
    from lora_harness.report.view import Rules, build_view
    from lora_harness.run.store import latest_rows, read_rows

    view = build_view(latest_rows(read_rows(run_dir)), Rules.of_manifest(read_manifest(run_dir)))
    html = (run_dir / "report.html").read_text()
    assert f'id="verdict">{view.badge.upper()}<' in html
    return {ck.key: ck.status for ck in view.checkpoints}


def _from_terminal(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        match = re.match(r"\* (\S+) (\d{6}|e\d{6})\s+(\w+)\s", line)
        if match:
            name, step, status = match.groups()
            out[f"{name}-{'epoch' + step[1:] if step.startswith('e') else 'step' + step}"] = status
    return out


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "two-workers"])
def test_every_layer_gives_each_checkpoint_the_same_verdict(pytester: pytest.Pytester, workers: list[str]) -> None:
    write_suite(pytester.path, gate='"all"', extra=THRESHOLDS.replace("[thresholds", "\n[thresholds"))
    config = pytester.path / "lora_eval.toml"
    text = config.read_text()
    text = re.sub(r"\[thresholds\.spectral_score\]\nimage = 0\.5\ncheckpoint = 0\.6\n", "", text)
    text = re.sub(r"\[thresholds\.magnitude_score\]\nimage = 0\.5\ncheckpoint = 0\.6\n", "", text)
    config.write_text(text)
    result = run(pytester, "-k", "test_checkpoint", "--junitxml", str(pytester.path / "junit.xml"), *workers)
    run_dir = pytester.path / "reports" / "e2e"

    tests = _from_junit(pytester.path / "junit.xml")
    assert len(tests) == 8, tests
    assert {"pass", "fail", "inconclusive"} <= set(tests.values()), tests  # the suite exercises three verdicts
    assert _from_run_json(run_dir) == tests
    assert _from_report(run_dir) == tests
    assert _from_terminal(result.stdout.str()) == tests
    assert result.ret == 1
    result.stdout.fnmatch_lines(["verdict: FAIL (*"])
