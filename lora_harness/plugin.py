"""pytest hooks and fixtures of lora-harness; all logic lives in plain modules (harness, gates, report).

Registered through the `pytest11` entry point, so it is active in every pytest run of an environment that
installs the package, and stays inert until a test asks for `lora_case` or `lora_checkpoint`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from lora_harness.cases import Checkpoint, EvalCase
from lora_harness.config import ConfigError, EvalConfig, load_config
from lora_harness.gate_check import Gate
from lora_harness.gates import gated_checkpoints
from lora_harness.harness import Harness
from lora_harness.judges import JudgeContext, Score
from lora_harness.report.csv import step_label, write_score_csvs
from lora_harness.sources.samples import SampleFolderError
from lora_harness.prompts import PromptFileError
from lora_harness.store import latest_rows, read_rows
from lora_harness.summary import format_table, summarize

RUN_DIR_KEY = "lora_harness_run_dir"
RUN_ID_KEY = "lora_harness_run_id"
USER_ERRORS = (ConfigError, SampleFolderError, PromptFileError, ValueError)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lora-harness", "LoRA evaluation (lora-harness)")
    group.addoption("--lora-config", metavar="PATH", help="eval config TOML (default: ini lora_config, evals/lora_eval.toml)")
    group.addoption("--report-dir", metavar="DIR", help="override run.report_dir: where reports/<run>/ is written")
    group.addoption("--run-name", metavar="NAME", help="override run.name")
    group.addoption("--gate", metavar="SPEC", help="override gate.checkpoints: latest, all, or steps such as 800,1000")
    group.addoption(
        "--samples", metavar="DIR", action="append", default=None,
        help="evaluate this kohya sample folder instead of the config's sources (repeatable)",
    )
    parser.addini("lora_config", "default eval config path, relative to the rootdir", default="evals/lora_eval.toml")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Keep each checkpoint's images and its aggregate test on one xdist worker, in collection order."""
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", None) == "no":
        config.option.dist = "loadgroup"


@dataclass
class PluginState:
    pytest_config: pytest.Config
    run_id: str
    worker: str
    worker_count: int = 1
    run_dirs: set[Path] = field(default_factory=set)
    _harness: Harness | None = None
    _config: EvalConfig | None = None

    def eval_config(self) -> EvalConfig:
        if self._config is None:
            self._config = load_config(_config_path(self.pytest_config), _overrides(self.pytest_config))
        return self._config

    def harness(self) -> Harness:
        if self._harness is None:
            self._harness = Harness(
                self.eval_config(), run_id=self.run_id, worker=self.worker, worker_count=self.worker_count
            )
            self.run_dirs.add(self._harness.config.run_dir)
        return self._harness


_STATE = pytest.StashKey[PluginState]()


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        run_id, worker = workerinput[RUN_ID_KEY], workerinput["workerid"]
    else:
        run_id, worker = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", "main"
    worker_count = int(workerinput.get("workercount", 1)) if workerinput is not None else 1
    config.stash[_STATE] = PluginState(config, run_id, worker, worker_count)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(config.stash[_STATE]), "lora_harness_xdist")


class _XdistHooks:
    """Hand the run id to workers and learn from them where they wrote scores."""

    def __init__(self, state: PluginState) -> None:
        self.state = state

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[RUN_ID_KEY] = self.state.run_id

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        run_dir = getattr(node, "workeroutput", {}).get(RUN_DIR_KEY)
        if run_dir:
            self.state.run_dirs.add(Path(run_dir))


def _config_path(config: pytest.Config) -> Path:
    option = config.getoption("lora_config")
    return Path(option) if option else config.rootpath / config.getini("lora_config")


def _overrides(config: pytest.Config) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if config.getoption("report_dir"):
        overrides["run.report_dir"] = str(Path(config.getoption("report_dir")).resolve())
    if config.getoption("run_name"):
        overrides["run.name"] = config.getoption("run_name")
    gate = config.getoption("gate")
    if gate:
        overrides["gate.checkpoints"] = gate if gate in ("latest", "all") else _steps(gate)
    if config.getoption("samples"):
        overrides["sources"] = [{"path": str(Path(p).resolve())} for p in config.getoption("samples")]
    return overrides


def _steps(text: str) -> list[int] | str:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return text  # validation then names the bad value and what is allowed


def _state(config: pytest.Config) -> PluginState:
    return config.stash[_STATE]


def _harness_or_fail(config: pytest.Config) -> Harness:
    try:
        return _state(config).harness()
    except USER_ERRORS as exc:
        pytest.fail(f"lora-harness: {exc}", pytrace=False)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "lora_case" not in names and "lora_checkpoint" not in names:
        return
    harness = _harness_or_fail(metafunc.config)
    if "lora_case" in names:
        metafunc.parametrize("lora_case", harness.cases, ids=[case.test_id for case in harness.cases])
    if "lora_checkpoint" in names:
        metafunc.parametrize("lora_checkpoint", harness.checkpoints, ids=[c.test_id for c in harness.checkpoints])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        target = params.get("lora_case") or params.get("lora_checkpoint")
        if isinstance(target, EvalCase):
            target = Checkpoint.of(target)
        if isinstance(target, Checkpoint):
            item.add_marker(pytest.mark.xdist_group(target.key))


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lora_harness(request: pytest.FixtureRequest) -> Harness:
    """The run: config, cases, judges and the score store of this process."""
    return _harness_or_fail(request.config)


@pytest.fixture(scope="session")
def lora_eval_config(lora_harness: Harness) -> EvalConfig:
    return lora_harness.config


@pytest.fixture(scope="session")
def lora_judges(lora_harness: Harness) -> list:
    return lora_harness.judges


@pytest.fixture(scope="session")
def lora_references(lora_harness: Harness) -> JudgeContext:
    """Reference photos of the person (decoded once per worker) with their paths."""
    return lora_harness.context()


@pytest.fixture
def lora_image(lora_harness: Harness, lora_case: EvalCase):
    """The case's image as an RGB uint8 array, decoded once and shared with the judges."""
    return lora_harness.image(lora_case)


@pytest.fixture
def lora_scores(lora_harness: Harness, lora_case: EvalCase) -> dict[str, Score]:
    """Every configured judge's scores for the case, recorded to the store as they are produced."""
    return lora_harness.score(lora_case)


@pytest.fixture
def lora_record(lora_harness: Harness, lora_case: EvalCase, request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record a metric a test computes itself: `lora_record("my_metric", 0.8, raw={...})`."""

    def record(metric: str, value: float | None, raw: dict[str, Any] | None = None, error: str | None = None) -> None:
        lora_harness.record(lora_case, Score(metric, value, raw or {}, error), source=f"test:{request.node.name}")

    return record


@pytest.fixture
def lora_gate(lora_harness: Harness) -> Gate:
    """Asserts thresholds: fails gated checkpoints, reports the others as xfail with the same message."""
    return Gate(lora_harness)


# --- end of session: CSV and summary ------------------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = _state(config)
    if hasattr(config, "workerinput"):
        if state._harness is not None:
            config.workeroutput[RUN_DIR_KEY] = str(state._harness.config.run_dir)
        return
    for run_dir in sorted(state.run_dirs):
        try:
            write_score_csvs(latest_rows(read_rows(run_dir)), run_dir)
        except OSError as exc:  # the scores themselves are already safe in scores/*.jsonl
            config.stash.setdefault(_REPORT_ERRORS, []).append(f"{run_dir}: could not write CSV: {exc}")


_REPORT_ERRORS = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = _state(config)
    if hasattr(config, "workerinput") or not state.run_dirs:
        return
    eval_config = state.eval_config()
    tr = terminalreporter
    for run_dir in sorted(state.run_dirs):
        rows = list(read_rows(run_dir, run_id=state.run_id))
        tr.write_sep("=", f"lora-harness: {eval_config.run.name} (run {state.run_id})")
        checkpoints = {Checkpoint(r.loraname, r.training_step, r.step_kind) for r in rows}  # type: ignore[arg-type]
        gated = {(c.loraname, step_label(c.training_step, c.step_kind)) for c in gated_checkpoints(checkpoints, eval_config.gate.checkpoints)}
        tr.write_line(format_table(summarize(latest_rows(rows), eval_config.thresholds), gated))
        tr.write_line(f"scores: {run_dir / 'scores.csv'} (wide), {run_dir / 'scores_long.csv'} (one row per score)")
    for error in config.stash.get(_REPORT_ERRORS, []):
        tr.write_line(f"lora-harness: {error}", red=True)
