"""Score rows from CSV files: the study's `res_*.csv`, our `scores.csv` (wide) and `scores_long.csv`.

The report is built from `ScoreRow`s whatever their origin, so a report from CSV and one from the store are
the same report; only what the CSV lacks (prompt text, judge justifications, images) is missing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from lora_harness.report.csv import ScoresCsvError, metric_columns, read_scores_csv
from lora_harness.run.store import ScoreRow

_STEP = re.compile(r"^(?P<epoch>e)?(?P<n>\d+)$")
LONG_REQUIRED = ("case_key", "loraname", "training_step", "prompt_id", "metric", "value")


def rows_from_csvs(paths: list[Path]) -> list[ScoreRow]:
    rows: list[ScoreRow] = []
    for path in paths:
        rows.extend(rows_from_csv(Path(path), order_offset=len(rows)))
    return rows


def rows_from_csv(path: Path, *, order_offset: int = 0) -> list[ScoreRow]:
    """Rows of one CSV; the long layout is recognised by its `metric`/`value` columns."""
    header = _header(path)
    if {"metric", "value"} <= set(header):
        return _long_rows(path, order_offset)
    return _wide_rows(path, order_offset)


def _header(path: Path) -> list[str]:
    if not path.is_file():
        raise ScoresCsvError(f"scores CSV not found: {path}")
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ScoresCsvError(f"{path}: not a readable CSV ({exc})") from None


def parse_step(text: object, *, where: str) -> tuple[int, str]:
    """`001800` -> (1800, "step"); `e000004` -> (4, "epoch"), as kohya writes them."""
    match = _STEP.match(str(text).strip())
    if not match:
        raise ScoresCsvError(
            f"{where}: training_step {text!r} is not a step number (e.g. 001800) or an epoch (e.g. e000004)"
        )
    return int(match["n"]), "epoch" if match["epoch"] else "step"


def _clean(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _seed(value: object, where: str) -> int | None:
    text = _clean(value)
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise ScoresCsvError(f"{where}: seed {text!r} is not an integer") from None


def _wide_rows(path: Path, order_offset: int) -> list[ScoreRow]:
    frame = read_scores_csv(path)
    metrics = metric_columns(frame)
    if not metrics:
        raise ScoresCsvError(
            f"{path}: no numeric metric column found; expected the research layout (loraname, training_step, "
            "prompt_id, timestamp, then one numeric column per metric such as eval_person_llm or clip_score)"
        )
    records = frame.to_dict("records")
    base_keys = []
    for number, record in enumerate(records, 2):  # line 1 is the header
        where = f"{path}:{number}"
        step, kind = parse_step(record["training_step"], where=where)
        seed = _seed(record.get("seed"), where)
        base_keys.append((step, kind, seed))
    counts: dict[str, int] = {}
    keys = []
    for record, (step, kind, seed) in zip(records, base_keys):
        key = _case_key(str(record["loraname"]), step, kind, str(record["prompt_id"]), seed)
        counts[key] = counts.get(key, 0) + 1
        keys.append(key)
    seen: dict[str, int] = {}
    rows: list[ScoreRow] = []
    run_default = path.stem
    for index, (record, (step, kind, seed), key) in enumerate(zip(records, base_keys, keys)):
        timestamp = _clean(record.get("timestamp"))
        if counts[key] > 1:  # the study sampled some checkpoints twice: keep both images as repeats
            seen[key] = seen.get(key, 0) + 1
            key = f"{key}-t{timestamp}" if timestamp else f"{key}-r{seen[key]}"
        loraname = str(record["loraname"])
        for metric in metrics:
            value = record[metric]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue  # not scored in the study: absent, not an error
            rows.append(
                ScoreRow(
                    case_key=key,
                    checkpoint_key=_checkpoint_key(loraname, step, kind),
                    loraname=loraname,
                    training_step=step,
                    step_kind=kind,  # type: ignore[arg-type]
                    prompt_id=str(record["prompt_id"]),
                    prompt="",
                    seed=seed,
                    timestamp=timestamp,
                    image=_clean(record.get("image")) or "",
                    variant=loraname,
                    metric=metric,
                    value=float(value),
                    raw={},
                    error=None,
                    judge="csv",
                    judge_version=path.name,
                    run_id=_clean(record.get("run_id")) or run_default,
                    worker="csv",
                    recorded_at=float(order_offset + index),
                )
            )
    return rows


def _long_rows(path: Path, order_offset: int) -> list[ScoreRow]:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ScoresCsvError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in LONG_REQUIRED if c not in frame.columns]
    if missing:
        raise ScoresCsvError(f"{path}: missing column(s) {', '.join(missing)} of the one-row-per-score layout")
    rows = []
    for number, record in enumerate(frame.to_dict("records"), 2):
        where = f"{path}:{number}"
        step, kind = parse_step(record["training_step"], where=where)
        try:
            raw = json.loads(record.get("raw") or "{}")
            value = float(record["value"]) if record["value"] not in ("", "nan", "NaN") else None
        except ValueError as exc:
            raise ScoresCsvError(f"{where}: unreadable value or raw JSON ({exc})") from None
        loraname = record["loraname"]
        rows.append(
            ScoreRow(
                case_key=record["case_key"],
                checkpoint_key=_checkpoint_key(loraname, step, kind),
                loraname=loraname,
                training_step=step,
                step_kind=kind,  # type: ignore[arg-type]
                prompt_id=record["prompt_id"],
                prompt=record.get("prompt", ""),
                seed=_seed(record.get("seed"), where),
                timestamp=_clean(record.get("timestamp")),
                image=record.get("image", ""),
                variant=_clean(record.get("variant")) or loraname,
                metric=record["metric"],
                value=value,
                raw=raw if isinstance(raw, dict) else {"raw": raw},
                error=_clean(record.get("error")),
                judge=record.get("judge") or "csv",
                judge_version=record.get("judge_version") or path.name,
                run_id=record.get("run_id") or path.stem,
                worker=record.get("worker") or "csv",
                recorded_at=float(record.get("recorded_at") or order_offset + number),
            )
        )
    return rows


def _checkpoint_key(loraname: str, step: int, kind: str) -> str:
    return f"{loraname}-{'epoch' if kind == 'epoch' else 'step'}{step:06d}"


def _case_key(loraname: str, step: int, kind: str, prompt_id: str, seed: int | None) -> str:
    return f"{_checkpoint_key(loraname, step, kind)}-p{prompt_id}" + ("" if seed is None else f"-s{seed}")
