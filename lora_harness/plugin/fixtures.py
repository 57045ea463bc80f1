"""The fixtures eval tests use: the run (`lora_harness`), a case's image, scores and gate, a checkpoint's
summary, baseline and pairwise comparisons, the score snapshot, the reference audit, and the pipeline with
LoRA switching. Each is a thin call into the Harness; LoRA checks are in check_fixtures.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Callable

import pytest

from lora_harness.core.cases import EvalCase
from lora_harness.judges import Score
from lora_harness.plugin.state import harness_or_fail
from lora_harness.run.harness import Harness
from lora_harness.run.regression_targets import MetricTarget, resolve
from lora_harness.verdicts.baseline import BaselineError, Comparison
from lora_harness.verdicts.enforce import Gate, Unjudged
from lora_harness.verdicts.stats import CheckpointAggregates


@pytest.fixture(scope="session")
def lora_harness(request: pytest.FixtureRequest) -> Harness:
    """The run: config, cases, judges and the score store of this process."""
    return harness_or_fail(request.config)


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


