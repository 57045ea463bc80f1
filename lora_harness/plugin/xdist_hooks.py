"""The controller's side of pytest-xdist: hand the run id to workers, schedule by checkpoint, and learn back
where the workers wrote scores, which checkpoints they collected, and their notes and config errors."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from lora_harness.core.cases import Checkpoint
from lora_harness.generation.devices import mapped as device_mapped
from lora_harness.plugin.collection import PARAMETRIZED, group_of_params, parametrizations
from lora_harness.plugin.state import (
    CHECKPOINTS_KEY, CONFIG_ERRORS_KEY, NOTES_KEY, RUN_DIR_KEY, RUN_ID_KEY, PluginState, add_unique, config_path,
)
from lora_harness.run.regression_targets import xdist_groups


class XdistHooks:
    """Registered in pytest_configure only where xdist is installed (its hook names are unknown otherwise)."""

    def __init__(self, state: PluginState) -> None:
        self.state = state

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[RUN_ID_KEY] = self.state.run_id

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """`-n N` (xdist's default `--dist load`): keep the checkpoints a test needs together on one worker
        by scheduling, not by `xdist_group` markers, which would append `@group` to every node id (breaking
        `--lf`, copied ids and JUnit history between `-n 0` and `-n N`). An explicit `--dist` is respected."""
        if config.option.dist != "load" or not config_path(config).is_file():
            return None
        from lora_harness.plugin.xdist_scheduler import CheckpointScopeScheduling

        return CheckpointScopeScheduling(config, log, scope_of=lambda: scope_map(self.state))

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {})
        if output.get(RUN_DIR_KEY):
            self.state.run_dirs.add(Path(output[RUN_DIR_KEY]))
        for name, step, kind in output.get(CHECKPOINTS_KEY, ()):
            self.state.checkpoints.add(Checkpoint(name, step, kind))
        add_unique(self.state.notes, output.get(NOTES_KEY, ()))
        add_unique(self.state.config_errors, output.get(CONFIG_ERRORS_KEY, ()))


def scope_map(state: PluginState) -> dict[str, str]:
    """Parameter id -> xdist scope (the checkpoints judged together), computed by the controller.

    Empty when the config cannot be loaded here: the workers then report the error."""
    try:
        with warnings.catch_warnings():  # the workers collect too, and their warnings reach the summary
            warnings.simplefilter("ignore")
            harness = state.harness(scheduling_only=True)
        groups = xdist_groups(harness)
        # more workers than devices: a generating checkpoint's tests go to its device's one worker
        workers = int(getattr(state.pytest_config.option, "numprocesses", 1) or 1)
        devices = harness.generation_groups(worker_count=workers)
        scopes: dict[str, str] = {}
        for p in parametrizations(harness, PARAMETRIZED):
            for value, param_id in zip(p.values, p.ids):
                group = group_of_params(harness, {p.name: value}, groups)
                if group is not None:
                    scopes[param_id] = device_mapped(group, devices)  # type: ignore[assignment]
        return scopes
    except Exception:
        return {}
