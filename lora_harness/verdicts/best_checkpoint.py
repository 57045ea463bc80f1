"""Which checkpoint of a training sweep to ship: the highest weighted objective among those meeting minimums.

"Latest" is a convention, not a judgement: identity often peaks mid-sweep while artifacts grow with more
steps. The objective is `sum(weight[m] * mean[m])` over a checkpoint's metric means; checkpoints whose mean
of some metric is below its minimum are excluded (the reason is reported). If every checkpoint is excluded,
the highest objective is still named, marked as a fallback, so a gate on it fails on its thresholds rather
than gating nothing. Ties go to the later step.

Without `[best] weights`, each metric's weight follows its direction, as its judge declares it
(`judges.base.metric_direction`): +1 when higher is better, -1 when lower is better (`face_distance`), and no
weight for a metric with no better or worse (`face_yaw_abs`).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

from lora_harness.core.cases import CHECK_ROLES, Checkpoint, step_label
from lora_harness.checks.extra_cases import MEMORIZATION
from lora_harness.core.config import BestConfig, ConfigError, validate_metric_names
from lora_harness.judges.base import Direction, metric_direction
from lora_harness.run.store import ScoreRow


@dataclass(frozen=True)
class Candidate:
    """One checkpoint's standing: its metric means, objective, and why it is excluded (if it is)."""

    checkpoint: Checkpoint
    means: Mapping[str, float | None]
    objective: float | None  # None when a weighted metric has no value
    violations: tuple[str, ...] = ()
    p_best: float | None = None  # share of image resamples in which this checkpoint is best (None: not computed)

    @property
    def eligible(self) -> bool:
        return self.objective is not None and not self.violations

    @property
    def label(self) -> str:
        return f"{'epoch' if self.checkpoint.step_kind == 'epoch' else 'step'} {step_label(self.checkpoint.training_step, self.checkpoint.step_kind)}"


@dataclass(frozen=True)
class BestChoice:
    """The choice for one LoRA: ranked eligible checkpoints, the excluded ones, and whether it fell back."""

    loraname: str
    weights: Mapping[str, float]
    ranked: tuple[Candidate, ...]  # best first; eligible ones, or (fallback) all with an objective
    excluded: tuple[Candidate, ...] = ()
    fallback: bool = False  # no checkpoint met every minimum
    minimums: Mapping[str, float] = field(default_factory=dict)

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    @property
    def runner_up(self) -> Candidate | None:
        return self.ranked[1] if len(self.ranked) > 1 else None

    def describe(self) -> str:
        """The choice, the runner-up and the exclusions, each with its reason, one line each."""
        best = self.best
        if best is None:
            return f"best checkpoint of {self.loraname}: none (no checkpoint has a value for every weighted metric)"
        lines = [f"best checkpoint of {self.loraname}: {best.label}, objective {best.objective:.4f} ({self._terms(best)})"]
        if best.p_best is not None:
            lines.append("  " + self.certainty())
        if self.fallback:
            lines.append("  warning: no checkpoint meets every minimum; this is the highest objective regardless")
        runner = self.runner_up
        if runner is not None:
            lines.append(f"  runner-up: {runner.label}, objective {runner.objective:.4f} ({self._gap(best, runner)})")
        else:
            lines.append("  runner-up: none (no other checkpoint qualifies)")
        if self.excluded:
            reasons = "; ".join(f"{c.label} ({', '.join(c.violations)})" for c in self.excluded)
            lines.append(f"  excluded: {reasons}")
        return "\n".join(lines)

    @property
    def separable(self) -> bool | None:
        """Whether the best checkpoint wins in at least `SEPARABLE` of the image resamples (None: not computed)."""
        best = self.best
        return None if best is None or best.p_best is None else best.p_best >= SEPARABLE

    def certainty(self) -> str:
        """`best: step 1200 (p = 0.46; step 1000 p = 0.41: not separable)`: how often each would win."""
        best = self.best
        assert best is not None and best.p_best is not None
        others = sorted((c for c in self.ranked[1:] if c.p_best), key=lambda c: -(c.p_best or 0.0))[:2]
        rest = "".join(f"; {c.label} p = {c.p_best:.2f}" for c in others)
        word = "separable" if self.separable else "not separable: more images would be needed to choose"
        return f"best: {best.label} (p = {best.p_best:.2f}{rest}: {word})"

    def _terms(self, candidate: Candidate) -> str:
        return " + ".join(f"{w:g} x {m} {candidate.means.get(m):.4f}" for m, w in self.weights.items())

    def _gap(self, best: Candidate, runner: Candidate) -> str:
        """Where the runner-up loses most: the metrics with the largest weighted shortfall."""
        gaps = sorted(
            ((w * ((best.means.get(m) or 0.0) - (runner.means.get(m) or 0.0)), m) for m, w in self.weights.items()),
            reverse=True,
        )
        behind = [f"{m} {runner.means.get(m):.4f} vs {best.means.get(m):.4f}" for gap, m in gaps[:2] if gap > 0]
        lower = best.objective - runner.objective
        return f"{lower:.4f} lower" + (f": {', '.join(behind)}" if behind else ": tie, the later step wins")


def validate_best_section(
    config: BestConfig | None, metrics: Sequence[str], directions: Mapping[str, Direction] | None = None
) -> None:
    """Weights and minimums must name metrics the judges produce; at least one weight must be non-zero.

    A minimum on a lower-is-better metric is an error (it would exclude the better checkpoints); a positive
    weight on one is a warning (it rewards a worse value)."""
    if config is None:
        return
    validate_metric_names("best.weights", config.weights, metrics)
    validate_metric_names("best.minimums", config.minimums, metrics)
    if config.weights and not any(w != 0 for w in config.weights.values()):
        raise ConfigError("best.weights are all 0: give at least one metric a non-zero weight")
    lower = [m for m in config.minimums if metric_direction(m, directions) == "lower"]
    if lower:
        raise ConfigError(
            f"best.minimums names {', '.join(lower)}, which is better when lower: a minimum would exclude the better "
            "checkpoints; remove it and set a maximum instead: "
            + "; ".join(f"[thresholds.{m}] checkpoint_max = ..." for m in lower)
        )
    for metric, weight in config.weights.items():
        if weight > 0 and metric_direction(metric, directions) == "lower":
            warnings.warn(
                f"lora-harness: best.weights.{metric} = {weight:g} rewards a worse value: {metric} is better when "
                f"lower; use a negative weight such as {-weight:g}",
                stacklevel=2,
            )


def default_weights(metrics: Iterable[str], directions: Mapping[str, Direction] | None = None) -> dict[str, float]:
    """+1 for each metric better when higher, -1 for one better when lower, none for one without a direction."""
    sign = {"higher": 1.0, "lower": -1.0}
    weights = {}
    for metric in metrics:
        direction = metric_direction(metric, directions)
        if direction in sign:
            weights[metric] = sign[direction]
    return weights


SEPARABLE = 0.95  # a choice is "separable" when the best wins in at least this share of image resamples


def choose_best(
    means: Mapping[Checkpoint, Mapping[str, float | None]],
    config: BestConfig | None = None,
    *,
    values: Mapping[Checkpoint, Mapping[str, Sequence[float | None]]] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    directions: Mapping[str, Direction] | None = None,
) -> dict[str, BestChoice]:
    """Pick each LoRA's best checkpoint from per-checkpoint metric means (missing metric -> no objective).

    With `values` (each checkpoint's per-image values, aligned across metrics), also the probability that
    each ranked checkpoint is best: its images are resampled (bootstrap, fixed seed, images sorted first so
    the order rows arrive in does not matter) and the objective's argmax counted.

    `directions` (metric -> "higher" / "lower" / "none", the run's judges'; else `metric_direction`) set the
    default weights when the config has none.
    """
    config = config or BestConfig()
    by_lora: dict[str, list[Checkpoint]] = defaultdict(list)
    for checkpoint in means:
        by_lora[checkpoint.loraname].append(checkpoint)
    all_metrics = sorted({m for metric_means in means.values() for m in metric_means})
    weights = dict(config.weights) or default_weights(all_metrics, directions)
    choices = {}
    for loraname, checkpoints in sorted(by_lora.items()):
        candidates = [_candidate(c, means[c], weights, config.minimums) for c in checkpoints]
        order = sorted(
            (c for c in candidates if c.objective is not None),
            key=lambda c: (c.objective, c.checkpoint.step_kind == "step", c.checkpoint.training_step),
            reverse=True,
        )
        eligible = tuple(c for c in order if c.eligible)
        excluded = tuple(sorted((c for c in candidates if not c.eligible), key=lambda c: c.checkpoint.training_step))
        fallback = not eligible and bool(order)
        ranked = eligible or tuple(order)
        if values is not None and ranked:
            ranked = _with_p_best(ranked, values, weights, resamples, seed)
        choices[loraname] = BestChoice(loraname, weights, ranked, excluded, fallback, dict(config.minimums))
    return choices


def _with_p_best(
    ranked: tuple[Candidate, ...],
    values: Mapping[Checkpoint, Mapping[str, Sequence[float | None]]],
    weights: Mapping[str, float],
    resamples: int,
    seed: int,
) -> tuple[Candidate, ...]:
    rng = np.random.default_rng(seed)
    metrics = list(weights)
    objectives = np.empty((resamples, len(ranked)))
    for j, candidate in enumerate(ranked):
        table = _image_table(values.get(candidate.checkpoint, {}), metrics)
        if table.shape[0] == 0:
            objectives[:, j] = candidate.objective
            continue
        picks = rng.integers(0, table.shape[0], size=(resamples, table.shape[0]))
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any value of a metric
            means = np.nanmean(table[picks], axis=1)  # resamples x metrics
        means = np.where(np.isnan(means), np.nanmean(table, axis=0), means)
        objectives[:, j] = means @ np.asarray([weights[m] for m in metrics])
    # ties go to the earlier-ranked (later step) candidate, as in the point choice
    wins = np.bincount(np.argmax(objectives, axis=1), minlength=len(ranked)) / resamples
    return tuple(replace(c, p_best=float(w)) for c, w in zip(ranked, wins))


def _image_table(by_metric: Mapping[str, Sequence[float | None]], metrics: list[str]) -> np.ndarray:
    """Images x metrics (NaN where an image has no value), rows sorted so the result is order-independent."""
    columns = [[np.nan if v is None else float(v) for v in by_metric.get(m, ())] for m in metrics]
    n = max((len(c) for c in columns), default=0)
    table = np.full((n, len(metrics)), np.nan)
    for j, column in enumerate(columns):
        table[: len(column), j] = column
    if n:
        table = table[np.lexsort(np.nan_to_num(table, nan=-1.0).T[::-1])]
    return table


def _candidate(
    checkpoint: Checkpoint, means: Mapping[str, float | None], weights: Mapping[str, float], minimums: Mapping[str, float]
) -> Candidate:
    clean = {m: (None if v is None or math.isnan(v) else float(v)) for m, v in means.items()}
    violations = [f"no value for {m}" for m in weights if clean.get(m) is None]
    for metric, minimum in minimums.items():
        value = clean.get(metric)
        if value is None:
            if metric not in weights:
                violations.append(f"no value for {metric}")
        elif value < minimum:
            violations.append(f"{metric} {value:.4f} < minimum {minimum:g}")
    objective = None if any(clean.get(m) is None for m in weights) else sum(w * clean[m] for m, w in weights.items())
    return Candidate(checkpoint, clean, objective, tuple(violations))


def values_from_rows(rows: Iterable[ScoreRow]) -> dict[Checkpoint, dict[str, list[float | None]]]:
    """Per-checkpoint per-image values of stored rows, aligned by case across metrics (LoRA checks left out)."""
    cells: dict[Checkpoint, dict[str, dict[str, float | None]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if row.variant in CHECK_ROLES or row.judge == MEMORIZATION:
            continue
        value = None if row.value is None or math.isnan(row.value) else row.value
        cells[Checkpoint(row.loraname, row.training_step, row.step_kind)][row.metric][row.case_key] = value  # type: ignore[arg-type]
    out: dict[Checkpoint, dict[str, list[float | None]]] = {}
    for checkpoint, metrics in cells.items():
        keys = sorted({key for by_case in metrics.values() for key in by_case})
        out[checkpoint] = {m: [by_case.get(k) for k in keys] for m, by_case in metrics.items()}
    return out


def means_from_rows(rows: Iterable[ScoreRow]) -> dict[Checkpoint, dict[str, float | None]]:
    """Per-checkpoint metric means of stored rows (errors and NaN left out; no value at all -> None)."""
    values: dict[Checkpoint, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.variant in CHECK_ROLES or row.judge == MEMORIZATION:  # LoRA checks are not quality objectives
            continue
        bucket = values[Checkpoint(row.loraname, row.training_step, row.step_kind)][row.metric]  # type: ignore[arg-type]
        if row.value is not None and not math.isnan(row.value):
            bucket.append(row.value)
    return {
        checkpoint: {m: (sum(v) / len(v) if v else None) for m, v in metrics.items()}
        for checkpoint, metrics in values.items()
    }
