"""What a report shows, computed from score rows: cases with verdicts, the checkpoint table, failing cases.

Plain data, no HTML: the template only lays it out, and tests assert on these records directly. Verdicts use
the same rules as the tests (`verdicts.thresholds`), so the report and the pytest outcome never disagree: `fail` is a
gated checkpoint under a minimum or over a maximum, `xfail` an ungated one, `error` a score a judge could not compute.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from lora_harness.verdicts.best_checkpoint import choose_best, means_from_rows, values_from_rows
from lora_harness.checks.memorization import memorization_ceilings
from lora_harness.core.cases import CHECK_ROLES, Checkpoint, case_order, checkpoint_order, safe_id
from lora_harness.core.config import BestConfig, EvalConfig, GateSpec, StatsConfig, Threshold
from lora_harness.verdicts.thresholds import checkpoint_verdict, gated_checkpoints, image_breach, image_verdict
from lora_harness.verdicts.outcome import Verdict, run_badge
from lora_harness.verdicts.sequential import decision_stats
from lora_harness.judges.base import Score
from lora_harness.judges.model_loading import UNAVAILABLE_KEY
from lora_harness.report.csv import metric_order, step_label
from lora_harness.report.manifest import RunManifest
from lora_harness.report.training_images import training_image_of
from lora_harness.core.redact import Redactor
from lora_harness.sources import baseline_names
from lora_harness.verdicts.stats import mean_ci
from lora_harness.run.store import ScoreRow

STATUS_ORDER = {"error": 0, "fail": 1, "incomplete": 2, "inconclusive": 3, "xfail": 4, "skipped": 5, "pass": 6}
# Keys of a score's raw values that hold a judge's reasons (the study's LLM answered `textual_justification`).
JUSTIFICATION_KEYS = ("justification", "textual_justification", "reason", "reasoning", "explanation", "rationale")
COST_KEYS = ("cost_usd", "cost")
FAILING = ("error", "fail", "incomplete", "inconclusive", "xfail")
MODEL_KEYS = ("model",)


@dataclass(frozen=True)
class Rules:
    """What verdicts are judged against: the config's thresholds, gate, best-checkpoint objective, CI settings."""

    thresholds: Mapping[str, Threshold] = field(default_factory=dict)
    gate: GateSpec = "latest"
    best: BestConfig | None = None
    stats: StatsConfig = StatsConfig()
    gated_keys: frozenset[str] | None = None  # recorded by the run (all checkpoints it collected); else derived
    baselines: frozenset[str] = frozenset()  # LoRA names of reference images: never gated
    ceilings: Mapping[str, float] = field(default_factory=dict)  # metric -> maximum (memorization near-copies)

    @classmethod
    def of(cls, config: EvalConfig) -> "Rules":
        return cls(dict(config.thresholds), config.gate.checkpoints, config.best, decision_stats(config.gate, config.stats),
                   baselines=baseline_names(config.sources), ceilings=memorization_ceilings(config))

    @classmethod
    def of_manifest(cls, manifest: "RunManifest") -> "Rules":
        gated = manifest.gated
        keys = None if gated is None or manifest.gate == "best" else frozenset(gated)
        return cls(dict(manifest.thresholds), manifest.gate, manifest.best, manifest.stats, keys,
                   ceilings=dict(manifest.ceilings))


@dataclass(frozen=True)
class MetricCell:
    """One metric of one case, as shown in the case's details."""

    metric: str
    value: float | None
    error: str | None
    judge: str
    judge_version: str
    minimum: float | None
    below: bool  # out of bounds: under the per-image minimum or over the per-image maximum (or a ceiling)
    justification: str | None
    raw_json: str
    unavailable: bool = False  # the judge could not run here (model or package absent)
    training_image: str | None = None  # memorization scores: the most similar training image's path
    maximum: float | None = None  # the per-image maximum (`image_max`)


@dataclass
class CaseView:
    key: str
    dom_id: str
    loraname: str
    variant: str
    checkpoint_key: str
    step: str
    training_step: int
    step_kind: str
    prompt_id: str
    prompt: str
    seed: int | None
    timestamp: str | None
    image: str
    gated: bool
    cells: dict[str, MetricCell]
    status: str
    findings: list[str]
    verdict: Verdict | None = None


@dataclass(frozen=True)
class TableCell:
    mean: float | None
    low: float | None
    high: float | None
    n: int
    errors: int
    failures: int  # images outside the per-image bounds (under the minimum, over the maximum)
    ok: bool | None  # False: the checkpoint test fails this metric's minimum or maximum
    colour: str  # CSS background colour from the metric's colour scale
    undecided: bool = False  # the interval straddles the minimum or maximum (inconclusive)


@dataclass
class CheckpointView:
    key: str
    dom_id: str
    loraname: str
    step: str
    training_step: int
    step_kind: str
    gated: bool
    status: str
    findings: list[str]
    cells: dict[str, TableCell]
    cases: list[CaseView] = field(default_factory=list)
    verdict: Verdict | None = None


@dataclass
class LoraGrid:
    """One LoRA's image grid: rows = checkpoints, columns = prompts, each cell one image per seed."""

    loraname: str
    prompts: list[tuple[str, str]]  # (prompt_id, prompt text)
    rows: list[tuple[CheckpointView, list[list[CaseView]]]]


@dataclass
class ReportView:
    metrics: list[str]
    cases: list[CaseView]
    checkpoints: list[CheckpointView]
    grids: list[LoraGrid]
    failing_cases: list[CaseView]
    failing_checkpoints: list[CheckpointView]
    best_lines: list[str]  # the best-checkpoint choice per LoRA, when the config asks for one
    case_counts: dict[str, int]
    checkpoint_counts: dict[str, int]
    thresholds: dict[str, Threshold]
    judges: dict[str, list[str]]
    models: list[str]
    cost: "Cost"
    has_thresholds: bool

    test_verdicts: list[Verdict] = field(default_factory=list)  # recorded by gate tests (run.json)

    def verdicts(self) -> list[Verdict]:
        """Every case and checkpoint verdict derived from the scores."""
        return [v.verdict for v in (*self.cases, *self.checkpoints) if v.verdict is not None]

    @property
    def badge(self) -> str:
        """The run's word (`outcome.run_badge`): score verdicts and the ones gate tests recorded."""
        return run_badge([*self.verdicts(), *self.test_verdicts], has_rules=self.has_thresholds or bool(self.test_verdicts))


def build_view(rows: Sequence[ScoreRow], rules: Rules | None = None, *, redactor: Redactor | None = None) -> ReportView:
    """Group newest rows into cases and checkpoints and judge them against the rules."""
    rules = rules or Rules()
    thresholds = dict(rules.thresholds)
    redactor = redactor or Redactor()
    by_case: dict[str, list[ScoreRow]] = defaultdict(list)
    for row in rows:
        by_case[row.case_key].append(row)
    metrics = metric_order({row.metric for row in rows})
    checkpoint_of = {key: Checkpoint(g[0].loraname, g[0].training_step, g[0].step_kind) for key, g in by_case.items()}  # type: ignore[arg-type]
    choices = (
        choose_best(means_from_rows(rows), rules.best, values=values_from_rows(rows), resamples=rules.stats.resamples, seed=rules.stats.seed)
        if rules.gate == "best" or rules.best else {}
    )
    best = {name: choice.best.checkpoint for name, choice in choices.items() if choice.best is not None}
    if rules.gated_keys is not None:  # a shard's rows alone cannot tell which checkpoint is the latest
        gated = {c for c in checkpoint_of.values() if c.key in rules.gated_keys}
    else:
        gated = gated_checkpoints(set(checkpoint_of.values()), rules.gate, best=best, baselines=rules.baselines)

    cases = [
        _case_view(group, checkpoint_of[key] in gated, _rules_of(group[0], thresholds), rules.ceilings, redactor)
        for key, group in by_case.items()
    ]
    cases.sort(key=lambda c: (*case_order(c), c.key))
    _unique_dom_ids(cases)

    by_checkpoint: dict[str, list[CaseView]] = defaultdict(list)
    for case in cases:
        by_checkpoint[case.checkpoint_key].append(case)
    scales = _colour_scales(rows, metrics)
    checkpoints = [
        _checkpoint_view(group, metrics, thresholds if group[0].variant not in CHECK_ROLES else {}, scales, rules.stats)
        for group in by_checkpoint.values()
    ]
    checkpoints.sort(key=checkpoint_order)

    failing_cases = sorted(
        (c for c in cases if c.status in FAILING), key=lambda c: (STATUS_ORDER[c.status], not c.gated)
    )
    failing_checkpoints = sorted(
        (c for c in checkpoints if c.status in FAILING), key=lambda c: (STATUS_ORDER[c.status], not c.gated)
    )
    judges: dict[str, set[str]] = defaultdict(set)
    models: set[str] = set()
    for row in rows:
        judges[row.judge].add(row.judge_version)
        for key in MODEL_KEYS:
            if isinstance(row.raw.get(key), str):
                models.add(redactor.text(row.raw[key]))
    return ReportView(
        metrics=metrics,
        cases=cases,
        checkpoints=checkpoints,
        grids=_grids(checkpoints),
        failing_cases=failing_cases,
        failing_checkpoints=failing_checkpoints,
        best_lines=[redactor.text(choice.describe()) for choice in choices.values()],
        case_counts=_counts(c.status for c in cases),
        checkpoint_counts=_counts(c.status for c in checkpoints),
        thresholds=thresholds,
        judges={k: sorted(v) for k, v in sorted(judges.items())},
        models=sorted(models),
        cost=cost_of(rows),
        has_thresholds=any(t.has_bounds for t in thresholds.values()),
    )


@dataclass
class Cost:
    """What the judges' API calls cost, as they reported it (None: no judge reported any cost)."""

    usd: float | None = None
    calls: int = 0
    cached: int = 0
    unpriced: int = 0  # calls without a price (the judge was not given one)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def cost_of(rows: Iterable[ScoreRow]) -> Cost:
    """Sum of reported costs. LLM judges list their API calls in `raw["calls"]`; one call can answer several
    metrics, so calls count once by id. Other judges may report `raw["cost_usd"]` (or `cost`) per score."""
    cost = Cost()
    seen: set[object] = set()
    for row in rows:
        calls = row.raw.get("calls")
        if isinstance(calls, list):
            for index, call in enumerate(calls):
                if not isinstance(call, Mapping):
                    continue
                key = call.get("id") or (row.case_key, row.metric, index)
                if key in seen:
                    continue
                seen.add(key)
                if call.get("cached"):
                    cost.cached += 1
                    continue
                cost.calls += 1
                cost.prompt_tokens += int(call.get("prompt_tokens") or 0)
                cost.completion_tokens += int(call.get("completion_tokens") or 0)
                value = call.get("cost_usd")
                if isinstance(value, (int, float)) and math.isfinite(value):
                    cost.usd = (cost.usd or 0.0) + float(value)
                else:
                    cost.unpriced += 1
            continue
        for key in COST_KEYS:
            value = row.raw.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                cost.usd = (cost.usd or 0.0) + float(value)
                break
    return cost


def _counts(statuses: Iterable[str]) -> dict[str, int]:
    counts = {status: 0 for status in STATUS_ORDER}
    for status in statuses:
        counts[status] += 1
    return counts


def justification_of(raw: Mapping[str, Any]) -> str | None:
    for key in JUSTIFICATION_KEYS:
        value = raw.get(key)
        if isinstance(value, str) and value.strip():
            return value
    for key, value in raw.items():  # e.g. `person_justification`
        if "justification" in str(key).lower() and isinstance(value, str) and value.strip():
            return value
    return None


def _case_view(
    group: list[ScoreRow], gated: bool, thresholds: dict[str, Threshold], ceilings: Mapping[str, float], redactor: Redactor
) -> CaseView:
    first = group[0]
    scores = {row.metric: Score(row.metric, row.value, row.raw, row.error) for row in group}
    unavailable = _unavailable(group)
    verdict, findings = image_verdict(scores, thresholds, gated=gated, ceilings=ceilings, unavailable=unavailable)
    below = {f.metric for f in findings if f.outside}  # out of bounds: under a minimum or over a ceiling
    cells = {}
    for row in group:
        threshold = thresholds.get(row.metric, Threshold())
        raw = redactor.value(row.raw)
        justification = justification_of(raw)
        cells[row.metric] = MetricCell(
            metric=row.metric,
            value=row.value,
            error=None if row.error is None else redactor.text(row.error),
            judge=row.judge,
            judge_version=row.judge_version,
            minimum=threshold.image,
            maximum=threshold.image_max,
            below=row.metric in below,
            justification=justification,
            unavailable=row.metric in unavailable,
            training_image=training_image_of(row.metric, raw),
            # compact (no indent): json's C encoder, ~5x faster for 10,000 scores; <pre> wraps it
            raw_json=json.dumps(raw, sort_keys=True, default=str, ensure_ascii=False) if raw else "",
        )
    return CaseView(
        key=first.case_key,
        dom_id="c-" + safe_id(first.case_key),
        loraname=first.loraname,
        variant=first.variant or first.loraname,
        checkpoint_key=first.checkpoint_key,
        step=step_label(first.training_step, first.step_kind),
        training_step=first.training_step,
        step_kind=first.step_kind,
        prompt_id=first.prompt_id,
        prompt=redactor.text(first.prompt),
        seed=first.seed,
        timestamp=first.timestamp,
        image=first.image,
        gated=gated,
        cells=cells,
        status=verdict.shown,
        findings=[redactor.text(f.describe()) for f in findings]
        + [redactor.text(f"{metric}: not judged ({reason})") for metric, reason in sorted(unavailable.items()) if metric not in {f.metric for f in findings}],
        verdict=verdict,
    )


def _rules_of(row: ScoreRow, thresholds: dict[str, Threshold]) -> dict[str, Threshold]:
    """Leakage / strength images (lora_harness.checks) are judged by their own tests, not trigger-prompt minimums."""
    return {} if row.variant in CHECK_ROLES else thresholds


def _unavailable(rows: Iterable[ScoreRow]) -> dict[str, str]:
    """Metrics a judge could not compute here (model or package absent): the test skips, the report says why."""
    return {
        row.metric: str(row.raw[UNAVAILABLE_KEY])
        for row in rows
        if row.value is None and row.error is None and UNAVAILABLE_KEY in row.raw
    }


def _unique_dom_ids(cases: list[CaseView]) -> None:
    """safe_id folds odd characters together; HTML ids (and the click-to-open link) must stay unique."""
    seen: set[str] = set()
    for case in cases:
        candidate, n = case.dom_id, 1
        while candidate in seen:
            n += 1
            candidate = f"{case.dom_id}-{n}"
        case.dom_id = candidate
        seen.add(candidate)


def _checkpoint_view(
    cases: list[CaseView],
    metrics: list[str],
    thresholds: dict[str, Threshold],
    scales: dict[str, tuple[float, float]],
    stats: StatsConfig,
) -> CheckpointView:
    first = cases[0]
    values: dict[str, list[float | None]] = defaultdict(list)
    for case in cases:
        for metric, cell in case.cells.items():
            values[metric].append(cell.value)
    unavailable = {m: "the judge could not run here" for case in cases for m, cell in case.cells.items() if cell.unavailable}
    verdict, findings = checkpoint_verdict(values, thresholds, stats, gated=first.gated, unavailable=unavailable)
    failing = {f.metric for f in findings if f.decision == "fail"}
    undecided = {f.metric for f in findings if f.decision == "inconclusive"}
    cells = {}
    for metric in metrics:
        if metric not in values:
            continue
        present = [v for v in values[metric] if v is not None and not math.isnan(v)]
        threshold = thresholds.get(metric, Threshold())
        ci = mean_ci(present, confidence=stats.confidence, sd_floor=stats.sd_floor) if present else None
        mean = None if ci is None else ci.mean
        cells[metric] = TableCell(
            mean=mean,
            low=None if ci is None else ci.low,
            high=None if ci is None else ci.high,
            n=len(present),
            # like the terminal table: a judge error counts, a value missing for a reason (no face) does not
            errors=sum(1 for case in cases if metric in case.cells and case.cells[metric].error is not None),
            failures=sum(1 for v in present if image_breach(v, threshold) is not None),
            ok=None if not threshold.has_checkpoint_bounds or mean is None else metric not in failing,
            undecided=metric in undecided,
            colour=_colour(mean, scales.get(metric)),
        )
    return CheckpointView(
        key=first.checkpoint_key,
        dom_id="k-" + safe_id(first.checkpoint_key),
        loraname=first.loraname,
        step=first.step,
        training_step=first.training_step,
        step_kind=first.step_kind,
        gated=first.gated,
        status=verdict.shown,  # as test_checkpoint decides
        findings=[f.describe() for f in findings],
        cells=cells,
        cases=cases,
        verdict=verdict,
    )


def _colour_scales(rows: Sequence[ScoreRow], metrics: list[str]) -> dict[str, tuple[float, float]]:
    """Scores in [0, 1] share that absolute scale; other metrics (CLIP score) span their observed range."""
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for row in rows:
        if row.value is None or math.isnan(row.value):
            continue
        lows[row.metric] = min(lows.get(row.metric, row.value), row.value)
        highs[row.metric] = max(highs.get(row.metric, row.value), row.value)
    scales = {}
    for metric in metrics:
        if metric not in lows:
            continue
        low, high = lows[metric], highs[metric]
        scales[metric] = (0.0, 1.0) if low >= 0.0 and high <= 1.0 else (low, high)
    return scales


# Red -> amber -> green, light enough for black text (ColorBrewer RdYlGn, lightened).
_STOPS = ((0.0, (244, 165, 130)), (0.5, (255, 240, 170)), (1.0, (166, 219, 160)))


def _colour(value: float | None, scale: tuple[float, float] | None) -> str:
    if value is None or scale is None or math.isnan(value):
        return "#eeeeee"
    low, high = scale
    t = 0.5 if high <= low else min(1.0, max(0.0, (value - low) / (high - low)))
    for (t0, c0), (t1, c1) in zip(_STOPS, _STOPS[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            rgb = tuple(round(a + (b - a) * f) for a, b in zip(c0, c1))
            return "#%02x%02x%02x" % rgb
    return "#%02x%02x%02x" % _STOPS[-1][1]


def _grids(checkpoints: list[CheckpointView]) -> list[LoraGrid]:
    grids: dict[str, LoraGrid] = {}
    for checkpoint in checkpoints:
        grid = grids.setdefault(checkpoint.loraname, LoraGrid(checkpoint.loraname, [], []))
        known = {pid for pid, _ in grid.prompts}
        for case in checkpoint.cases:
            if case.prompt_id not in known:
                grid.prompts.append((case.prompt_id, case.prompt))
                known.add(case.prompt_id)
    for grid in grids.values():
        grid.prompts.sort()
        for checkpoint in (c for c in checkpoints if c.loraname == grid.loraname):
            by_prompt: dict[str, list[CaseView]] = defaultdict(list)
            for case in checkpoint.cases:
                by_prompt[case.prompt_id].append(case)
            grid.rows.append((checkpoint, [by_prompt.get(pid, []) for pid, _ in grid.prompts]))
    return list(grids.values())
