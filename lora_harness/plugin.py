"""pytest hooks and fixtures of lora-harness; all logic lives in plain modules (harness, gates, report).

Registered through the `pytest11` entry point, so it is active in every pytest run of an environment that
installs the package, and stays inert until a test asks for `lora_case` or `lora_checkpoint`.
"""

from __future__ import annotations

import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from lora_harness.baseline import BaselineError, Comparison
from lora_harness.best_checkpoint import choose_best, means_from_rows
from lora_harness.cases import Checkpoint, EvalCase
from lora_harness.checks import targets as lora_checks
from lora_harness.checks.cases import CHECK_ROLES
from lora_harness.training_hook import parse_set_option
from lora_harness.config import ConfigError, EvalConfig, load_config
from lora_harness.gate_check import Gate
from lora_harness.gates import gated_checkpoints
from lora_harness.harness import Harness
from lora_harness.judges import JudgeContext, Score
from lora_harness.judges.llm.cost import summary_lines as llm_cost_lines
from lora_harness.report.csv import step_label, write_score_csvs
from lora_harness.sources.generate import GenerateSource, baseline_names
from lora_harness.sources.samples import SampleFolderError
from lora_harness.stats import CheckpointAggregates
from lora_harness.targets import MetricTarget, comparison_targets, gate_targets, group_of, resolve, xdist_groups
from lora_harness.progress import PhaseProgress
from lora_harness.prompts import PromptFileError
from lora_harness.report.manifest import now_iso
from lora_harness import sharding
from lora_harness.report.allure import allure_enabled
from lora_harness.sharding import Shard, ShardError
from lora_harness.store import latest_rows, read_rows
from lora_harness.summary import format_table, summarize

RUN_DIR_KEY = "lora_harness_run_dir"
RUN_ID_KEY = "lora_harness_run_id"
LOADGROUP_KEY = "lora_harness_loadgroup"
USER_ERRORS = (ConfigError, SampleFolderError, PromptFileError, ValueError)
PROGRESS_KEY = "lora_harness_progress"
CHECKPOINTS_KEY = "lora_harness_checkpoints"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lora-harness", "LoRA evaluation (lora-harness)")
    group.addoption("--lora-config", metavar="PATH", help="eval config TOML (default: ini lora_config, evals/lora_eval.toml)")
    group.addoption("--report-dir", metavar="DIR", help="override run.report_dir: where reports/<run>/ is written")
    group.addoption("--run-name", metavar="NAME", help="override run.name")
    group.addoption("--gate", metavar="SPEC", help="override gate.checkpoints: latest, all, best, or steps such as 800,1000")
    group.addoption(
        "--samples", metavar="DIR", action="append", default=None,
        help="evaluate this kohya sample folder instead of the config's sources (repeatable)",
    )
    group.addoption(
        "--shard", metavar="I/N",
        help="evaluate only shard I of N (split by checkpoint, the same on every machine); merge the run folders "
        "afterwards with `lora-harness merge`",
    )
    group.addoption(
        "--lora-progress", metavar="SECONDS", default="10",
        help="a judging progress line (checkpoints done, ETA) at most every SECONDS; 0: every checkpoint; off: none",
    )
    group.addoption(
        "--lora-set", metavar="KEY=JSON", action="append", default=None,
        help="override a config key with a JSON value, e.g. sources='[...]' (repeatable; used by `lora-harness eval-checkpoint`)",
    )
    parser.addini("lora_config", "default eval config path, relative to the rootdir", default="evals/lora_eval.toml")


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Any:
    """Keep each checkpoint's images and its aggregate test on one xdist worker, in collection order.

    A wrapper, so this runs before xdist's own tryfirst hook turns `-n N` into `--dist load`.
    """
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", None) == "no":
        config.option.dist = "loadgroup"
    return (yield)


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
        # xdist re-parses the command line on workers, so the controller's `--dist` change above is lost
        # there; without this the workers would not tag items with their xdist_group.
        if workerinput.get(LOADGROUP_KEY):
            config.option.loadgroup = True
    else:
        run_id, worker = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", "main"
    worker_count = int(workerinput.get("workercount", 1)) if workerinput is not None else 1
    config.stash[_STATE] = PluginState(config, run_id, worker, worker_count)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(config.stash[_STATE]), "lora_harness_xdist")
    _check_options(config)
    config.pluginmanager.register(_ShardAndProgress(config), "lora_harness_shard_progress")


def _check_options(config: pytest.Config) -> None:
    """Bad --shard / --lora-progress values stop the run before collection, saying what is expected."""
    if config.getoption("shard", None):
        try:
            Shard.parse(config.getoption("shard"))
        except ShardError as exc:
            raise pytest.UsageError(str(exc)) from None
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
        node.workerinput[LOADGROUP_KEY] = self.state.pytest_config.option.dist == "loadgroup"

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        run_dir = getattr(node, "workeroutput", {}).get(RUN_DIR_KEY)
        if run_dir:
            self.state.run_dirs.add(Path(run_dir))
        for name, step, kind in getattr(node, "workeroutput", {}).get(CHECKPOINTS_KEY, ()):
            self.state.checkpoints.add(Checkpoint(name, step, kind))


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if not any(name in names for name in _PARAMETRIZED):
        return
    harness = _harness_or_fail(metafunc.config)
    if "lora_case" in names:
        metafunc.parametrize("lora_case", harness.cases, ids=[case.test_id for case in harness.cases])
    if "lora_checkpoint" in names:
        metafunc.parametrize("lora_checkpoint", harness.checkpoints, ids=[c.test_id for c in harness.checkpoints])
    if "lora_checkpoint_summary" in names:
        gated = gate_targets(harness)
        metafunc.parametrize("lora_checkpoint_summary", gated, ids=[t.test_id for t in gated], indirect=True)
    if "lora_baseline_comparison" in names:
        comparisons = comparison_targets(harness)  # none configured: one case that skips, saying why
        ids = [t.test_id for t in comparisons] or ["no-baseline"]
        metafunc.parametrize("lora_baseline_comparison", comparisons or [None], ids=ids, indirect=True)
    if "lora_pairwise_comparison" in names:
        pairwise = _user_errors_fail(harness.pairwise_comparisons)  # none configured: one case that skips
        ids = [c.test_id for c in pairwise] or ["no-pairwise-judge"]
        metafunc.parametrize("lora_pairwise_comparison", pairwise or [None], ids=ids, indirect=True)
    for fixture in lora_checks.FIXTURES:  # leakage / strength / memorization (lora_harness.checks)
        if fixture in names:
            values, ids = lora_checks.params(harness, fixture)
            metafunc.parametrize(fixture, values, ids=ids, indirect=True)


def _user_errors_fail(function: Callable[[], Any]) -> Any:
    try:
        return function()
    except USER_ERRORS as exc:
        message = f"lora-harness: {exc}"
    pytest.fail(message, pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """One xdist group per set of checkpoints a test needs together (see lora_harness.targets)."""
    groups: dict[Checkpoint, str] | None = None
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        target = next((params[name] for name in _PARAMETRIZED if params.get(name) is not None), None)
        if isinstance(target, EvalCase):
            target = Checkpoint.of(target)
        if target is None:
            continue
        harness = _state(config).harness()
        groups = groups if groups is not None else xdist_groups(harness)
        group = group_of(target, groups, harness.checkpoints)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


class _ShardAndProgress:
    """`--shard` selection and the controller's judging progress line (registered in pytest_configure)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """After -k/-m: keep this machine's shard, and tag image tests for the progress line."""
        if config.getoption("shard"):
            try:
                shard = Shard.parse(config.getoption("shard"))
            except ShardError as exc:
                raise pytest.UsageError(str(exc)) from None
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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Controller side (xdist forwards the workers' reports): a line per finished checkpoint, throttled."""
        if hasattr(self.config, "workerinput") or str(self.config.getoption("lora_progress")).lower() == "off":
            return
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        info = dict(report.user_properties).get(PROGRESS_KEY)
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
    """The xdist group (checkpoints that must be judged together), so a shard never splits one."""
    marker = item.get_closest_marker("xdist_group")
    return str(marker.args[0]) if marker and marker.args else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """After an image's test: its report thumbnail while the pixels are at hand; with `--alluredir`, its
    image, scores and justifications as attachments, and labels."""
    try:
        return (yield)
    finally:
        _thumbnail(item)
        if allure_enabled(item.config):
            _attach_allure(item)


_USES_PIXELS = frozenset({"lora_scores", "lora_gate", "lora_image"})


def _thumbnail(item: pytest.Item) -> None:
    from lora_harness.report.thumbs import thumbnail_while_judging

    case, harness = _param(item, "lora_case"), _state(item.config)._harness
    if isinstance(case, EvalCase) and harness is not None and _USES_PIXELS & set(getattr(item, "fixturenames", ())):
        try:
            thumbnail_while_judging(
                case.key, case.image_path, lambda: harness.image(case), harness.config.run_dir,
                harness.config.report.thumbnail_px,
            )
        except Exception:  # never change a test's outcome: the report build makes what is missing
            pass


def _attach_allure(item: pytest.Item) -> None:
    from lora_harness.report import allure as lora_allure

    state = _state(item.config)
    try:
        case, checkpoint = _param(item, "lora_case"), _param(item, "lora_checkpoint")
        if isinstance(case, EvalCase):
            wants_scores = {"lora_scores", "lora_gate"} & set(getattr(item, "fixturenames", ()))
            lora_allure.attach_case(case, state.harness().score(case) if wants_scores else None)
        elif isinstance(checkpoint, Checkpoint):
            lora_allure.attach_checkpoint(checkpoint, state.harness().checkpoint_findings(checkpoint)[1])
    except Exception as exc:  # an attachment problem must never change a test's outcome
        warnings.warn(f"lora-harness: could not attach allure results for {item.nodeid}: {exc}", stacklevel=1)


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
        pytest.skip(f"not compared: {reason}")
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
    from lora_harness.models import ModelUnavailable

    try:
        return lora_harness.compare(request.param)
    except ModelUnavailable as exc:
        reason = f"not judged: {exc}"
    pytest.skip(reason)


@pytest.fixture
def snapshot_lora(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """syrupy's `snapshot` with score tolerances: `assert snapshot_lora == lora_checkpoint_summary`.

    When a judge of the checkpoint cannot run here (a model not downloaded, no LLM endpoint) the test is
    skipped with the reason: its metrics would read as "no value" against the stored means, and
    `--snapshot-update` would overwrite them with nothing.
    """
    callspec = getattr(request.node, "callspec", None)
    target = callspec.params.get("lora_checkpoint_summary") if callspec is not None else None
    if target is not None:
        reasons = lora_harness.unavailable(lora_harness.cases_of(resolve(lora_harness, target)))
        if reasons:
            pytest.skip("snapshot not compared: " + "; ".join(reasons))
    try:
        from lora_harness.snapshots import extension_for
    except ImportError:
        pytest.fail("snapshot_lora needs syrupy: pip install 'lora-harness[report]'", pytrace=False)
    return request.getfixturevalue("snapshot").use_extension(extension_for(lora_harness.config.snapshot))


def _lora_check(request: pytest.FixtureRequest, harness: Harness) -> Any:
    """A LoRA check of one checkpoint (lora_harness.checks); `.check()` asserts with the usual gating."""
    fixture = request.fixturename
    if request.param is None:
        pytest.skip(lora_checks.SKIP_REASONS[fixture])
    memorization = request.getfixturevalue("_lora_memorization") if fixture == "lora_memorization_check" else None
    return lora_checks.run_check(harness, fixture, request.param, memorization)


@pytest.fixture(scope="session")
def _lora_memorization(lora_harness: Harness) -> Any:
    from lora_harness.checks.memorization import MemorizationCheck

    return MemorizationCheck(lora_harness.config)  # training images and judges load once per worker


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
    if hasattr(config, "workerinput"):
        if state._harness is not None:
            config.workeroutput[RUN_DIR_KEY] = str(state._harness.config.run_dir)
            config.workeroutput[CHECKPOINTS_KEY] = [[c.loraname, c.training_step, c.step_kind] for c in state._harness.checkpoints]
        return
    for run_dir in sorted(state.run_dirs):
        try:
            write_score_csvs(latest_rows(read_rows(run_dir)), run_dir)
        except OSError as exc:  # the scores themselves are already safe in scores/*.jsonl
            config.stash.setdefault(_REPORT_ERRORS, []).append(f"{run_dir}: could not write CSV: {exc}")
        _write_run_report(config, run_dir, int(session.exitstatus))


_REPORT_ERRORS = pytest.StashKey[list]()
_REPORT_PATHS = pytest.StashKey[dict]()


def _write_run_report(config: pytest.Config, run_dir: Path, exit_status: int) -> None:
    """run.json and report.html; a failure is reported, never raised (the scores are safe already)."""
    state = _state(config)
    try:
        from lora_harness.report.build import finish_session

        files = finish_session(
            run_dir, state.eval_config(), run_id=state.run_id, started_at=state.started_at,
            shard=config.getoption("shard"), exit_status=exit_status,
            checkpoints=state.checkpoints | set(state._harness.checkpoints if state._harness else ()),
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


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = _state(config)
    if hasattr(config, "workerinput") or not state.run_dirs:
        return
    eval_config = state.eval_config()
    tr = terminalreporter
    for run_dir in sorted(state.run_dirs):
        rows = list(read_rows(run_dir, run_id=state.run_id))
        tr.write_sep("=", f"lora-harness: {eval_config.run.name} (run {state.run_id})")
        # Every collected checkpoint, not just this shard's rows: "latest" is the latest of the whole sweep.
        # (Leakage / strength images have LoRA names of their own, and no thresholds: never gated.)
        checkpoints = {Checkpoint(r.loraname, r.training_step, r.step_kind) for r in rows if r.variant not in CHECK_ROLES}  # type: ignore[arg-type]
        checkpoints |= state.checkpoints | set(state._harness.checkpoints if state._harness else ())
        spec = eval_config.gate.checkpoints
        choices = choose_best(means_from_rows(latest_rows(rows)), eval_config.best) if spec == "best" or eval_config.best else {}
        best = {name: choice.best.checkpoint for name, choice in choices.items() if choice.best is not None}
        gated = {
            (c.loraname, step_label(c.training_step, c.step_kind))
            for c in gated_checkpoints(checkpoints, spec, best=best, baselines=baseline_names(eval_config.sources))
        }
        tr.write_line(format_table(summarize(latest_rows(rows), eval_config.thresholds, eval_config.stats), gated))
        for choice in choices.values():
            tr.write_line(choice.describe())
        for line in llm_cost_lines(rows):  # tokens and cost of LLM judges (each API call counted once)
            tr.write_line(line)
        tr.write_line(f"scores: {run_dir / 'scores.csv'} (wide), {run_dir / 'scores_long.csv'} (one row per score)")
        if run_dir in config.stash.get(_REPORT_PATHS, {}):
            tr.write_line(f"report: {config.stash[_REPORT_PATHS][run_dir]}")
    for error in config.stash.get(_REPORT_ERRORS, []):
        tr.write_line(f"lora-harness: {error}", red=True)
