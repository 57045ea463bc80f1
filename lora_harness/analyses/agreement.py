"""How well a judge agrees with people: rank correlations per metric and accuracy for yes/no criteria.

Gating on a judge is only as good as the judge. Before trusting one, label some images by hand (a CSV keyed
by `loraname, training_step, prompt_id` and optionally `seed`, one column per metric, named like the judge's
columns in `scores.csv`) and compare: Spearman's rho and Kendall's tau-b say whether the judge orders images
as people do (scale-free, so a judge that is uniformly harsher still agrees); for binary criteria (labels
only 0 and 1, such as "person present") accuracy says how often the judge's verdict (value >= threshold)
matches.

Several rows for one image (judge repeats, several raters) are averaged first. Seeds join only when both
files have them, so labels without seeds still match the study's seedless CSVs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
from scipy import stats as _scipy_stats

from lora_harness.verdicts.baseline import BaselineError, Observation, read_observations

MIN_PAIRS = 3  # a rank correlation of two points is always +-1: meaningless


class AgreementError(ValueError):
    pass


@dataclass(frozen=True)
class MetricAgreement:
    metric: str
    n: int  # images labelled by people and scored by the judge
    spearman: float | None
    spearman_p: float | None
    kendall: float | None
    kendall_p: float | None
    binary: bool  # every human label is 0 or 1
    accuracy: float | None  # binary only: share of images where (judge >= threshold) == label
    note: str | None = None


@dataclass(frozen=True)
class AgreementReport:
    metrics: tuple[MetricAgreement, ...]
    binary_threshold: float
    unmatched_labels: int  # labelled images with no judge score
    keyed_on_seed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "binary_threshold": self.binary_threshold,
            "unmatched_labels": self.unmatched_labels,
            "keyed_on_seed": self.keyed_on_seed,
            "metrics": [asdict(m) for m in self.metrics],
        }

    def format(self) -> str:
        def num(value: float | None, p: float | None = None) -> str:
            if value is None:
                return "-"
            return f"{value:+.3f}" + (f" (p={p:.3g})" if p is not None else "")

        width = max(len("metric"), *(len(m.metric) for m in self.metrics))
        lines = [f"{'metric'.ljust(width)}  {'n':>4}  {'spearman':>18}  {'kendall':>18}  accuracy"]
        for m in self.metrics:
            accuracy = f"{m.accuracy:.3f} (binary, judge >= {self.binary_threshold:g})" if m.accuracy is not None else "-"
            line = f"{m.metric.ljust(width)}  {m.n:>4}  {num(m.spearman, m.spearman_p):>18}  {num(m.kendall, m.kendall_p):>18}  {accuracy}"
            lines.append(line + (f"  [{m.note}]" if m.note else ""))
        key = "loraname, training_step, prompt_id" + (", seed" if self.keyed_on_seed else "")
        lines.append(f"joined on {key}; {self.unmatched_labels} labelled image(s) without a judge score")
        return "\n".join(lines)


def _prompt(prompt_id: str) -> str:
    """`1` and `01` are the same prompt: compare zero-padded, as kohya names files."""
    return prompt_id.zfill(2) if prompt_id.isdigit() else prompt_id


def _by_key(observations: Iterable[Observation], use_seed: bool) -> dict[str, dict[Hashable, list[float]]]:
    out: dict[str, dict[Hashable, list[float]]] = defaultdict(lambda: defaultdict(list))
    for o in observations:
        if o.value is None or math.isnan(o.value):
            continue
        key = (o.loraname, o.step_kind, o.training_step, _prompt(o.prompt_id)) + ((o.seed,) if use_seed else ())
        out[o.metric][key].append(o.value)
    return out


def agreement(
    labels: Sequence[Observation],
    scores: Sequence[Observation],
    *,
    metrics: Sequence[str] | None = None,
    binary_threshold: float = 0.5,
) -> AgreementReport:
    """Agreement of judge `scores` with human `labels`, per metric both have (or the requested ones)."""
    use_seed = any(o.seed is not None for o in labels) and any(o.seed is not None for o in scores)
    human, judge = _by_key(labels, use_seed), _by_key(scores, use_seed)
    wanted = list(metrics) if metrics else sorted(set(human) & set(judge))
    if not wanted:
        raise AgreementError(
            f"no metric is in both files: labels have {', '.join(sorted(human)) or '(none)'}; "
            f"scores have {', '.join(sorted(judge)) or '(none)'}. Name the label columns like the judge's metric columns"
        )
    for metric in wanted:
        for side, found in (("labels", human), ("scores", judge)):
            if metric not in found:
                raise AgreementError(f"metric {metric!r} has no values in the {side}; it has: {', '.join(sorted(found))}")
    results = []
    labelled: set[Hashable] = set()
    matched: set[Hashable] = set()
    for metric in wanted:
        keys = sorted(set(human[metric]) & set(judge[metric]), key=str)
        labelled |= set(human[metric])
        matched |= set(keys)
        h = np.asarray([np.mean(human[metric][k]) for k in keys], dtype=float)
        j = np.asarray([np.mean(judge[metric][k]) for k in keys], dtype=float)
        results.append(_one(metric, h, j, binary_threshold))
    return AgreementReport(tuple(results), binary_threshold, len(labelled - matched), use_seed)


def _one(metric: str, human: np.ndarray, judge: np.ndarray, threshold: float) -> MetricAgreement:
    n = int(human.size)
    binary = n > 0 and bool(np.all(np.isin(human, (0.0, 1.0))))
    accuracy = float(np.mean((judge >= threshold).astype(float) == human)) if binary else None
    if n < MIN_PAIRS:
        return MetricAgreement(metric, n, None, None, None, None, binary, accuracy, f"fewer than {MIN_PAIRS} images")
    if np.all(human == human[0]) or np.all(judge == judge[0]):
        side = "labels" if np.all(human == human[0]) else "judge scores"
        return MetricAgreement(metric, n, None, None, None, None, binary, accuracy, f"{side} constant: no ranking")
    rho = _scipy_stats.spearmanr(human, judge)
    tau = _scipy_stats.kendalltau(human, judge)
    return MetricAgreement(
        metric, n, float(rho.statistic), float(rho.pvalue), float(tau.statistic), float(tau.pvalue), binary, accuracy
    )


def agreement_from_files(
    labels_path: Path, scores_path: Path, *, metrics: Sequence[str] | None = None, binary_threshold: float = 0.5
) -> AgreementReport:
    """Read a labels CSV and a scores CSV (or run folder) and compute their agreement."""
    try:
        labels = read_observations(Path(labels_path)) if Path(labels_path).is_file() else None
    except BaselineError as exc:
        raise AgreementError(f"labels: {exc}") from None
    if labels is None:
        raise AgreementError(f"labels CSV not found: {labels_path}; columns loraname, training_step, prompt_id[, seed], then one per metric")
    try:
        scores = read_observations(Path(scores_path))
    except BaselineError as exc:
        raise AgreementError(f"scores: {exc}") from None
    return agreement(labels, scores, metrics=metrics, binary_threshold=binary_threshold)
