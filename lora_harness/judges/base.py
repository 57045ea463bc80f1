"""The judge protocol and registry.

A judge turns one case and its decoded image into scores. Judges never write files and never know about
pytest: the plugin records what they return. Adding a judge is one module that calls `register` plus an
import in `lora_harness/judges/__init__.py`.
"""

from __future__ import annotations

import difflib

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from lora_harness.core.cases import EvalCase
from lora_harness.judges.model_loading import ModelUnavailable


@dataclass(frozen=True)
class Score:
    """One metric value for one case. `raw` keeps the numbers the value was derived from."""

    metric: str
    value: float | None
    raw: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None  # set (and value None) when the judge could not score this case


@dataclass(frozen=True)
class JudgeContext:
    """What a judge may need besides the case's own image: the person, and where it may keep a cache."""

    reference_images: Sequence[np.ndarray] = ()
    reference_paths: Sequence[Path] = ()
    trigger: str | None = None  # the LoRA's trigger token, e.g. "<phigep>"
    description: str | None = None  # plain words for the person, for models that do not know the token
    cache_dir: Path | None = None  # a folder the judge may use for a content-addressed cache
    worker_count: int = 1  # processes judging at once (xdist workers): > 1 means limits are shared run-wide
    run_id: str | None = None  # the pytest run (shared by its xdist workers): scopes run-wide judge state


Direction = Literal["higher", "lower", "none"]
DIRECTIONS: tuple[Direction, ...] = ("higher", "lower", "none")


@runtime_checkable
class Judge(Protocol):
    """A judge scores a case. `image` is an RGB uint8 array of shape (H, W, 3).

    A judge may also have `directions: Mapping[str, Direction]`: which of its metrics are better when lower
    ("lower", e.g. a distance) or have no better and worse ("none", information such as a head angle).
    A metric it does not name is "higher" (better when higher). `metric_direction` reads it; the baseline
    comparison and the best-checkpoint objective use it.
    """

    name: str
    version: str

    @property
    def metrics(self) -> Sequence[str]: ...

    def judge(self, case: EvalCase, image: np.ndarray, context: JudgeContext) -> list[Score]: ...


class BatchJudge(Judge, Protocol):
    """A judge that is faster on many cases at once (batched models, concurrent API calls).

    Returns one list of scores per item, in order. An item that fails gets Scores with `error` set;
    an exception fails the whole batch (the harness then records errors for every item).
    """

    def judge_batch(
        self, items: Sequence[tuple[EvalCase, np.ndarray]], context: JudgeContext
    ) -> list[list[Score]]: ...


def judge_many(judge: Judge, items: Sequence[tuple[EvalCase, np.ndarray]], context: JudgeContext) -> list[list[Score]]:
    """Score several cases with one judge, batched when the judge supports it."""
    batch = getattr(judge, "judge_batch", None)
    if batch is not None:
        return batch(items, context)
    results = []
    for case, image in items:
        try:
            results.append(judge.judge(case, image, context))
        except ModelUnavailable:
            raise  # the harness turns a missing model into skips with its reason, not per-case errors
        except Exception as exc:  # one bad case must not cost the others their scores
            results.append(error_scores(judge, f"{type(exc).__name__}: {exc}"))
    return results


def reject_unknown(judge: str, unknown: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """A typo in a `[[judges]] options` table fails loudly instead of being ignored."""
    if unknown:
        named = []
        for key in sorted(unknown):
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            named.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{judge} got unknown option(s) {', '.join(named)}; allowed options: {', '.join(allowed)}")


def check_int(judge: str, key: str, value: Any, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise ValueError(f"{judge} option {key!r} = {value!r} is invalid: expected {allowed}")
    return int(value)


def check_text(judge: str, key: str, value: Any, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{judge} option {key!r} = {value!r} is invalid: expected a non-empty string")
    return value


def check_choice(judge: str, key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{judge} option {key!r} = {value!r} is invalid: expected one of {', '.join(choices)}")
    return str(value)


def error_scores(judge: Judge, message: str) -> list[Score]:
    return [Score(metric, None, error=f"{judge.name}: {message}") for metric in judge.metrics]


def judge_directions(judge: Any) -> dict[str, Direction]:
    """Every metric of a judge with its direction (its `directions` attribute; undeclared: "higher")."""
    declared = getattr(judge, "directions", None) or {}
    bad = {m: d for m, d in declared.items() if d not in DIRECTIONS}
    if bad:
        raise ValueError(f"judge {getattr(judge, 'name', judge)!r} declares direction(s) {bad}; "
                         f"a direction is one of {', '.join(DIRECTIONS)}")
    return {metric: declared.get(metric, "higher") for metric in judge.metrics}


def metric_direction(metric: str, declared: Mapping[str, Direction] | None = None) -> Direction:
    """Whether a metric is better when "higher", when "lower", or neither ("none"), as its judge declares.

    `declared`: the run's judges' directions (`Harness.directions`), which win. Otherwise (a metric no judge
    of the run produces, a report read back from stored rows) the registered judges' class-level
    `directions`. A metric nobody declares: "higher".
    """
    if declared and metric in declared:
        return declared[metric]
    for factory in _REGISTRY.values():
        declared = getattr(factory, "directions", None)
        if isinstance(declared, Mapping) and declared.get(metric) in DIRECTIONS:
            return declared[metric]
    return "higher"


JudgeFactory = Callable[..., Judge]
_REGISTRY: dict[str, JudgeFactory] = {}


class UnknownJudgeError(KeyError, ValueError):
    """A registry miss, and a config mistake: ValueError lets the CLI and plugin report it as one."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else super().__str__()


def register(name: str) -> Callable[[JudgeFactory], JudgeFactory]:
    """Register a judge factory under the name used in `[[judges]] name = ...` of the config."""

    def decorator(factory: JudgeFactory) -> JudgeFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"judge {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorator


def registered_judges() -> list[str]:
    return sorted(_REGISTRY)


def create_judge(name: str, options: Mapping[str, Any] | None = None) -> Judge:
    """Build a judge from its config entry; unknown names list what exists."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), registered_judges(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownJudgeError(
            f"unknown judge {name!r}{hint}; registered judges: {', '.join(registered_judges()) or '(none)'}"
        ) from None
    return factory(**dict(options or {}))
