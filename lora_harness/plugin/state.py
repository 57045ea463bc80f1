"""What the plugin keeps per pytest process: the run id, the Harness (built on first use), the verdicts and
notes the controller collects; and the one rule that tells the xdist controller from a worker."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lora_harness.core.cases import Checkpoint
from lora_harness.core.config import ConfigError, EvalConfig, load_config
from lora_harness.core.prompts import PromptFileError
from lora_harness.report.manifest import now_iso
from lora_harness.run import sharding
from lora_harness.run.harness import Harness
from lora_harness.run.progress import PhaseProgress
from lora_harness.run.sharding import Shard, ShardError
from lora_harness.run.training_hook import parse_set_option
from lora_harness.sources.samples import SampleFolderError

# workerinput / workeroutput keys: what the controller hands to xdist workers and learns back from them
RUN_DIR_KEY = "lora_harness_run_dir"
RUN_ID_KEY = "lora_harness_run_id"
NOTES_KEY = "lora_harness_notes"
CONFIG_ERRORS_KEY = "lora_harness_config_errors"
CHECKPOINTS_KEY = "lora_harness_checkpoints"
PROGRESS_KEY = "lora_harness_progress"  # a user property the progress line reads (taken off before JUnit)
USER_ERRORS = (ConfigError, SampleFolderError, PromptFileError, ValueError)


def is_worker(config: pytest.Config) -> bool:
    """An xdist worker (it judges and stores; the controller alone prints, writes reports and decides the run)."""
    return hasattr(config, "workerinput")


@dataclass
class PluginState:
    pytest_config: pytest.Config
    run_id: str
    worker: str
    worker_count: int = 1
    run_dirs: set[Path] = field(default_factory=set)
    started_at: str = field(default_factory=now_iso)
    progress: PhaseProgress | None = None
    checkpoints: set[Checkpoint] = field(default_factory=set)  # every collected checkpoint, before --shard
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # what gate tests decided (verdicts.enforce)
    config_errors: list[str] = field(default_factory=list)  # config / usage errors (the workers' ones too)
    notes: list[str] = field(default_factory=list)  # one-line notes, printed once by the controller
    _harness: Harness | None = None
    _config: EvalConfig | None = None

    @classmethod
    def of(cls, config: pytest.Config) -> "PluginState":
        """A worker takes the controller's run id (one run folder for all processes)."""
        if is_worker(config):
            workerinput = config.workerinput  # type: ignore[attr-defined]
            return cls(config, workerinput[RUN_ID_KEY], workerinput["workerid"], int(workerinput.get("workercount", 1)))
        return cls(config, f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", "main")

    @property
    def harness_if_built(self) -> Harness | None:
        return self._harness

    def eval_config(self) -> EvalConfig:
        if self._config is None:
            self._config = load_config(config_path(self.pytest_config), overrides(self.pytest_config))
            if str(self.pytest_config.getoption("shard", None) or "").strip().lower() == sharding.AUTO:
                shard = shard_of(self.pytest_config)  # every task of an array: its own run folder, merged later
                run = self._config.run.model_copy(update={"name": self._config.run.name + sharding.run_name_suffix(shard)})  # type: ignore[arg-type]
                self._config = self._config.model_copy(update={"run": run})
        return self._config

    def harness(self, *, scheduling_only: bool = False) -> Harness:
        """The run of this process. The xdist controller builds it only to schedule (`scheduling_only`):
        its workers judge, so the controller reports on a run folder only when a worker names it."""
        if self._harness is None:
            self._harness = Harness(
                self.eval_config(), run_id=self.run_id, worker=self.worker, worker_count=self.worker_count,
                allow_incomplete=bool(self.pytest_config.getoption("allow_incomplete", False)),
                drop_stale=bool(self.pytest_config.getoption("samples")),
            )
        if not scheduling_only:
            self.run_dirs.add(self._harness.config.run_dir)
        return self._harness

    def all_checkpoints(self) -> set[Checkpoint]:
        """Every collected checkpoint (the workers' too), before --shard: what "latest" is the latest of."""
        return self.checkpoints | set(self._harness.checkpoints if self._harness else ())


STATE = pytest.StashKey[PluginState]()


def state_of(config: pytest.Config) -> PluginState:
    return config.stash[STATE]


def harness_or_fail(config: pytest.Config) -> Harness:
    try:
        return state_of(config).harness()
    except USER_ERRORS as exc:
        message = f"lora-harness: {exc}"
    pytest.fail(message, pytrace=False)  # outside `except`: no chained traceback for a config mistake


def add_unique(target: list[str], lines: Any) -> None:
    target.extend(line for line in lines if line not in target)


def shard_of(config: pytest.Config) -> Shard | None:
    """This run's shard (`--lora-shard i/N` or `--lora-shard auto` from the scheduler's environment), or None."""
    spec = config.getoption("shard", None)
    count = config.getoption("shard_count", None)
    if not spec and count is None:
        return None
    try:
        if not spec:
            raise ShardError("--lora-shard-count needs --lora-shard auto")
        return sharding.resolve(spec, count=count)
    except ShardError as exc:
        raise pytest.UsageError(str(exc)) from None


def config_path(config: pytest.Config) -> Path:
    option = config.getoption("lora_config")
    return Path(option) if option else config.rootpath / config.getini("lora_config")


def overrides(config: pytest.Config) -> dict[str, Any]:
    """Command-line options as dotted config keys (validated with the config file, same error messages)."""
    found: dict[str, Any] = {}
    if config.getoption("report_dir"):
        found["run.report_dir"] = str(Path(config.getoption("report_dir")).resolve())
    if config.getoption("run_name"):
        found["run.name"] = config.getoption("run_name")
    gate = config.getoption("gate")
    if gate:
        found["gate.checkpoints"] = gate if gate in ("latest", "all", "best") else _steps(gate)
    if config.getoption("samples"):
        found["sources"] = [{"path": str(Path(p).resolve())} for p in config.getoption("samples")]
    for item in config.getoption("lora_set", None) or ():
        key, value = parse_set_option(item)
        found[key] = value
    return found


def _steps(text: str) -> list[int] | str:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return text  # validation then names the bad value and what is allowed


def param(item: pytest.Item, name: str) -> Any:
    """The value of a parametrized fixture of `item`, or None."""
    return getattr(getattr(item, "callspec", None), "params", {}).get(name)
