"""The LoRA checks behind one protocol (lora_harness.checks.base.Check): every registered check implements it,
the registry parametrizes, skips and decides any check through it alone (a check registered here, unknown to
every other module, goes the same way as the stock ones), and a check's object, with what it loads, is made once
per harness, so once per worker process, not once per test."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_harness.checks import registry
from lora_harness.checks.base import Check
from lora_harness.checks.result import CheckResult
from lora_harness.core.cases import Checkpoint
from lora_harness.core.config import parse_config
from lora_harness.judges.base import Score
from lora_harness.run.harness import Harness

LORA = "proto-lora"


def sample_folder(root: Path, steps: tuple[int, ...] = (100, 200, 300)) -> Path:
    folder = root / "samples"
    folder.mkdir(parents=True)
    (folder / "sample_prompts.txt").write_text("<phigep> portrait 0\n<phigep> portrait 1\n")
    rng = np.random.default_rng(0)
    for step in steps:
        for p in range(2):
            pixels = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{LORA}_{step:06d}_{p:02d}_20250101120000.png")
    return folder


def harness_for(root: Path, gate: str = "all") -> Harness:
    config = parse_config(
        {"run": {"report_dir": str(root / "reports")}, "sources": [{"path": str(sample_folder(root))}],
         "judges": [{"name": "image_stats"}], "gate": {"checkpoints": gate}},
        base_dir=root,
    )
    return Harness(config, run_id="r1")


class StepCheck(Check):
    """A check no other module knows: steps listed in `failing` break its rule."""

    name = "step_rule"
    skip_reason = "no step rule configured: this test's own check"
    fixture_doc = "Checkpoints at a failing step fail."
    failing: frozenset[int] = frozenset({200})
    made = 0

    def __init__(self) -> None:
        type(self).made += 1
        self.evaluated: list[Checkpoint] = []

    def targets(self, harness: Harness) -> list[Checkpoint]:
        return [c for c in harness.checkpoints if c.training_step >= 200]

    def evaluate(self, harness: Harness, checkpoint: Checkpoint) -> CheckResult:
        self.evaluated.append(checkpoint)
        result = CheckResult(self.name, checkpoint)
        score = Score("step", float(checkpoint.training_step), {})
        limit = 150.0 if checkpoint.training_step in self.failing else 1000.0
        result.against_ceiling(checkpoint.key, score, limit, missing="missing", over=": a step this check refuses",
                               within=f" (ceiling {limit:g})")
        return result


class UnconfiguredCheck(Check):
    name = "never_configured"
    skip_reason = "add [never] to the eval config"
    fixture_doc = "Never has targets."

    def targets(self, harness: Harness) -> list[Checkpoint]:
        return []

    def evaluate(self, harness: Harness, checkpoint: Checkpoint) -> CheckResult:
        raise AssertionError("only called for targets")


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two checks above registered: one more entry in `registry.CHECKS`, nothing else touched."""
    monkeypatch.setattr(registry, "CHECKS", (*registry.CHECKS, StepCheck, UnconfiguredCheck))
    monkeypatch.setattr(StepCheck, "made", 0)


def test_every_registered_check_implements_the_protocol() -> None:
    assert registry.CHECKS, "no check registered"
    names = [check.name for check in registry.CHECKS]
    assert len(set(names)) == len(names)
    assert registry.FIXTURES == tuple(f"lora_{name}_check" for name in names)
    assert set(registry.FIXTURES) >= {"lora_leakage_check", "lora_strength_check", "lora_memorization_check",
                                      "lora_diversity_check"}  # the public fixture names
    for check in registry.CHECKS:
        assert issubclass(check, Check) and not inspect.isabstract(check), check
        assert check.fixture == f"lora_{check.name}_check"
        assert check.skip_reason.strip() and check.fixture_doc.strip(), check
        assert registry.skip_reason(check.fixture) == check.skip_reason
        check()  # made without arguments, cheaply: what it needs loads on first use


def test_a_check_missing_a_method_cannot_be_made() -> None:
    class Half(Check):
        name = "half"
        skip_reason = fixture_doc = "-"

        def targets(self, harness: Harness) -> list[Checkpoint]:
            return []

    with pytest.raises(TypeError, match="evaluate"):
        Half()  # type: ignore[abstract]


def test_a_new_check_is_parametrized_and_decided_through_the_generic_path(registered: None, tmp_path: Path) -> None:
    harness = harness_for(tmp_path)
    values, ids = registry.params(harness, "lora_step_rule_check")
    assert values == [Checkpoint(LORA, 200, "step"), Checkpoint(LORA, 300, "step")]
    assert ids == [c.test_id for c in values]
    with pytest.raises(AssertionError, match=r"step_rule of .*200: FAIL\b") as failure:
        registry.run_check(harness, "lora_step_rule_check", values[0]).check()  # gated ("all"): fails
    assert "step = 200.0000 > ceiling 150: a step this check refuses" in str(failure.value)
    registry.run_check(harness, "lora_step_rule_check", values[1]).check()  # 300 < 1000: passes
    ungated = harness_for(tmp_path / "latest", gate="latest")  # 200 is not the latest checkpoint: reported, not failed
    with pytest.raises(pytest.xfail.Exception, match=r"not gated: step_rule of .*200: FAIL\b"):
        registry.run_check(ungated, "lora_step_rule_check", values[0]).check()


def test_the_shared_ceiling_rule_fails_above_and_lines_below(registered: None, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    harness = harness_for(tmp_path)
    monkeypatch.setattr(StepCheck, "failing", frozenset({300}))
    result = registry.run_check(harness, "lora_step_rule_check", Checkpoint(LORA, 300, "step")).result
    assert result.failures == [f"{Checkpoint(LORA, 300, 'step').key}: step = 300.0000 > ceiling 150: a step this check refuses"]
    below = registry.run_check(harness, "lora_step_rule_check", Checkpoint(LORA, 200, "step")).result
    assert below.passed and below.lines == [f"{Checkpoint(LORA, 200, 'step').key}: step = 200.0000 (ceiling 1000)"]


def test_an_unconfigured_check_gets_one_skipping_parameter_with_its_reason(registered: None, tmp_path: Path) -> None:
    harness = harness_for(tmp_path)
    assert registry.params(harness, "lora_never_configured_check") == ([None], ["no-never_configured-config"])
    assert registry.skip_reason("lora_never_configured_check") == "add [never] to the eval config"
    with pytest.raises(KeyError, match="lora_unknown_check"):
        registry.params(harness, "lora_unknown_check")


def test_one_check_object_per_harness(registered: None, tmp_path: Path) -> None:
    harness = harness_for(tmp_path / "a")
    registry.params(harness, "lora_step_rule_check")
    for step in (200, 300, 200):
        registry.run_check(harness, "lora_step_rule_check", Checkpoint(LORA, step, "step"))
    assert StepCheck.made == 1
    assert len(registry.check_for(harness, "lora_step_rule_check").evaluated) == 3  # all on the same object
    registry.params(harness_for(tmp_path / "b"), "lora_step_rule_check")
    assert StepCheck.made == 2  # another harness (another worker's): its own object


_COUNTING_CONFTEST = '''
import json
from pathlib import Path

from lora_harness.checks import memorization

COUNTS = {"objects": 0, "training_image_listings": 0}
_init, _listing = memorization.MemorizationCheck.__init__, memorization.training_images


def _counting_init(self):
    COUNTS["objects"] += 1
    _init(self)


def _counting_listing(folder):
    COUNTS["training_image_listings"] += 1
    return _listing(folder)


memorization.MemorizationCheck.__init__ = _counting_init
memorization.training_images = _counting_listing


def pytest_sessionfinish(session):
    Path(str(session.config.rootpath), "counts.json").write_text(json.dumps(COUNTS))
'''


def test_memorization_loads_its_training_images_once_per_worker_not_per_test(pytester: pytest.Pytester) -> None:
    folder = sample_folder(pytester.path)
    train = pytester.path / "train" / "10_person"
    train.mkdir(parents=True)
    Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(train / "one.png")
    (pytester.path / "conftest.py").write_text(_COUNTING_CONFTEST)
    (pytester.path / "test_memo.py").write_text(
        "def test_memorization(lora_memorization_check):\n    lora_memorization_check.check()\n"
    )
    (pytester.path / "lora_eval.toml").write_text(
        f'[run]\nname = "memo"\nreport_dir = "reports"\n\n[[sources]]\npath = "{folder}"\n\n'
        '[[judges]]\nname = "image_stats"\n\n[gate]\ncheckpoints = "all"\n\n'
        '[memorization]\ntraining_dir = "train"\njudges = ["pixel_similarity"]\nmax_similarity = 0.9999\n'
    )
    result = pytester.runpytest_subprocess("--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider",
                                           "-p", "no:xdist")
    result.assert_outcomes(passed=3)
    counts = json.loads((pytester.path / "counts.json").read_text())
    assert counts == {"objects": 1, "training_image_listings": 1}  # three tests, one object, one load


def test_the_plugin_defines_each_registered_checks_fixture_with_its_doc(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider", "-p", "no:xdist")
    for check in registry.CHECKS:
        result.stdout.fnmatch_lines([f"{check.fixture} -- *", f"    {check.fixture_doc}"], consecutive=True)
