"""Paired comparison of a candidate LoRA with a baseline: is it at least as good, within a margin?

A fixed threshold on one noisy score cannot say whether a new LoRA is better than the last one. Comparing
the two on the *same* prompts and seeds and bootstrapping the per-case differences can: prompt difficulty
cancels out, and the CI says how sure we are. The gate is a non-inferiority test: it fails when the CI's
lower bound is below `-margin`, i.e. when a drop larger than the tolerated margin is plausible.

The baseline is another LoRA of the same run (`[baseline] lora = ...`) or a stored run (`run = ...`: a
`reports/<run>` folder, read from its score store or its `scores.csv`, or any wide scores CSV such as the
study's `res_*.csv`). Cases pair on (prompt id, seed); when one side has no seeds at all (the study's CSVs),
on prompt id alone. Several values for one pair key (repeated generations, judge repeats) are averaged
first, so each pair counts once in the bootstrap.

A metric's direction comes from the judge that produces it (`judges.base.metric_direction`). A "lower"
metric (e.g. `face_distance`) is compared mirrored: not worse means baseline - candidate >= -margin, and the
messages say "lower is better". A "none" metric (e.g. `face_yaw_abs`, a head angle) has no better or
worse: it is left out by default, and naming it in `[baseline] metrics` is a config error.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable, Iterable, Literal, Mapping, Sequence

import pandas as pd

from lora_harness.core.cases import Checkpoint, checkpoint_order
from lora_harness.core.config import BaselineConfig, ConfigError, StatsConfig, validate_metric_names
from lora_harness.judges.base import Direction, metric_direction
from lora_harness.run.scores_csv import ScoresCsvError, metric_columns, read_scores_csv
from lora_harness.verdicts.enforce import enforce
from lora_harness.verdicts.outcome import Decision, Policy, Verdict, decide
from lora_harness.verdicts.stats import MeanCI, PairedDifference, paired_difference
from lora_harness.run.store import ScoreRow, latest_rows, read_rows

if TYPE_CHECKING:  # the harness imports this module; at runtime it is passed in, never imported
    from lora_harness.run.harness import Harness


class BaselineError(ValueError):
    """The baseline cannot be read or resolved; the message names the file or key and the fix."""


# --- reading scores from a stored run or a CSV ---------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One metric value of one image, wherever it was read from (store row or CSV row)."""

    loraname: str
    training_step: int
    step_kind: str
    prompt_id: str
    seed: int | None
    metric: str
    value: float | None
    case_key: str | None = None

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.loraname, self.training_step, self.step_kind)  # type: ignore[arg-type]


def observations_from_rows(rows: Iterable[ScoreRow]) -> list[Observation]:
    return [
        Observation(r.loraname, r.training_step, r.step_kind, r.prompt_id, r.seed, r.metric, r.value, r.case_key)
        for r in rows
    ]


def observations_from_frame(frame: pd.DataFrame, source: Path | str = "<frame>") -> list[Observation]:
    """Long observations from a wide scores frame (ours or the study's layout)."""
    metrics = metric_columns(frame)
    if not metrics:
        raise BaselineError(f"{source}: no numeric metric columns; expected the research layout with eval_* columns")
    has_seed = "seed" in frame.columns
    out = []
    for index, row in frame.iterrows():
        step, kind = parse_step(row["training_step"], f"{source}: row {index}")
        prompt_id = str(row["prompt_id"]).strip()
        seed = _seed(row["seed"]) if has_seed else None
        for metric in metrics:
            value = row[metric]
            out.append(
                Observation(str(row["loraname"]), step, kind, prompt_id, seed, metric, None if pd.isna(value) else float(value))
            )
    return out


def parse_step(text: object, where: str) -> tuple[int, str]:
    """`000800` -> (800, "step"); `e000004` -> (4, "epoch"), as kohya names them and our CSV writes them."""
    label = str(text).strip()
    kind = "epoch" if label.startswith("e") else "step"
    digits = label[1:] if kind == "epoch" else label
    if not digits.isdigit():
        raise BaselineError(f"{where}: training_step {label!r} is not a step such as 000800 or an epoch such as e000004")
    return int(digits), kind


def _seed(value: object) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    return int(float(value))


def read_observations(path: Path) -> list[Observation]:
    """A run folder's stored scores (newest row per case and metric), else its scores.csv; or a scores CSV."""
    path = Path(path)
    if path.is_dir():
        rows = latest_rows(read_rows(path))
        if rows:
            return observations_from_rows(rows)
        csv = path / "scores.csv"
        if csv.is_file():
            return _from_csv(csv)
        raise BaselineError(
            f"{path}: no stored scores (scores/*.jsonl) and no scores.csv; point baseline.run at a finished run "
            "folder such as reports/<run name>, or at a scores CSV"
        )
    if path.is_file():
        return _from_csv(path)
    raise BaselineError(f"baseline run not found: {path}; set baseline.run to a run folder (reports/<run name>) or a scores CSV")


def _from_csv(path: Path) -> list[Observation]:
    try:
        return observations_from_frame(read_scores_csv(path), path)
    except ScoresCsvError as exc:
        raise BaselineError(str(exc)) from None


# --- the paired comparison -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseDiff:
    """One pair: the (replicate-averaged) candidate and baseline values and their difference."""

    label: str
    candidate: float
    baseline: float
    direction: Literal["higher", "lower"] = "higher"

    @property
    def diff(self) -> float:
        return self.candidate - self.baseline

    @property
    def gain(self) -> float:
        """How much better the candidate is: `diff`, mirrored for a lower-is-better metric."""
        return self.diff if self.direction == "higher" else -self.diff


DEFAULT_MARGIN_SCORE = 0.05  # scores in [0, 1]: half the per-image judge noise (sd 0.1) of LLM scores
DEFAULT_MARGIN_BINARY = 0.10  # 0/1 metrics: one image in ten
DEFAULT_MARGIN_RELATIVE = 0.05  # other scales (CLIP score): 5% of the baseline's mean


def default_margin(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """The non-inferiority margin when the config names none, by the kind of metric the values show."""
    values = [*candidate, *baseline]
    if values and all(v in (0.0, 1.0) for v in values):
        return DEFAULT_MARGIN_BINARY
    if values and all(0.0 <= v <= 1.0 for v in values):
        return DEFAULT_MARGIN_SCORE
    return DEFAULT_MARGIN_RELATIVE * abs(sum(baseline) / len(baseline)) if baseline else DEFAULT_MARGIN_SCORE


@dataclass(frozen=True)
class Comparison:
    """The non-inferiority verdict for one metric, with everything its message needs.

    Three ways: pass when the interval's lower bound clears -margin, fail when the whole interval is below
    it, inconclusive otherwise; incomplete when too few cases pair up to compare at all. The interval is of
    the gain: candidate - baseline, or baseline - candidate for a lower-is-better metric (`direction`).
    """

    metric: str
    candidate: str
    baseline: str
    margin: float
    result: PairedDifference
    cases: tuple[CaseDiff, ...]  # worst (largest drop) first
    unpaired_candidate: tuple[str, ...] = ()
    unpaired_baseline: tuple[str, ...] = ()
    note: str | None = None
    min_pairs: int = 2
    policy: Policy = Policy()
    direction: Literal["higher", "lower"] = "higher"

    @property
    def gain(self) -> MeanCI:
        """The interval the decision reads: `result.diff`, mirrored (baseline - candidate) when lower is better."""
        d = self.result.diff
        if self.direction == "higher":
            return d
        return MeanCI(-d.mean, d.std, d.n, -d.high, -d.low, d.confidence, d.method)

    @property
    def decision(self) -> Decision:
        d = self.gain
        if self.result.n < self.min_pairs:
            return "incomplete"
        if d.low >= -self.margin:
            return "pass"
        if d.high < -self.margin:
            return "fail"
        return "inconclusive"

    @property
    def passed(self) -> bool:
        return self.decision == "pass"

    def describe(self, worst: int = 3) -> str:
        r, d = self.result, self.gain
        lower = self.direction == "lower"
        head = f"{self.metric}{' (lower is better)' if lower else ''}: {self.candidate} vs baseline {self.baseline}"
        if r.n < self.min_pairs:
            lines = [
                f"{head}: only {r.n} paired case(s) with a value on both sides; a CI needs at least {self.min_pairs}. "
                "Candidate and baseline must share prompt ids and seeds (same sample_prompts.txt and --d seeds)."
            ]
        else:
            verdict = {
                "pass": f"passes (CI low {d.low:+.4f} >= -margin {-self.margin:+.4f})",
                "fail": f"FAILS: CI high {d.high:+.4f} < -margin {-self.margin:+.4f} "
                + ("(the candidate's values rose beyond the margin, and lower is better)" if lower else "(worse beyond the margin)"),
                "inconclusive": f"INCONCLUSIVE: the CI straddles -margin {-self.margin:+.4f}; "
                f"about {self._pairs_to_decide()} pairs would decide",
            }[self.decision]
            what = "improvement (baseline - candidate)" if lower else "difference"
            lines = [
                f"{head}: {what} {d.mean:+.4f} ({d.confidence:.0%} CI [{d.low:+.4f}, {d.high:+.4f}], "
                f"n={r.n} pairs), non-inferiority margin {self.margin:.4f}: {verdict}",
                f"  means: candidate {r.candidate_mean:.4f}, baseline {r.baseline_mean:.4f}",
            ]
            drops = [c for c in self.cases[:worst] if c.gain < 0]
            if drops:
                kind = "largest rises; lower is better" if lower else "largest drops"
                lines.append(f"  worst cases ({kind}): " + "; ".join(
                    f"{c.label}: {c.candidate:.4f} vs {c.baseline:.4f} ({c.diff:+.4f})" for c in drops
                ))
            else:
                lines.append("  no paired case rose (lower is better)" if lower else "  no paired case dropped")
        for side, keys in (("candidate", self.unpaired_candidate), ("baseline", self.unpaired_baseline)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                lines.append(f"  {len(keys)} {side} case(s) without a partner: {', '.join(keys[:5])}{more}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)

    def _pairs_to_decide(self) -> int:
        d = self.gain
        gap = abs(d.mean + self.margin)
        half = (d.high - d.low) / 2
        if gap < 1e-9 or not math.isfinite(half):
            return max(self.result.n * 4, 12)
        return max(self.result.n + 1, math.ceil(self.result.n * (half / gap) ** 2))

    @property
    def verdict(self) -> Verdict:
        return decide([(self.decision, self.describe())], gated=True)

    def check(self) -> None:
        """Raise the test outcome of the comparison (fail, or the `[gate]` policy's for undecided ones)."""
        __tracebackhide__ = True  # pytest shows the message, not this frame
        enforce(self.verdict, f"baseline comparison of {self.metric}", self.policy)


def compare_paired(
    candidate: Mapping[Hashable, Sequence[float | None]],
    baseline: Mapping[Hashable, Sequence[float | None]],
    *,
    metric: str,
    margin: float | None,
    candidate_label: str = "candidate",
    baseline_label: str = "baseline",
    labels: Mapping[Hashable, str] | None = None,
    stats: StatsConfig | None = None,
    note: str | None = None,
    policy: Policy = Policy(),
    direction: Direction = "higher",
) -> Comparison:
    """Pair the two sides by key, average replicates per key, bootstrap the mean difference.

    `direction` "lower": the candidate is not worse when baseline - candidate >= -margin (a rise is a loss).
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"{metric} has direction {direction!r}: no better or worse, so there is nothing to compare")
    stats = stats or StatsConfig()
    labels = labels or {}

    def average(values: Sequence[float | None]) -> float | None:
        present = [float(v) for v in values if v is not None and not math.isnan(v)]
        return sum(present) / len(present) if present else None

    cand = {k: average(v) for k, v in candidate.items()}
    base = {k: average(v) for k, v in baseline.items()}
    shared = [k for k in sorted(set(cand) & set(base), key=str) if cand[k] is not None and base[k] is not None]
    label = lambda k: labels.get(k) or _key_label(k)  # noqa: E731
    result = paired_difference(
        [cand[k] for k in shared], [base[k] for k in shared], confidence=stats.confidence, sd_floor=stats.sd_floor,
    )
    if margin is None:
        margin = default_margin([cand[k] for k in shared], [base[k] for k in shared])  # type: ignore[misc]
    cases = sorted((CaseDiff(label(k), cand[k], base[k], direction) for k in shared), key=lambda c: (c.gain, c.label))  # type: ignore[arg-type]
    return Comparison(
        metric=metric,
        candidate=candidate_label,
        baseline=baseline_label,
        margin=margin,
        result=result,
        cases=tuple(cases),
        unpaired_candidate=tuple(label(k) for k in sorted(set(cand) - set(base), key=str)),
        unpaired_baseline=tuple(label(k) for k in sorted(set(base) - set(cand), key=str)),
        note=note,
        policy=policy,
        direction=direction,
    )


def compare_observations(
    candidate: Iterable[Observation],
    baseline: Iterable[Observation],
    *,
    metric: str,
    margin: float | None = None,
    on: Sequence[str] = ("prompt_id", "seed"),
    candidate_label: str = "candidate",
    baseline_label: str = "baseline",
    stats: StatsConfig | None = None,
    note: str | None = None,
    policy: Policy = Policy(),
    direction: Direction = "higher",
) -> Comparison:
    """Compare one metric of two sets of observations, pairing on the `on` fields (e.g. training_step,
    prompt_id to compare two whole sweeps of the study). Worst cases are named by the candidate's case key
    where there is one."""
    cand: dict[Hashable, list[float | None]] = defaultdict(list)
    base: dict[Hashable, list[float | None]] = defaultdict(list)
    labels: dict[Hashable, str] = {}
    for side, observations in ((cand, candidate), (base, baseline)):
        for o in observations:
            if o.metric != metric:
                continue
            key = tuple(getattr(o, name) for name in on)
            side[key].append(o.value)
            if side is cand and o.case_key:
                labels[key] = o.case_key
            labels.setdefault(key, _observation_label(o, on))
    return compare_paired(
        cand, base, metric=metric, margin=margin, candidate_label=candidate_label, baseline_label=baseline_label,
        labels=labels, stats=stats, note=note, policy=policy, direction=direction,
    )


def _observation_label(o: Observation, on: Sequence[str]) -> str:
    """`step000600-p02-s42`, in the case-key spelling, from the fields a comparison pairs on."""
    parts = []
    for name in on:
        value = getattr(o, name)
        if name == "training_step":
            parts.append(f"{'epoch' if o.step_kind == 'epoch' else 'step'}{value:06d}")
        elif name == "prompt_id":
            parts.append(f"p{value}")
        elif name == "seed":
            parts.append("" if value is None else f"s{value}")
        else:
            parts.append(str(value))
    return "-".join(part for part in parts if part)


def _key_label(key: Hashable) -> str:
    if isinstance(key, tuple):
        return "-".join(str(part) for part in key if part is not None)
    return str(key)


# --- the plan: which candidates, which baseline checkpoint, which metrics --------------------------------------


@dataclass
class BaselinePlan:
    """The `[baseline]` section resolved against this run's checkpoints and metrics (validated up front)."""

    config: BaselineConfig
    checkpoints: Sequence[Checkpoint]
    produced_metrics: Sequence[str]
    stats: StatsConfig = field(default_factory=StatsConfig)
    stored: list[Observation] | None = None
    directions: Mapping[str, Direction] = field(default_factory=dict)  # by metric; else `metric_direction`

    def __post_init__(self) -> None:
        cfg = self.config
        names = sorted({c.loraname for c in self.checkpoints})
        validate_metric_names("baseline.metrics", cfg.metrics or [], self.produced_metrics)
        validate_metric_names("baseline.margins", cfg.margins, self.produced_metrics)
        for key, named in (("baseline.metrics", cfg.metrics or []), ("baseline.margins", cfg.margins)):
            undirected = [m for m in named if self.direction(m) == "none"]
            if undirected:
                raise ConfigError(
                    f"{key} names {', '.join(undirected)}: its judge declares no better or worse value (information, "
                    "such as a head angle), so a candidate cannot be worse on it; remove it from " + key
                )
        if cfg.lora is not None:
            if cfg.lora not in names:
                raise ConfigError(f"baseline.lora = {cfg.lora!r} is not a LoRA of this run; LoRAs found: {', '.join(names)}")
            if len(names) < 2:
                raise ConfigError(f"baseline.lora = {cfg.lora!r} is the only LoRA of this run: there is no candidate to compare")
            if cfg.step is not None and not self._own(cfg.lora, cfg.step):
                steps = sorted(c.training_step for c in self.checkpoints if c.loraname == cfg.lora)
                raise ConfigError(f"baseline.step = {cfg.step}: LoRA {cfg.lora!r} has no such checkpoint; its steps: {steps}")
        else:
            try:
                self.stored = read_observations(cfg.run)  # type: ignore[arg-type]
            except BaselineError as exc:
                raise ConfigError(f"baseline.run: {exc}") from None
            for candidate in self.candidates:
                self.stored_name(candidate)  # raises a ConfigError naming the choices

    @property
    def candidates(self) -> list[str]:
        names = sorted({c.loraname for c in self.checkpoints})
        return [n for n in names if n != self.config.lora]

    def direction(self, metric: str) -> Direction:
        """The metric's direction: as the run's judges declare it, else as the registered judges do."""
        return metric_direction(metric, self.directions)

    @property
    def metrics(self) -> list[str]:
        """The configured metrics, else every produced metric that has a better and a worse direction."""
        named = self.config.metrics or self.config.margins
        if named:
            return list(named)
        return [m for m in self.produced_metrics if self.direction(m) != "none"]

    def margin(self, metric: str) -> float | None:
        """The configured margin; None: `default_margin` for the metric's kind, once the values are known."""
        return self.config.margins.get(metric, self.config.margin)

    def _own(self, loraname: str, step: int, kind: str | None = None) -> Checkpoint | None:
        found = [c for c in self.checkpoints if c.loraname == loraname and c.training_step == step]
        return next((c for c in found if kind is None or c.step_kind == kind), found[0] if found else None)

    def stored_name(self, candidate: str) -> str:
        """The stored run's LoRA a candidate is compared with: `loraname`, the same name, or its only LoRA."""
        stored = sorted({o.loraname for o in self.stored or ()})
        if self.config.loraname is not None:
            if self.config.loraname not in stored:
                raise ConfigError(f"baseline.loraname = {self.config.loraname!r} is not in {self.config.run}; it has: {', '.join(stored)}")
            return self.config.loraname
        if candidate in stored:
            return candidate
        if len(stored) == 1:
            return stored[0]
        raise ConfigError(
            f"baseline.run {self.config.run} holds several LoRAs ({', '.join(stored)}) and none is named {candidate!r}; "
            "set baseline.loraname to the one to compare with"
        )

    def baseline_checkpoint(self, candidate: Checkpoint, gated_of: Callable[[str], list[Checkpoint]]) -> Checkpoint:
        """The baseline checkpoint a candidate checkpoint is compared with.

        In-run: `baseline.step`, else the baseline LoRA's gated checkpoint (the one at the candidate's step
        when several are gated, else the latest gated). Stored run: `baseline.step`, else the candidate's
        step if the stored LoRA has it, else its latest step.
        """
        cfg = self.config
        if cfg.lora is not None:
            if cfg.step is not None:
                return self._own(cfg.lora, cfg.step, candidate.step_kind)  # type: ignore[return-value]
            gated = sorted(gated_of(cfg.lora), key=checkpoint_order)
            if not gated:
                raise BaselineError(f"baseline LoRA {cfg.lora!r} has no gated checkpoint to compare with; set baseline.step")
            same = [c for c in gated if (c.training_step, c.step_kind) == (candidate.training_step, candidate.step_kind)]
            return same[0] if same else gated[-1]
        name = self.stored_name(candidate.loraname)
        have = sorted({o.checkpoint for o in self.stored or () if o.loraname == name}, key=checkpoint_order)
        if cfg.step is not None:
            match = [c for c in have if c.training_step == cfg.step]
            if not match:
                raise BaselineError(f"baseline.step = {cfg.step}: {name!r} in {cfg.run} has steps {[c.training_step for c in have]}")
            return next((c for c in match if c.step_kind == candidate.step_kind), match[0])
        same = [c for c in have if (c.training_step, c.step_kind) == (candidate.training_step, candidate.step_kind)]
        return same[0] if same else have[-1]

    def compare(self, harness: "Harness", candidate: Checkpoint, metric: str) -> Comparison:
        """Score (or read) both sides of one candidate checkpoint and compare them on one metric."""
        base_ckpt = self.baseline_checkpoint(candidate, harness.gated_of)
        cand_obs = self._run_observations(harness, candidate, metric)
        if self.config.lora is not None:
            base_obs = self._run_observations(harness, base_ckpt, metric)
            where = base_ckpt.key
        else:
            base_obs = [o for o in self.stored or () if o.checkpoint == base_ckpt and o.metric == metric]
            where = f"{base_ckpt.key} in {self.config.run}"
            if not base_obs:
                have = sorted({o.metric for o in self.stored or ()})
                raise BaselineError(f"baseline {where} has no values for {metric}; it has: {', '.join(have)}")
        use_seed = any(o.seed is not None for o in cand_obs) and any(o.seed is not None for o in base_obs)
        return compare_observations(
            cand_obs, base_obs, metric=metric, margin=self.margin(metric),
            on=("prompt_id", "seed") if use_seed else ("prompt_id",),
            candidate_label=candidate.key, baseline_label=where, stats=self.stats,
            note=None if use_seed else "paired on prompt id only: one side has no seeds", policy=harness.policy,
            direction=self.direction(metric),  # type: ignore[arg-type]  # "none" metrics are not compared
        )

    @staticmethod
    def _run_observations(harness: "Harness", checkpoint: Checkpoint, metric: str) -> list[Observation]:
        out = []
        for case in harness.cases_of(checkpoint):
            score = harness.score(case).get(metric)
            value = None if score is None else score.value
            out.append(Observation(case.loraname, case.training_step, case.step_kind, case.prompt_id, case.seed, metric, value, case.key))
        return out

