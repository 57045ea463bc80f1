"""What a test's report carries: the verdicts its gates enforced, its case and scores as JUnit properties,
its thumbnail and allure attachments; and, on the controller, the judging progress line."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from lora_harness.core.cases import Checkpoint, EvalCase
from lora_harness.plugin.attachments import attach_allure, thumbnail
from lora_harness.plugin.state import PROGRESS_KEY, is_worker, param, state_of
from lora_harness.report.allure import allure_enabled
from lora_harness.report.csv import step_label
from lora_harness.run.progress import PhaseProgress
from lora_harness.verdicts.enforce import VERDICT_PROPERTY, current_properties


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Around an eval test: the verdicts it enforces are recorded on it (only tests of this plugin's
    fixtures: a harness unit test calling `Gate` directly is not a gate of the session). After an image's
    test: its report thumbnail while the pixels are at hand; with `--alluredir`, its image, scores and
    justifications as attachments, and labels."""
    ours = any(name.startswith("lora_") or name == "snapshot_lora" for name in getattr(item, "fixturenames", ()))
    token = current_properties.set(item.user_properties if ours else None)
    try:
        return (yield)
    finally:
        current_properties.reset(token)
        thumbnail(item)
        _junit_properties(item)
        if allure_enabled(item.config):
            attach_allure(item)


def _junit_properties(item: pytest.Item) -> None:
    """lora, step, prompt and seed of the case, and its scores, as `record_property` would add them: JUnit
    XML then carries them as <property> of the test case (CI dashboards show them beside the outcome)."""
    harness = state_of(item.config).harness_if_built
    case, checkpoint = param(item, "lora_case"), param(item, "lora_checkpoint")
    try:
        if isinstance(case, EvalCase):
            item.user_properties += [
                ("lora", case.loraname), ("step", case.step_label), ("prompt", case.prompt_id),
                ("seed", "" if case.seed is None else case.seed),
            ]
            if harness is not None:
                for metric, score in sorted(harness.known_scores(case).items()):
                    item.user_properties.append((f"score.{metric}", "" if score.value is None else score.value))
        elif isinstance(checkpoint, Checkpoint):
            item.user_properties += [("lora", checkpoint.loraname), ("step", step_label(checkpoint.training_step, checkpoint.step_kind))]
    except Exception as exc:  # properties must never change a test's outcome
        warnings.warn(f"lora-harness: could not add JUnit properties for {item.nodeid}: {exc}", stacklevel=1)


class ControllerReports:
    """Controller side (xdist forwards the workers' reports): the verdicts gate tests enforced, and a
    progress line per finished checkpoint, throttled. A class (registered in pytest_configure) because a
    report does not carry its config."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The progress tag is taken off the report first, so JUnit's <properties> carry the case and its
        scores (added in pytest_runtest_call), not this bookkeeping."""
        if is_worker(self.config):
            return
        state = state_of(self.config)
        if report.when == "call":
            state.verdicts.extend(
                {**value, "test": report.nodeid} for name, value in report.user_properties if name == VERDICT_PROPERTY
            )
        info = dict(report.user_properties).get(PROGRESS_KEY)
        # JUnit shows each enforced verdict as a plain `verdict` property (pass, fail, inconclusive, ...)
        report.user_properties[:] = [
            ("verdict", p[1]["decision"]) if p[0] == VERDICT_PROPERTY else p
            for p in report.user_properties if p[0] != PROGRESS_KEY
        ]
        if str(self.config.getoption("lora_progress")).lower() == "off":
            return
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        if isinstance(info, dict):
            self._progress_line(info)

    def _progress_line(self, info: dict[str, Any]) -> None:
        state = state_of(self.config)
        if state.progress is None:
            interval = float(self.config.getoption("lora_progress"))
            generates = any(source.generates for source in state.eval_config().sources)
            phase = "generating and judging" if generates else "judging"  # images are made when first needed
            state.progress = PhaseProgress(phase, info["checkpoints"], info["images"], interval=interval)
        line = state.progress.item_done(info["checkpoint"], info["size"])
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if line and reporter is not None:
            writer = getattr(reporter, "_tw", None)  # xdist's progress dots do not end their line
            if writer is not None and writer.width_of_current_line:
                reporter.write("\n")
            reporter.write_line(line)
