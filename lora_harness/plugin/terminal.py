"""The end-of-run terminal summary (controller only): config errors, notes, and per run folder the
checkpoint table with its verdicts, the run's verdict line, the best checkpoint, LLM cost and file paths."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lora_harness.core.cases import Checkpoint
from lora_harness.core.config import EvalConfig
from lora_harness.judges.llm.cost import summary_lines as llm_cost_lines
from lora_harness.plugin.session_end import REPORT_ERRORS, REPORT_PATHS
from lora_harness.plugin.state import is_worker, state_of
from lora_harness.plugin.terminal_table import format_table, verdict_line
from lora_harness.run.store import ScoreRow, latest_rows, read_rows
from lora_harness.verdicts.outcome import verdicts_of


def terminal_view(rows: list[ScoreRow], config: EvalConfig, checkpoints: set[Checkpoint]) -> Any:
    """The report's view of this session's rows, gated as the tests were: every collected checkpoint counts,
    not just this shard's rows ("latest" is the latest of the whole sweep)."""
    from lora_harness.report.build import gated_keys
    from lora_harness.report.view import Rules, build_view

    rules = Rules.of(config)
    keys = gated_keys(config, checkpoints)
    if keys is not None:
        rules = dataclasses.replace(rules, gated_keys=frozenset(keys))
    return build_view(latest_rows(rows), rules)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = state_of(config)
    if is_worker(config):
        return
    tr = terminalreporter
    for error in state.config_errors:
        tr.write_sep("=", "lora-harness: configuration error", red=True)
        tr.write_line(f"lora-harness: {error}", red=True)
        tr.write_line("(exit code 4: the run did not start; fix the config and rerun)", red=True)
    for note in state.notes:
        tr.write_line(f"lora-harness note: {note}", yellow=True)
    if not state.run_dirs or state.config_errors or config.option.collectonly:
        return
    eval_config = state.eval_config()
    for run_dir in sorted(state.run_dirs):
        rows = list(read_rows(run_dir, run_id=state.run_id))
        tr.write_sep("=", f"lora-harness: {eval_config.run.name} (run {state.run_id})")
        view = terminal_view(rows, eval_config, state.all_checkpoints())
        view.test_verdicts = verdicts_of(state.verdicts)
        tr.write_line(format_table(view))
        tr.write_line(verdict_line(view))
        for line in view.best_lines:
            tr.write_line(line)
        for line in llm_cost_lines(rows):  # tokens and cost of LLM judges (each API call counted once)
            tr.write_line(line)
        tr.write_line(f"scores: {run_dir / 'scores.csv'} (wide), {run_dir / 'scores_long.csv'} (one row per score)")
        if run_dir in config.stash.get(REPORT_PATHS, {}):
            tr.write_line(f"report: {config.stash[REPORT_PATHS][run_dir]}")
    for error in config.stash.get(REPORT_ERRORS, []):
        tr.write_line(f"lora-harness: {error}", red=True)
