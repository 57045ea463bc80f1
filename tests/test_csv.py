"""CSV in the study's wide layout and one row per score; the study's own CSVs load with our reader."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from lora_harness.core.cases import EvalCase, Prompt
from lora_harness.judges.base import Score
from lora_harness.report.csv import (
    ID_COLUMNS,
    LONG_COLUMNS,
    RESEARCH_METRICS,
    ScoresCsvError,
    long_frame,
    metric_columns,
    metric_order,
    read_scores_csv,
    wide_frame,
    write_score_csvs,
)
from lora_harness.run.store import ScoreRow

SEED_RESULTS = Path("/work/shared/reference/seed_results")


def row(step: int, prompt: str, metric: str, value: float | None, *, seed: int | None = None, kind: str = "step",
        error: str | None = None, raw: dict | None = None, lora: str = "lora-a") -> ScoreRow:
    case = EvalCase(
        loraname=lora,
        training_step=step,
        step_kind=kind,  # type: ignore[arg-type]
        prompt=Prompt(prompt_id=prompt, text="<tok> portrait"),
        image_path=Path(f"/s/{lora}_{step:06d}_{prompt}_20250106170134.png"),
        timestamp="20250106170134",
        seed=seed,
    )
    return ScoreRow.of(case, Score(metric, value, raw or {}, error), judge="j", judge_version="2", run_id="r1", worker="main")


ROWS = [
    row(200, "00", "spectral_score", 0.9),
    row(200, "00", "magnitude_score", 0.8),
    row(200, "00", "clip_score", 31.5),
    row(200, "01", "spectral_score", 0.7, seed=42),
    row(200, "01", "magnitude_score", None, seed=42, error="j: cannot decode"),
    row(200, "01", "clip_score", 30.0, seed=42),
    row(4, "00", "spectral_score", 0.5, kind="epoch", raw={"hf_ratio": 0.02, "peaks": [1, 2]}),
]


def test_metric_order_puts_the_study_first_then_alphabetical():
    assert metric_order(["zeta", "clip_score", "alpha", "eval_person_llm"]) == [
        "eval_person_llm", "clip_score", "alpha", "zeta",
    ]
    assert metric_order(RESEARCH_METRICS[::-1]) == RESEARCH_METRICS


def test_wide_frame_columns_and_values():
    frame = wide_frame(ROWS)
    assert list(frame.columns) == [
        "loraname", "training_step", "prompt_id", "timestamp",
        "clip_score", "magnitude_score", "spectral_score",
        "seed", "image", "run_id",
    ]
    # sorted by LoRA, step kind (epochs first), step, prompt, seed
    assert list(frame["training_step"]) == ["e000004", "000200", "000200"]
    assert list(frame["prompt_id"]) == ["00", "00", "01"]
    epoch, first, second = (frame.iloc[i] for i in range(3))
    assert (first["clip_score"], first["magnitude_score"], first["spectral_score"]) == (31.5, 0.8, 0.9)
    assert pd.isna(second["magnitude_score"])  # the judge errored: empty cell, not 0
    assert second["seed"] == 42 and first["seed"] == ""
    assert pd.isna(epoch["clip_score"])
    assert first["image"] == "/s/lora-a_000200_00_20250106170134.png"
    assert first["run_id"] == "r1"


def test_written_wide_csv_keeps_zero_padded_ids_as_text(tmp_path):
    wide, long = write_score_csvs(ROWS, tmp_path / "out")
    assert (wide.name, long.name) == ("scores.csv", "scores_long.csv")
    header = wide.read_text(encoding="utf-8").splitlines()[0]
    assert header == "loraname,training_step,prompt_id,timestamp,clip_score,magnitude_score,spectral_score,seed,image,run_id"
    assert ",000200,00,20250106170134," in wide.read_text(encoding="utf-8")
    frame = read_scores_csv(wide)
    assert list(frame["training_step"]) == ["e000004", "000200", "000200"]
    assert list(frame["prompt_id"]) == ["00", "00", "01"]
    assert list(frame["timestamp"]) == ["20250106170134"] * 3
    assert metric_columns(frame) == ["clip_score", "magnitude_score", "spectral_score"]
    assert frame["spectral_score"].tolist() == [0.5, 0.9, 0.7]
    assert not list(tmp_path.joinpath("out").glob("*.tmp"))  # written atomically, nothing left over


def test_long_csv_has_one_row_per_score_with_raw_json(tmp_path):
    _, long = write_score_csvs(ROWS, tmp_path)
    frame = pd.read_csv(long, dtype={"training_step": str, "prompt_id": str})
    assert list(frame.columns) == LONG_COLUMNS
    assert len(frame) == len(ROWS)
    epoch = frame[frame["training_step"] == "e000004"].iloc[0]
    assert json.loads(epoch["raw"]) == {"hf_ratio": 0.02, "peaks": [1, 2]}
    assert epoch["step_kind"] == "epoch"
    errored = frame[frame["error"].notna()].iloc[0]
    assert (errored["metric"], errored["error"]) == ("magnitude_score", "j: cannot decode")
    assert pd.isna(errored["value"])
    assert set(frame["judge_version"].astype(str)) == {"2"}
    assert all(json.loads(raw) is not None for raw in frame["raw"])


def test_long_frame_of_no_rows_has_the_columns():
    assert list(long_frame([]).columns) == LONG_COLUMNS
    assert list(wide_frame([]).columns) == ID_COLUMNS + ["seed", "image", "run_id"]


def test_wide_frame_uses_one_row_per_case_even_with_repeated_metrics():
    later = replace(row(200, "00", "spectral_score", 0.1), recorded_at=ROWS[0].recorded_at + 1)
    frame = wide_frame([ROWS[0], later])
    assert len(frame) == 1  # callers pass latest_rows; a repeat overwrites rather than adding a row


# --- reading the study's CSVs ------------------------------------------------------------------------------

RESEARCH_CSVS = sorted(SEED_RESULTS.glob("res_*.csv"))


@pytest.mark.skipif(not RESEARCH_CSVS, reason="research reference CSVs not available")
@pytest.mark.parametrize("path", RESEARCH_CSVS, ids=lambda p: p.name)
def test_every_research_csv_loads(path):
    frame = read_scores_csv(path)
    data_lines = [line for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    assert len(frame) == len(data_lines)
    assert list(frame.columns[:4]) == ID_COLUMNS  # the unnamed index column is dropped
    assert not any(str(c).startswith("Unnamed") for c in frame.columns)
    assert all(isinstance(v, str) and len(v) == 6 and v.isdigit() for v in frame["training_step"])
    assert all(isinstance(v, str) and len(v) == 2 and v.isdigit() for v in frame["prompt_id"])
    assert all(isinstance(v, str) and len(v) == 14 for v in frame["timestamp"])
    metrics = metric_columns(frame)
    assert {"eval_person_llm", "clip_score"} <= set(metrics)
    assert metrics == [c for c in frame.columns if c not in ID_COLUMNS]
    assert all(pd.api.types.is_float_dtype(frame[m]) for m in metrics)
    assert frame["clip_score"].between(0, 100).all()


@pytest.mark.skipif(not (SEED_RESULTS / "res_florence.csv").is_file(), reason="research reference CSVs not available")
def test_research_csv_known_values():
    frame = read_scores_csv(SEED_RESULTS / "res_florence.csv")
    first = frame.iloc[0]
    assert (first["loraname"], first["training_step"], first["prompt_id"], first["timestamp"]) == (
        "personal-lora-fluxdev-florence2", "001800", "01", "20250106170134",
    )
    assert first["eval_limb_quality_llm"] == pytest.approx(0.9)
    assert first["clip_score"] == pytest.approx(32.9526)


def test_missing_required_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,step,score\nlora,000200,0.5\n", encoding="utf-8")
    with pytest.raises(ScoresCsvError) as info:
        read_scores_csv(path)
    message = str(info.value)
    assert str(path) in message
    assert "missing column(s) loraname, training_step, prompt_id" in message
    assert "loraname, training_step, prompt_id, timestamp" in message


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ScoresCsvError, match="not found"):
        read_scores_csv(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ScoresCsvError, match="not a readable CSV") as info:
        read_scores_csv(empty)
    assert str(empty) in str(info.value)
