"""CSV in the research's layout (one row per image, one column per metric) and one row per score.

The wide file keeps the study's column names and zero-padded `training_step`/`prompt_id` strings, so its
notebooks and the study's own `res_*.csv` files can be read side by side with ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from lora_harness.core.cases import case_order, step_label  # noqa: F401  (re-exported: reports import it from here)
from lora_harness.run.scores_csv import ID_COLUMNS, TAIL_COLUMNS, ScoresCsvError, metric_columns, read_scores_csv  # noqa: F401
from lora_harness.run.store import ScoreRow

# The study's metric columns, in its order; other metrics follow alphabetically.
RESEARCH_METRICS = [
    "eval_person_llm",
    "eval_image_quality_llm",
    "eval_limb_quality_llm",
    "eval_artifacts_quality_llm",
    "eval_same_person_llm",
    "eval_prompt_adherence_llm",
    "eval_prompt_adherence_llm_simpler_prompt",
    "clip_score",
]
LONG_COLUMNS = [
    "case_key", "loraname", "training_step", "step_kind", "prompt_id", "seed", "timestamp", "prompt", "image",
    "variant", "metric", "value", "error", "raw", "judge", "judge_version", "run_id", "worker", "recorded_at",
]


def metric_order(metrics: Iterable[str]) -> list[str]:
    found = set(metrics)
    return [m for m in RESEARCH_METRICS if m in found] + sorted(found - set(RESEARCH_METRICS))


def wide_frame(rows: list[ScoreRow]) -> pd.DataFrame:
    """One row per case; metric values as columns (empty where a judge errored)."""
    metrics = metric_order(row.metric for row in rows)
    cases: dict[str, dict[str, object]] = {}
    for row in sorted(rows, key=case_order):
        record = cases.setdefault(
            row.case_key,
            {
                "loraname": row.loraname,
                "training_step": step_label(row.training_step, row.step_kind),
                "prompt_id": row.prompt_id,
                "timestamp": row.timestamp or "",
                "seed": "" if row.seed is None else row.seed,
                "image": row.image,
                "run_id": row.run_id,
            },
        )
        record[row.metric] = row.value
    return pd.DataFrame(list(cases.values()), columns=ID_COLUMNS + metrics + TAIL_COLUMNS)


def long_frame(rows: list[ScoreRow]) -> pd.DataFrame:
    records = []
    for row in rows:
        record = {column: getattr(row, column) for column in LONG_COLUMNS}
        record["training_step"] = step_label(row.training_step, row.step_kind)
        record["raw"] = json.dumps(row.raw, sort_keys=True)
        records.append(record)
    return pd.DataFrame(records, columns=LONG_COLUMNS)


def write_score_csvs(rows: list[ScoreRow], out_dir: Path) -> tuple[Path, Path]:
    """Write `scores.csv` (wide) and `scores_long.csv` atomically (a reader never sees half a file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "scores.csv", out_dir / "scores_long.csv"
    for frame, path in zip((wide_frame(rows), long_frame(rows)), paths):
        tmp = path.with_suffix(".csv.tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
    return paths
