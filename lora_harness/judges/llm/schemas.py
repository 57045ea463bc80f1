"""The answer contract: pydantic models for structured outputs, their JSON schema, and validation.

The schema sent to the server is strict (every property required, no extra properties) but carries no
numeric bounds: not every OpenAI-compatible server's guided decoding supports `minimum`/`maximum`. The
bounds are enforced here instead, after parsing; an answer outside [0, 1], malformed JSON or a missing key
is an invalid answer, which the caller asks again and finally records as an error, never as a score.

Validation is strict (pydantic strict mode): a score must be a JSON number. A server that does not enforce
the schema (some local ones only prompt for it) may answer `"score": true` or `"score": "0.7"`; lax parsing
would turn those into 1.0 and 0.7, scores the model never gave as numbers. They are invalid answers instead.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class CriterionAnswer(BaseModel):
    """One rubric answer. The justification comes first so the model reasons before it scores."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    textual_justification: str
    score: float = Field(ge=0.0, le=1.0)


class PairAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    textual_justification: str
    preference: float = Field(ge=0.0, le=1.0)


def _wire(model: type[BaseModel]) -> dict[str, Any]:
    """pydantic's schema of a flat model, stripped to what strict structured outputs accept everywhere."""
    schema = model.model_json_schema()
    properties = {
        name: {k: v for k, v in prop.items() if k in ("type", "description")}
        for name, prop in schema["properties"].items()
    }
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


@functools.lru_cache(maxsize=64)
def answer_schema(keys: tuple[str, ...]) -> dict[str, Any]:
    """One criterion: the answer object itself; several: an object with one answer object per key.

    Cached: pydantic builds a schema in milliseconds, a cached rerun of hundreds of images must not.
    Callers only serialise the result, never change it."""
    single = _wire(CriterionAnswer)
    if len(keys) == 1:
        return single
    return {
        "type": "object",
        "properties": {key: single for key in keys},
        "required": list(keys),
        "additionalProperties": False,
    }


@functools.lru_cache(maxsize=1)
def pair_schema() -> dict[str, Any]:
    return _wire(PairAnswer)


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problems(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "answer"
        got = f" (got {error['input']!r})" if "input" in error and error["type"] != "missing" else ""
        parts.append(f"{where}: {error['msg']}{got}")
    return "; ".join(parts)


def _load(content: str | None) -> tuple[Any, str | None]:
    if content is None or not content.strip():
        return None, "empty answer"
    try:
        return json.loads(content), None
    except ValueError:
        return None, f"answer is not valid JSON: {_short(content)!r}"


def parse_criteria(content: str | None, keys: Sequence[str]) -> tuple[dict[str, CriterionAnswer], dict[str, str]]:
    """Valid answers and per-key problems of a structured answer for `keys` (see `answer_schema`)."""
    data, problem = _load(content)
    if problem is not None:
        return {}, {key: problem for key in keys}
    per_key = {keys[0]: data} if len(keys) == 1 else None
    if per_key is None:
        if not isinstance(data, dict):
            return {}, {key: f"answer is not a JSON object: {_short(str(content))!r}" for key in keys}
        per_key = data
    answers: dict[str, CriterionAnswer] = {}
    problems: dict[str, str] = {}
    for key in keys:
        if key not in per_key:
            problems[key] = f"answer has no {key!r} (keys: {', '.join(map(str, per_key)) or 'none'})"
            continue
        try:
            answers[key] = CriterionAnswer.model_validate(per_key[key])
        except ValidationError as exc:
            problems[key] = f"invalid answer: {_problems(exc)}"
    return answers, problems


def parse_pair(content: str | None) -> tuple[PairAnswer | None, str | None]:
    data, problem = _load(content)
    if problem is not None:
        return None, problem
    try:
        return PairAnswer.model_validate(data), None
    except ValidationError as exc:
        return None, f"invalid answer: {_problems(exc)}"
