"""An xdist scheduler that keeps a LoRA checkpoint's tests (and the checkpoints compared with it) on one
worker, while node ids stay exactly what `-n 0` produces.

`xdist_group` markers did this before, but `--dist loadgroup` appends `@<group>` to every node id: `--lf`
then found none of the recorded failures, an id copied from the output was "not found", and JUnit names
differed between `-n 0` and `-n 4`. xdist's `LoadScopeScheduling` sends each *scope* to one worker; here the
scope comes from the case behind the test's parameter id (see lora_harness.run.regression_targets.xdist_groups), and a
test without a lora parameter is a scope of its own (plain `--dist load` behaviour).
"""

from __future__ import annotations

from typing import Any, Callable

from xdist.scheduler import LoadScopeScheduling


def param_id(nodeid: str) -> str | None:
    """`path::test[abc-def]` -> `abc-def` (None without a parametrization)."""
    name = nodeid.rpartition("::")[2]
    if not name.endswith("]") or "[" not in name:
        return None
    return name[name.index("[") + 1 : -1]


def scope_for(nodeid: str, scopes: dict[str, str]) -> str:
    """The scope of `nodeid`: its parameter id's group; a stacked id (`x-<case id>`, `<case id>-x`) is tried
    at every `-`; otherwise the node id itself."""
    param = param_id(nodeid)
    if param is None:
        return nodeid
    if param in scopes:
        return scopes[param]
    for index, char in enumerate(param):
        if char == "-" and (param[:index] in scopes or param[index + 1 :] in scopes):
            return scopes.get(param[:index]) or scopes[param[index + 1 :]]
    return nodeid


class CheckpointScopeScheduling(LoadScopeScheduling):
    """LoadScope with scopes from `scope_of()` (parameter id -> group), asked once, when scheduling starts."""

    def __init__(self, config: Any, log: Any = None, *, scope_of: Callable[[], dict[str, str]]) -> None:
        super().__init__(config, log)
        self._scope_of = scope_of
        self._scopes: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._scopes is None:
            self._scopes = self._scope_of()
        return scope_for(nodeid, self._scopes)
