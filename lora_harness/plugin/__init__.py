"""pytest hooks and fixtures of lora-harness; all logic lives in plain modules (harness, gates, report).

Registered through the `pytest11` entry point, so it is active in every pytest run of an environment that
installs the package, and stays inert until a test asks for `lora_case` or `lora_checkpoint`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from lora_harness.verdicts.baseline import BaselineError, Comparison
from lora_harness.core.cases import Checkpoint, EvalCase
from lora_harness.checks import registry as lora_checks
from lora_harness.run.training_hook import parse_set_option
from lora_harness.core.config import ConfigError, EvalConfig, load_config
from lora_harness.verdicts.enforce import VERDICT_PROPERTY, Gate, Unjudged, current_properties
from lora_harness.verdicts.outcome import verdicts_of
from lora_harness.run.harness import Harness
from lora_harness.judges import Score
from lora_harness.judges.llm.cost import summary_lines as llm_cost_lines
from lora_harness.report.csv import step_label, write_score_csvs
from lora_harness.sources.generate import GenerateSource
from lora_harness.sources.samples import SampleFolderError
from lora_harness.verdicts.stats import CheckpointAggregates
from lora_harness.plugin.regression_targets import MetricTarget, comparison_targets, gate_targets, group_of, resolve, xdist_groups
from lora_harness.run.progress import PhaseProgress
from lora_harness.core.redact import Redactor
from lora_harness.core.prompts import PromptFileError
from lora_harness.report.manifest import now_iso
from lora_harness.run import sharding
from lora_harness.generation.devices import mapped as device_mapped
from lora_harness.report.allure import allure_enabled
from lora_harness.run.sharding import Shard, ShardError
from lora_harness.run.store import ScoreRow, latest_rows, read_rows
from lora_harness.plugin.terminal_table import format_table, verdict_line

RUN_DIR_KEY = "lora_harness_run_dir"
RUN_ID_KEY = "lora_harness_run_id"
NOTES_KEY = "lora_harness_notes"
CONFIG_ERRORS_KEY = "lora_harness_config_errors"
USER_ERRORS = (ConfigError, SampleFolderError, PromptFileError, ValueError)
PROGRESS_KEY = "lora_harness_progress"
CHECKPOINTS_KEY = "lora_harness_checkpoints"


# Old, unprefixed spellings: accepted (hidden from --help) for one release, with a deprecation note.
LEGACY_OPTIONS = {"--report-dir": "report_dir", "--run-name": "run_name", "--gate": "gate", "--samples": "samples", "--shard": "shard"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lora-harness", "LoRA evaluation (lora-harness)")
    group.addoption("--lora-config", metavar="PATH", help="eval config TOML (default: ini lora_config, evals/lora_eval.toml)")
    group.addoption("--lora-report-dir", dest="report_dir", metavar="DIR", help="override run.report_dir: where reports/<run>/ is written")
    group.addoption("--lora-run-name", dest="run_name", metavar="NAME", help="override run.name")
    group.addoption(
        "--lora-gate", dest="gate", metavar="SPEC",
        help="override gate.checkpoints: latest, all, best, or steps such as 800,1000",
    )
    group.addoption(
        "--lora-samples", dest="samples", metavar="DIR", action="append", default=None,
        help="evaluate this kohya sample folder instead of the config's sources (repeatable); config sections "
        "naming LoRAs of the replaced sources are skipped with a note",
    )
    group.addoption(
        "--lora-shard", dest="shard", metavar="I/N|auto",
        help="evaluate only shard I of N (split by checkpoint, the same on every machine); auto: from a Slurm "
        "array or Kubernetes Indexed Job (own run folder <run>-shard<i>of<N>); merge with `lora-harness merge`",
    )
    group.addoption(
        "--lora-shard-count", dest="shard_count", metavar="N", type=int,
        help="number of shards for --lora-shard auto in a Kubernetes Indexed Job",
    )
    group.addoption(
        "--lora-progress", metavar="SECONDS", default="10",
        help="a judging progress line (checkpoints done, ETA) at most every SECONDS; 0: every checkpoint; off: none",
    )
    group.addoption(
        "--lora-set", metavar="KEY=JSON", action="append", default=None,
        help="override a config key with a JSON value, e.g. sources='[...]' (repeatable; used by `lora-harness eval-checkpoint`)",
    )
    group.addoption(
        "--allow-incomplete", action="store_true", default=False,
        help="accept gated metrics that could not be judged here (a judge's model or package absent): skip instead of fail",
    )
    group.addoption(
        "--lora-summary-md", metavar="PATH",
        help="append a short Markdown verdict (badge word, gated checkpoints, failing metrics, report link) to "
        "PATH, e.g. \"$GITHUB_STEP_SUMMARY\" or a file for a merge-request comment",
    )
    group.addoption(
        "--lora-report-url", metavar="URL",
        help="link the Markdown summary to this URL (e.g. the CI artifact) instead of the report's relative path",
    )
    group.addoption(
        "--lora-allure-full-images", action="store_true", default=False,
        help="with --alluredir: attach each full-size image instead of a JPEG thumbnail",
    )
    for flag, dest in LEGACY_OPTIONS.items():
        group.addoption(
            flag, dest=f"legacy_{dest}", action="append" if dest == "samples" else "store", default=None,
            help=argparse.SUPPRESS,
        )
    parser.addini("lora_config", "default eval config path, relative to the rootdir", default="evals/lora_eval.toml")


def _apply_legacy_options(config: pytest.Config) -> None:
    """`--gate` etc. still work, as the `--lora-` spelling, saying so once."""
    for flag, dest in LEGACY_OPTIONS.items():
        value = getattr(config.option, f"legacy_{dest}", None)
        if value is None:
            continue
        if dest == "samples":
            setattr(config.option, dest, [*(getattr(config.option, dest) or []), *value])
        elif getattr(config.option, dest, None) is None:
            setattr(config.option, dest, value)
        if not hasattr(config, "workerinput"):
            config.issue_config_time_warning(
                pytest.PytestDeprecationWarning(f"{flag} is now --lora-{flag[2:]}; the old spelling goes in the next release"),
                stacklevel=2,
            )


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
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # what gate tests decided (gate_check.enforce)
    config_errors: list[str] = field(default_factory=list)  # config / usage errors (the workers' ones too)
    notes: list[str] = field(default_factory=list)  # one-line notes, printed once by the controller
    _harness: Harness | None = None
    _config: EvalConfig | None = None

    def eval_config(self) -> EvalConfig:
        if self._config is None:
            self._config = load_config(_config_path(self.pytest_config), _overrides(self.pytest_config))
            if str(self.pytest_config.getoption("shard", None) or "").strip().lower() == sharding.AUTO:
                shard = _shard(self.pytest_config)  # every task of an array: its own run folder, merged later
                run = self._config.run.model_copy(update={"name": self._config.run.name + sharding.run_name_suffix(shard)})  # type: ignore[arg-type]
                self._config = self._config.model_copy(update={"run": run})
        return self._config

    def harness(self) -> Harness:
        if self._harness is None:
            self._harness = Harness(
                self.eval_config(), run_id=self.run_id, worker=self.worker, worker_count=self.worker_count,
                allow_incomplete=bool(self.pytest_config.getoption("allow_incomplete", False)),
                drop_stale=bool(self.pytest_config.getoption("samples")),
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
    _apply_legacy_options(config)
    _check_options(config)
    if config.option.collectonly and hasattr(config.option, "warn_unused_snapshots"):
        # syrupy counts every stored snapshot as unused when nothing runs, and fails a mere --collect-only
        config.option.warn_unused_snapshots = True
    config.pluginmanager.register(_ShardAndProgress(config), "lora_harness_shard_progress")


def _check_options(config: pytest.Config) -> None:
    """Bad --shard / --lora-progress values stop the run before collection, saying what is expected."""
    if config.getoption("shard", None) or config.getoption("shard_count", None) is not None:
        _shard(config)
    value = str(config.getoption("lora_progress", "10"))
    try:
        if value.lower() != "off" and float(value) < 0:
            raise ValueError
    except ValueError:
        raise pytest.UsageError(f"--lora-progress {value!r}: give seconds between lines (e.g. 10, 0 for every checkpoint) or off") from None


class _XdistHooks:
    """Hand the run id to workers and learn from them where they wrote scores."""

    def __init__(self, state: PluginState) -> None:
        self.state = state

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[RUN_ID_KEY] = self.state.run_id

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """`-n N` (xdist's default `--dist load`): keep the checkpoints a test needs together on one worker
        by scheduling, not by `xdist_group` markers, which would append `@group` to every node id (breaking
        `--lf`, copied ids and JUnit history between `-n 0` and `-n N`). An explicit `--dist` is respected."""
        if config.option.dist != "load" or not _config_path(config).is_file():
            return None
        from lora_harness.plugin.xdist_scheduler import CheckpointScopeScheduling

        return CheckpointScopeScheduling(config, log, scope_of=lambda: _scope_map(self.state))

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        run_dir = getattr(node, "workeroutput", {}).get(RUN_DIR_KEY)
        if run_dir:
            self.state.run_dirs.add(Path(run_dir))
        for name, step, kind in getattr(node, "workeroutput", {}).get(CHECKPOINTS_KEY, ()):
            self.state.checkpoints.add(Checkpoint(name, step, kind))
        output = getattr(node, "workeroutput", {})
        _add_unique(self.state.notes, output.get(NOTES_KEY, ()))
        _add_unique(self.state.config_errors, output.get(CONFIG_ERRORS_KEY, ()))


def _add_unique(target: list[str], lines: Any) -> None:
    target.extend(line for line in lines if line not in target)


def _shard(config: pytest.Config) -> Shard | None:
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
        overrides["gate.checkpoints"] = gate if gate in ("latest", "all", "best") else _steps(gate)
    if config.getoption("samples"):
        overrides["sources"] = [{"path": str(Path(p).resolve())} for p in config.getoption("samples")]
    for item in config.getoption("lora_set", None) or ():
        key, value = parse_set_option(item)
        overrides[key] = value
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
        message = f"lora-harness: {exc}"
    pytest.fail(message, pytrace=False)  # outside `except`: no chained traceback for a config mistake


_PARAMETRIZED = (
    "lora_case", "lora_checkpoint", "lora_checkpoint_summary", "lora_baseline_comparison", "lora_pairwise_comparison",
    *lora_checks.FIXTURES,
)
# Fixtures that need a valid config: with a config error, tests asking for them are deselected.
_NEEDS_CONFIG = frozenset({*_PARAMETRIZED, "lora_harness"})


@dataclass(frozen=True)
class _Parametrization:
    name: str
    values: list[Any]
    ids: list[str]
    indirect: bool


def _parametrizations(harness: Harness, names: Any) -> list[_Parametrization]:
    """What each lora fixture among `names` is parametrized over (shared by collection and the scheduler)."""
    found: list[_Parametrization] = []
    if "lora_case" in names:
        found.append(_Parametrization("lora_case", harness.cases, [c.test_id for c in harness.cases], False))
    if "lora_checkpoint" in names:
        found.append(_Parametrization("lora_checkpoint", harness.checkpoints, [c.test_id for c in harness.checkpoints], False))
    if "lora_checkpoint_summary" in names:
        gated = gate_targets(harness)
        found.append(_Parametrization("lora_checkpoint_summary", gated, [t.test_id for t in gated], True))
    if "lora_baseline_comparison" in names:
        comparisons = comparison_targets(harness)  # none configured: one case that skips, saying why
        ids = [t.test_id for t in comparisons] or ["no-baseline"]
        found.append(_Parametrization("lora_baseline_comparison", comparisons or [None], ids, True))
    if "lora_pairwise_comparison" in names:
        pairwise = harness.pairwise_comparisons()  # none configured: one case that skips
        ids = [c.test_id for c in pairwise] or ["no-pairwise-judge"]
        found.append(_Parametrization("lora_pairwise_comparison", pairwise or [None], ids, True))
    for fixture in lora_checks.FIXTURES:  # leakage / strength / memorization (lora_harness.checks)
        if fixture in names:
            values, ids = lora_checks.params(harness, fixture)
            found.append(_Parametrization(fixture, values, ids, True))
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if not any(name in names for name in _PARAMETRIZED):
        return
    state = _state(metafunc.config)
    try:
        found = _parametrizations(state.harness(), names)
    except USER_ERRORS as exc:
        # Not a collection error per test module (printed once per module and worker, exit 1 or 2): recorded,
        # the test deselected, and the run ends with pytest's usage-error code 4 (pytest_sessionfinish).
        _add_unique(state.config_errors, [str(exc)])
        for name in _PARAMETRIZED:
            if name in names:
                metafunc.parametrize(name, [None], ids=["config-error"])
        return
    for p in found:
        metafunc.parametrize(p.name, p.values, ids=p.ids, indirect=p.indirect)


def _group_of_params(harness: Harness, params: dict[str, Any], groups: dict[Checkpoint, str]) -> str | None:
    target = next((params[name] for name in _PARAMETRIZED if params.get(name) is not None), None)
    if isinstance(target, EvalCase):
        target = Checkpoint.of(target)
    return None if target is None else group_of(target, groups, harness.checkpoints)


def _scope_map(state: PluginState) -> dict[str, str]:
    """Parameter id -> xdist scope (the checkpoints judged together), computed by the controller.

    Empty when the config cannot be loaded here: the workers then report the error."""
    try:
        with warnings.catch_warnings():  # the workers collect too, and their warnings reach the summary
            warnings.simplefilter("ignore")
            harness = state.harness()
        groups = xdist_groups(harness)
        # more workers than devices: a generating checkpoint's tests go to its device's one worker
        workers = int(getattr(state.pytest_config.option, "numprocesses", 1) or 1)
        devices = harness.generation_groups(worker_count=workers)
        scopes: dict[str, str] = {}
        for p in _parametrizations(harness, _PARAMETRIZED):
            for value, param_id in zip(p.values, p.ids):
                group = _group_of_params(harness, {p.name: value}, groups)
                if group is not None:
                    scopes[param_id] = device_mapped(group, devices)  # type: ignore[assignment]
        return scopes
    except Exception:
        return {}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With a config error, deselect the tests that need the config (the error ends the run with code 4)."""
    state = _state(config)
    if not state.config_errors:
        return
    kept = [item for item in items if not _NEEDS_CONFIG & set(getattr(item, "fixturenames", ()))]
    if len(kept) != len(items):
        deselected = [item for item in items if item not in kept]
        items[:] = kept
        config.hook.pytest_deselected(items=deselected)


def _item_group(config: pytest.Config, item: pytest.Item) -> str | None:
    """The checkpoints an item must be judged with (see lora_harness.plugin.regression_targets), or None."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if not any(params.get(name) is not None for name in _PARAMETRIZED):
        return None
    state = _state(config)
    harness = state.harness()
    cache = config.stash.setdefault(_GROUPS, {})
    if "groups" not in cache:
        cache["groups"] = xdist_groups(harness)
    return _group_of_params(harness, params, cache["groups"])


_GROUPS = pytest.StashKey[dict]()


class _ShardAndProgress:
    """`--shard` selection and the controller's judging progress line (registered in pytest_configure)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """After -k/-m: keep this machine's shard, and tag image tests for the progress line."""
        shard = _shard(config)
        if shard is not None:
            items[:], deselected = sharding.split(items, shard, _shard_key)
            if deselected:
                config.hook.pytest_deselected(items=deselected)
        cases = [(item, _param(item, "lora_case")) for item in items if isinstance(_param(item, "lora_case"), EvalCase)]
        sizes: dict[str, int] = {}
        for _, case in cases:
            sizes[case.checkpoint_key] = sizes.get(case.checkpoint_key, 0) + 1
        for item, case in cases:
            item.user_properties.append((PROGRESS_KEY, {
                "checkpoint": case.checkpoint_key, "size": sizes[case.checkpoint_key],
                "checkpoints": len(sizes), "images": len(cases),
            }))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Controller side (xdist forwards the workers' reports): the verdicts gate tests enforced, and a
        progress line per finished checkpoint, throttled.

        The progress tag is taken off the report first, so JUnit's <properties> carry the case and its
        scores (added in pytest_runtest_call), not this bookkeeping."""
        if hasattr(self.config, "workerinput"):
            return
        if report.when == "call":
            _state(self.config).verdicts.extend(
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
        if not isinstance(info, dict):
            return
        state = _state(self.config)
        if state.progress is None:
            interval = float(self.config.getoption("lora_progress"))
            generates = any(isinstance(source, GenerateSource) for source in state.eval_config().sources)
            phase = "generating and judging" if generates else "judging"  # images are made when first needed
            state.progress = PhaseProgress(phase, info["checkpoints"], info["images"], interval=interval)
        line = state.progress.item_done(info["checkpoint"], info["size"])
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if line and reporter is not None:
            writer = getattr(reporter, "_tw", None)  # xdist's progress dots do not end their line
            if writer is not None and writer.width_of_current_line:
                reporter.write("\n")
            reporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Tell the harness which checkpoints this session tests, in test order (after -k and --shard), so
    judges that take work ahead (llm_rubric) judge the next ones while a test waits for its own."""
    state = session.config.stash.get(_STATE, None)
    harness = state._harness if state is not None else None
    if harness is None:
        return
    order: dict[Checkpoint, None] = {}
    for item in session.items:
        case, checkpoint = _param(item, "lora_case"), _param(item, "lora_checkpoint")
        if isinstance(case, EvalCase):
            order.setdefault(Checkpoint.of(case))
        elif isinstance(checkpoint, Checkpoint):
            order.setdefault(checkpoint)
    harness.stream_order = list(order)


def _param(item: pytest.Item, name: str) -> Any:
    return getattr(getattr(item, "callspec", None), "params", {}).get(name)


def _shard_key(item: pytest.Item) -> str | None:
    """The checkpoints that must be judged together (as the xdist scope), so a shard never splits them."""
    return _item_group(item.config, item)


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
        _thumbnail(item)
        _junit_properties(item)
        if allure_enabled(item.config):
            _attach_allure(item)


def _junit_properties(item: pytest.Item) -> None:
    """lora, step, prompt and seed of the case, and its scores, as `record_property` would add them: JUnit
    XML then carries them as <property> of the test case (CI dashboards show them beside the outcome)."""
    state = _state(item.config)
    case, checkpoint = _param(item, "lora_case"), _param(item, "lora_checkpoint")
    try:
        if isinstance(case, EvalCase):
            item.user_properties += [
                ("lora", case.loraname), ("step", case.step_label), ("prompt", case.prompt_id),
                ("seed", "" if case.seed is None else case.seed),
            ]
            if state._harness is not None:
                for metric, score in sorted(state._harness.known_scores(case).items()):
                    item.user_properties.append((f"score.{metric}", "" if score.value is None else score.value))
        elif isinstance(checkpoint, Checkpoint):
            item.user_properties += [("lora", checkpoint.loraname), ("step", step_label(checkpoint.training_step, checkpoint.step_kind))]
    except Exception as exc:  # properties must never change a test's outcome
        warnings.warn(f"lora-harness: could not add JUnit properties for {item.nodeid}: {exc}", stacklevel=1)


_USES_PIXELS = frozenset({"lora_scores", "lora_gate", "lora_image"})


def _thumbnail(item: pytest.Item) -> None:
    """The case's report thumbnail from the pixels its test used, packed in the background (`_THUMBNAILS`)."""
    case, state = _param(item, "lora_case"), _state(item.config)
    harness = state._harness
    if isinstance(case, EvalCase) and harness is not None and _USES_PIXELS & set(getattr(item, "fixturenames", ())):
        try:
            pixels = harness.image(case)  # here, not on the writer's thread: the harness is not thread-safe
            _thumbnail_writer(item.config, harness).submit(case.key, case.image_path, pixels)
        except Exception:  # never change a test's outcome: the report build makes what is missing
            pass


_THUMBNAILS = pytest.StashKey[Any]()


def _thumbnail_writer(config: pytest.Config, harness: Harness) -> Any:
    """This process's thumbnail writer: one pack per process, named like its score file (`report.thumb_pack`)."""
    writer = config.stash.get(_THUMBNAILS, None)
    if writer is None:
        from lora_harness.report.thumbs import ThumbnailWriter

        writer = config.stash[_THUMBNAILS] = ThumbnailWriter.for_run(
            harness.config.run_dir, harness.config.report.thumbnail_px,
            run_id=harness.store.run_id, worker=harness.store.worker,
        )
    return writer


def _attach_allure(item: pytest.Item) -> None:
    from lora_harness.report import allure as lora_allure

    state = _state(item.config)
    try:
        lora_allure.stable_parameters(item, ("lora_case", "lora_checkpoint"))
        case, checkpoint = _param(item, "lora_case"), _param(item, "lora_checkpoint")
        if isinstance(case, EvalCase):
            wants_scores = {"lora_scores", "lora_gate"} & set(getattr(item, "fixturenames", ()))
            lora_allure.attach_case(
                case, state.harness().score(case) if wants_scores else None,
                thumbnail_px=state.harness().config.report.thumbnail_px,
                full_image=bool(item.config.getoption("lora_allure_full_images", False)),
            )
        elif isinstance(checkpoint, Checkpoint):
            lora_allure.attach_checkpoint(checkpoint, state.harness().checkpoint_values(checkpoint))
    except Exception as exc:  # an attachment problem must never change a test's outcome
        warnings.warn(f"lora-harness: could not attach allure results for {item.nodeid}: {exc}", stacklevel=1)


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lora_harness(request: pytest.FixtureRequest) -> Harness:
    """The run: config, cases, judges and the score store of this process."""
    return _harness_or_fail(request.config)


@pytest.fixture(scope="session")
def lora_reference_audit(lora_harness: Harness) -> Any:
    """The reference audit of `[person] references` (lora_harness.analyses.reference_audit); `.assert_clean()` fails on outliers."""
    from lora_harness.analyses.reference_audit import AuditError, audit_config
    from lora_harness.judges.model_loading import ModelUnavailable

    from lora_harness.report.identity import write_audit

    try:
        audit = audit_config(lora_harness.config)
    except (AuditError, ModelUnavailable) as exc:
        pytest.skip(f"reference audit: {exc}")
    write_audit(lora_harness.config.run_dir, audit)  # the report's "Reference audit" section reads it
    return audit


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
    return Gate(lora_harness, lora_harness.policy)


@pytest.fixture
def lora_checkpoint_summary(request: pytest.FixtureRequest, lora_harness: Harness) -> CheckpointAggregates:
    """Mean, std, n and bootstrap CI per metric of a gated checkpoint (gate 'best': the chosen one)."""
    return lora_harness.aggregates(resolve(lora_harness, request.param))


@pytest.fixture
def lora_baseline_comparison(request: pytest.FixtureRequest, lora_harness: Harness) -> Comparison:
    """A gated checkpoint vs the `[baseline]` on one metric, paired by prompt and seed; `.check()` asserts."""
    if request.param is None or lora_harness.baseline is None:
        pytest.skip("no baseline configured: add [baseline] with `lora = \"<LoRA of this run>\"` or `run = \"<run folder or scores.csv>\"` to the eval config")
    target: MetricTarget = request.param
    checkpoint = resolve(lora_harness, target.target)
    reason = lora_harness.unavailable_reason(lora_harness.cases_of(checkpoint), target.metric)
    if reason is not None:  # e.g. a model not downloaded here: not a regression, and not a pass either
        return Unjudged(f"baseline comparison of {target.metric}", reason, lora_harness.policy)
    try:
        return lora_harness.baseline.compare(lora_harness, checkpoint, target.metric)
    except BaselineError as exc:
        message = f"lora-harness baseline: {exc}"
    pytest.fail(message, pytrace=False)


@pytest.fixture
def lora_pairwise_comparison(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """Candidate vs baseline images of the same prompt and seed, judged by a pair judge (`llm_pairwise`)
    in both orders; `.check()` asserts the candidate is not worse. Skips, saying why, when none can run."""
    if request.param is None:
        pytest.skip("no pairwise judge configured: add [[judges]] name = \"llm_pairwise\" with options baseline and candidate")
    from lora_harness.judges.model_loading import ModelUnavailable

    try:
        return lora_harness.compare(request.param)
    except ModelUnavailable as exc:
        reason = str(exc)
    return Unjudged(f"pairwise comparison {request.param.test_id}", reason, lora_harness.policy)


@pytest.fixture
def snapshot_lora(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """syrupy's `snapshot` with score tolerances: `assert snapshot_lora == lora_checkpoint_summary`.

    Without a `[snapshot]` section the test skips, saying how to enable it; with one and no stored snapshot
    it fails with the exact command that stores it. When a judge of the checkpoint cannot run here (a model
    not downloaded, no LLM endpoint) the evidence is incomplete: its metrics would read as "no value"
    against the stored means, and `--snapshot-update` would overwrite them with nothing.
    """
    config = lora_harness.config
    if config.snapshot is None:
        where = config.path or "the eval config"
        pytest.skip(
            f"no [snapshot] section in {where}: add `[snapshot]` with `tolerance = 0.02`, then store the gated "
            f"checkpoints' scores once with `pytest {shlex.quote(_plain_nodeid(request.node.nodeid))} --snapshot-update`"
        )
    callspec = getattr(request.node, "callspec", None)
    target = callspec.params.get("lora_checkpoint_summary") if callspec is not None else None
    if target is not None:
        reasons = lora_harness.unavailable(lora_harness.cases_of(resolve(lora_harness, target)))
        if reasons:
            return Unjudged("snapshot", "; ".join(reasons), lora_harness.policy)
    try:
        from lora_harness.verdicts.snapshots import extension_for
    except ImportError:
        pytest.fail("snapshot_lora needs syrupy: pip install 'lora-harness[report]'", pytrace=False)
    create = f"pytest {shlex.quote(_plain_nodeid(request.node.nodeid))} --snapshot-update"
    assertion = request.getfixturevalue("snapshot").use_extension(extension_for(config.snapshot, create))
    if (
        request.config.getoption("samples") and not request.config.getoption("update_snapshots", False)
        and not _snapshot_stored(assertion)
    ):  # a user's own folder (--lora-samples) has no snapshot yet: nothing to regress from
        pytest.skip(f"no stored snapshot for {request.node.name}: store one with `{create}` (then later runs compare with it)")
    return assertion


def _plain_nodeid(nodeid: str) -> str:
    """The node id a user can pass to pytest: without the `@group` suffix an explicit `--dist loadgroup` adds."""
    return re.sub(r"@[^\]/]*$", "", nodeid)


def _snapshot_stored(assertion: Any) -> bool:
    """Whether syrupy has a stored snapshot for this assertion (a missing one would fail the test)."""
    try:
        location = assertion.extension.get_location(test_location=assertion.test_location, index=assertion.index)
        return Path(location).is_file()
    except Exception:  # another syrupy layout: let the assertion decide
        return True


def _lora_check(request: pytest.FixtureRequest, harness: Harness) -> Any:
    """A LoRA check of one checkpoint (lora_harness.checks); `.check()` asserts with the usual gating."""
    fixture = request.fixturename
    if request.param is None:
        pytest.skip(lora_checks.SKIP_REASONS[fixture])
    memorization = request.getfixturevalue("_lora_memorization") if fixture == "lora_memorization_check" else None
    diversity = request.getfixturevalue("_lora_diversity") if fixture == "lora_diversity_check" else None
    return lora_checks.run_check(harness, fixture, request.param, memorization, diversity)


@pytest.fixture(scope="session")
def _lora_memorization(lora_harness: Harness) -> Any:
    from lora_harness.checks.memorization import MemorizationCheck

    return MemorizationCheck(lora_harness.config)  # training images and judges load once per worker


@pytest.fixture(scope="session")
def _lora_diversity(lora_harness: Harness) -> Any:
    from lora_harness.checks.diversity import DiversityCheck

    return DiversityCheck(lora_harness)  # the face backend loads once per worker


@pytest.fixture
def lora_diversity_check(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """A checkpoint's images as a set: diversity below `[diversity] min` fails ("all images look alike")."""
    return _lora_check(request, lora_harness)


@pytest.fixture
def lora_leakage_check(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """Prompts without the trigger, LoRA loaded: identity to the references must stay below `[leakage] max_identity`."""
    return _lora_check(request, lora_harness)


@pytest.fixture
def lora_strength_check(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """One prompt/seed at `[strength] scales`: metric(high) - metric(low) must reach `margin`."""
    return _lora_check(request, lora_harness)


@pytest.fixture
def lora_memorization_check(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """Each image vs the training images: near-copies above `[memorization] max_similarity` fail."""
    return _lora_check(request, lora_harness)


@pytest.fixture(scope="session")
def flux_pipeline(lora_harness: Harness) -> Any:
    """The worker's diffusers pipeline from `[pipeline]` (FLUX.1-dev by default), built once per xdist worker on
    its own device (gwN -> cuda:N); the same instance that generate sources use."""
    from lora_harness.generation.errors import GenerationError

    try:
        return lora_harness.generator().pipeline()
    except GenerationError as exc:
        message = f"lora-harness pipeline: {exc}"
    pytest.fail(message, pytrace=False)


@pytest.fixture
def lora(lora_harness: Harness, flux_pipeline: Any) -> Any:
    """LoRA switching on `flux_pipeline`: `lora.use(path, scale=0.8)`, `lora.use(None)` for the base model.
    The test starts on the bare base model (whatever generated cases applied before is removed) and adapters
    it leaves are removed afterwards. Files are validated against the model before loading."""
    manager = lora_harness.generator().loras
    manager.clear()
    yield manager
    manager.clear()


# --- end of session: CSV and summary ------------------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = _state(config)
    if _THUMBNAILS in config.stash:  # every thumbnail packed before a report (here or the controller's) reads them
        config.stash[_THUMBNAILS].close()
    if hasattr(config, "workerinput"):
        config.workeroutput[CONFIG_ERRORS_KEY] = list(state.config_errors)
        if state._harness is not None:
            config.workeroutput[RUN_DIR_KEY] = str(state._harness.config.run_dir)
            config.workeroutput[CHECKPOINTS_KEY] = [[c.loraname, c.training_step, c.step_kind] for c in state._harness.checkpoints]
            config.workeroutput[NOTES_KEY] = list(state._harness.notes)
        return
    if state._harness is not None:
        _add_unique(state.notes, state._harness.notes)
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
            config.stash.setdefault(_REPORT_ERRORS, []).append(f"{run_dir}: could not write CSV: {exc}")
        _write_run_report(config, run_dir, int(session.exitstatus))
        _write_summary_md(config, run_dir, int(session.exitstatus))


def _write_summary_md(config: pytest.Config, run_dir: Path | None, exit_status: int) -> None:
    """`--lora-summary-md`: the Markdown verdict for CI; a failure is reported, never raised."""
    target = config.getoption("lora_summary_md", None)
    if not target:
        return
    from lora_harness.report import summary_md

    state = _state(config)
    path = Path(target)
    try:
        verdict = summary_md.run_verdict(run_dir) if run_dir is not None else None
        report = config.stash.get(_REPORT_PATHS, {}).get(run_dir) if run_dir is not None else None
        title = run_dir.name if run_dir is not None else "configuration error"
        text = summary_md.render_summary(
            title, verdict, exit_status=exit_status,
            report_link=summary_md.report_link(report, path, config.getoption("lora_report_url", None)),
            errors=state.config_errors,
        )
        summary_md.write_summary(path, Redactor().text(text))
    except Exception as exc:  # never hide the test results
        config.stash.setdefault(_REPORT_ERRORS, []).append(f"could not write {path}: {type(exc).__name__}: {exc}")


_REPORT_ERRORS = pytest.StashKey[list]()
_REPORT_PATHS = pytest.StashKey[dict]()


def _write_run_report(config: pytest.Config, run_dir: Path, exit_status: int) -> None:
    """run.json and report.html; a failure is reported, never raised (the scores are safe already)."""
    state = _state(config)
    try:
        from lora_harness.report.build import finish_session

        files = finish_session(
            run_dir, state.eval_config(), run_id=state.run_id, started_at=state.started_at,
            shard=str(_shard(config)) if config.getoption("shard") else None, exit_status=exit_status,
            checkpoints=state.checkpoints | set(state._harness.checkpoints if state._harness else ()),
            verdicts=state.verdicts,
        )
    except ImportError as exc:
        message = f"report.html skipped: {exc.name or exc} is not installed; pip install 'lora-harness[report]'"
    except Exception as exc:  # a report bug must not hide the test results
        message = f"could not write report.html ({type(exc).__name__}: {exc}); rebuild it: lora-harness report {run_dir}"
    else:
        if files is not None:
            config.stash.setdefault(_REPORT_PATHS, {})[run_dir] = files.html
        return
    config.stash.setdefault(_REPORT_ERRORS, []).append(f"{run_dir}: {message}")


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
    state = _state(config)
    if hasattr(config, "workerinput"):
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
        view = terminal_view(rows, eval_config, state.checkpoints | set(state._harness.checkpoints if state._harness else ()))
        view.test_verdicts = verdicts_of(state.verdicts)
        tr.write_line(format_table(view))
        tr.write_line(verdict_line(view))
        for line in view.best_lines:
            tr.write_line(line)
        for line in llm_cost_lines(rows):  # tokens and cost of LLM judges (each API call counted once)
            tr.write_line(line)
        tr.write_line(f"scores: {run_dir / 'scores.csv'} (wide), {run_dir / 'scores_long.csv'} (one row per score)")
        if run_dir in config.stash.get(_REPORT_PATHS, {}):
            tr.write_line(f"report: {config.stash[_REPORT_PATHS][run_dir]}")
    for error in config.stash.get(_REPORT_ERRORS, []):
        tr.write_line(f"lora-harness: {error}", red=True)
