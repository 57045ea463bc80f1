"""End of the session. A worker hands its run folder, checkpoints, notes and config errors to the
controller; the controller writes the CSVs, run.json, report.html and the `--lora-summary-md` verdict, and
turns config errors into exit code 4. A failure here is reported, never raised: the scores are safe already."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_harness.core.redact import Redactor
from lora_harness.plugin.attachments import THUMBNAILS
from lora_harness.plugin.state import (
    CHECKPOINTS_KEY, CONFIG_ERRORS_KEY, NOTES_KEY, RUN_DIR_KEY, add_unique, is_worker, shard_of, state_of,
)
from lora_harness.report.csv import write_score_csvs
from lora_harness.run.store import latest_rows, read_rows

REPORT_ERRORS = pytest.StashKey[list]()  # printed in red by the terminal summary
REPORT_PATHS = pytest.StashKey[dict]()  # run folder -> report.html


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = state_of(config)
    if THUMBNAILS in config.stash:  # every thumbnail packed before a report (here or the controller's) reads them
        config.stash[THUMBNAILS].close()
    if is_worker(config):
        config.workeroutput[CONFIG_ERRORS_KEY] = list(state.config_errors)
        if state.harness_if_built is not None:
            config.workeroutput[RUN_DIR_KEY] = str(state.harness_if_built.config.run_dir)
            config.workeroutput[CHECKPOINTS_KEY] = [[c.loraname, c.training_step, c.step_kind] for c in state.harness_if_built.checkpoints]
            config.workeroutput[NOTES_KEY] = list(state.harness_if_built.notes)
        return
    if state.harness_if_built is not None:
        add_unique(state.notes, state.harness_if_built.notes)
    if state.config_errors:
        # pytest's usage-error code under any -n: CI can tell a broken config from a failed gate (1).
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
        _write_summary_md(config, None, int(session.exitstatus))
        return
    if config.option.collectonly:  # nothing was judged: no CSVs, no report
        return
    for run_dir in sorted(state.run_dirs):
        try:
            write_score_csvs(latest_rows(read_rows(run_dir)), run_dir)
        except OSError as exc:  # the scores themselves are already safe in scores/*.jsonl
            config.stash.setdefault(REPORT_ERRORS, []).append(f"{run_dir}: could not write CSV: {exc}")
        _write_run_report(config, run_dir, int(session.exitstatus))
        _write_summary_md(config, run_dir, int(session.exitstatus))


def _write_summary_md(config: pytest.Config, run_dir: Path | None, exit_status: int) -> None:
    """`--lora-summary-md`: the Markdown verdict for CI; a failure is reported, never raised."""
    target = config.getoption("lora_summary_md", None)
    if not target:
        return
    from lora_harness.report import summary_md

    state = state_of(config)
    path = Path(target)
    try:
        verdict = summary_md.run_verdict(run_dir) if run_dir is not None else None
        report = config.stash.get(REPORT_PATHS, {}).get(run_dir) if run_dir is not None else None
        title = run_dir.name if run_dir is not None else "configuration error"
        text = summary_md.render_summary(
            title, verdict, exit_status=exit_status,
            report_link=summary_md.report_link(report, path, config.getoption("lora_report_url", None)),
            errors=state.config_errors,
        )
        summary_md.write_summary(path, Redactor().text(text))
    except Exception as exc:  # never hide the test results
        config.stash.setdefault(REPORT_ERRORS, []).append(f"could not write {path}: {type(exc).__name__}: {exc}")


def _write_run_report(config: pytest.Config, run_dir: Path, exit_status: int) -> None:
    """run.json and report.html; a failure is reported, never raised (the scores are safe already)."""
    state = state_of(config)
    try:
        from lora_harness.report.build import finish_session

        files = finish_session(
            run_dir, state.eval_config(), run_id=state.run_id, started_at=state.started_at,
            shard=str(shard_of(config)) if config.getoption("shard") else None, exit_status=exit_status,
            checkpoints=state.all_checkpoints(),
            verdicts=state.verdicts,
        )
    except ImportError as exc:
        message = f"report.html skipped: {exc.name or exc} is not installed; pip install 'lora-harness[report]'"
    except Exception as exc:  # a report bug must not hide the test results
        message = f"could not write report.html ({type(exc).__name__}: {exc}); rebuild it: lora-harness report {run_dir}"
    else:
        if files is not None:
            config.stash.setdefault(REPORT_PATHS, {})[run_dir] = files.html
        return
    config.stash.setdefault(REPORT_ERRORS, []).append(f"{run_dir}: {message}")
