"""The score store: append-only JSON lines per writer, merged on read, torn lines survived, newest wins."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lora_harness.core.cases import EvalCase, Prompt
from lora_harness.judges.base import Score
from lora_harness.run.store import SCORES_DIRNAME, ScoreRow, ScoreStore, latest_rows, read_rows


def make_case(step: int = 200, prompt: str = "00", seed: int | None = None, lora: str = "lora") -> EvalCase:
    return EvalCase(
        loraname=lora,
        training_step=step,
        prompt=Prompt(prompt_id=prompt, text=f"<tok> prompt {prompt}"),
        image_path=Path(f"/samples/{lora}_{step:06d}_{prompt}_20250106170134.png"),
        timestamp="20250106170134",
        seed=seed,
        variant="v",
    )


def make_row(case: EvalCase, metric: str = "spectral_score", value: float | None = 0.5, *, run_id: str = "run1",
             worker: str = "main", error: str | None = None, raw: dict | None = None) -> ScoreRow:
    score = Score(metric, value, raw or {"hf_ratio": 0.01}, error)
    return ScoreRow.of(case, score, judge="image_stats", judge_version="1", run_id=run_id, worker=worker)


def test_row_of_copies_the_case_identity():
    row = make_row(make_case(800, "02", seed=42), value=0.75)
    assert row.case_key == "lora-step000800-p02-s42"
    assert row.checkpoint_key == "lora-step000800"
    assert (row.loraname, row.training_step, row.step_kind, row.prompt_id, row.seed) == ("lora", 800, "step", "02", 42)
    assert row.prompt == "<tok> prompt 02"
    assert row.image == "/samples/lora_000800_02_20250106170134.png"
    assert (row.metric, row.value, row.raw, row.error) == ("spectral_score", 0.75, {"hf_ratio": 0.01}, None)
    assert (row.judge, row.judge_version, row.run_id, row.worker) == ("image_stats", "1", "run1", "main")
    assert row.recorded_at > 0


def test_append_and_read_round_trip(tmp_path):
    store = ScoreStore(tmp_path, run_id="run1", worker="gw0")
    rows = [
        make_row(make_case(200, "00"), "spectral_score", 0.9, worker="gw0"),
        make_row(make_case(200, "00"), "magnitude_score", None, worker="gw0", error="image_stats: boom"),
        make_row(make_case(400, "01", seed=3), "spectral_score", 1.0, worker="gw0", raw={"nested": {"a": [1, 2]}}),
    ]
    store.append(rows[:2])
    store.append(rows[2:])
    assert store.path == tmp_path / SCORES_DIRNAME / "run1.gw0.jsonl"
    assert store.rows() == rows
    assert list(read_rows(tmp_path)) == rows
    lines = store.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[1])["error"] == "image_stats: boom"


def test_append_nothing_creates_no_file(tmp_path):
    store = ScoreStore(tmp_path, run_id="run1")
    store.append([])
    assert not (tmp_path / SCORES_DIRNAME).exists()
    assert store.rows() == []


def test_reading_a_folder_without_scores_gives_nothing(tmp_path):
    assert list(read_rows(tmp_path / "never-written")) == []


def test_numpy_values_in_raw_are_stored(tmp_path):
    np = pytest.importorskip("numpy")
    store = ScoreStore(tmp_path, run_id="run1")
    store.append([make_row(make_case(), raw={"f32": np.float32(0.25), "f64": np.float64(0.5), "i": np.int64(3)})])
    [row] = store.rows()
    assert row.raw["f64"] == 0.5  # np.float64 is a float
    assert float(row.raw["f32"]) == 0.25 and int(row.raw["i"]) == 3  # others are kept as text, not lost


def test_rows_of_several_workers_merge(tmp_path):
    stores = [ScoreStore(tmp_path, run_id="run1", worker=w) for w in ("gw0", "gw1", "main")]
    written = []
    for index, store in enumerate(stores):
        rows = [make_row(make_case(200 * (index + 1), p), worker=store.worker) for p in ("00", "01")]
        store.append(rows)
        written.extend(rows)
    merged = list(read_rows(tmp_path))
    assert len(merged) == 6
    assert sorted(merged, key=lambda r: r.case_key) == sorted(written, key=lambda r: r.case_key)
    assert {row.worker for row in merged} == {"gw0", "gw1", "main"}
    # Any store of the run reads every writer's rows.
    assert len(stores[0].rows()) == 6


def test_read_one_run_only(tmp_path):
    ScoreStore(tmp_path, run_id="run1").append([make_row(make_case(), run_id="run1")])
    ScoreStore(tmp_path, run_id="run2", worker="gw0").append([make_row(make_case(), run_id="run2", value=0.1)])
    assert [r.run_id for r in read_rows(tmp_path, run_id="run2")] == ["run2"]
    assert sorted(r.run_id for r in read_rows(tmp_path)) == ["run1", "run2"]


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    store = ScoreStore(tmp_path, run_id="run1")
    good = [make_row(make_case(200, p)) for p in ("00", "01")]
    store.append(good)
    complete = json.dumps({"case_key": "x", "metric": "spectral_score", "value": 0.3})  # a killed writer
    with open(store.path, "a", encoding="utf-8") as handle:
        handle.write(complete[: len(complete) // 2])
    with pytest.warns(UserWarning, match=r"run1\.main\.jsonl:3: skipping an unreadable score row"):
        rows = store.rows()
    assert rows == good


def test_row_with_unknown_fields_is_skipped_not_fatal(tmp_path):
    store = ScoreStore(tmp_path, run_id="run1")
    good = make_row(make_case())
    store.append([good])
    with open(store.path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"not": "a score row"}) + "\n\n")
    with pytest.warns(UserWarning, match=":2: skipping"):
        assert store.rows() == [good]


def test_a_second_writer_is_unaffected_by_a_torn_file(tmp_path):
    torn = ScoreStore(tmp_path, run_id="run1", worker="gw0")
    torn.append([make_row(make_case(200))])
    with open(torn.path, "a", encoding="utf-8") as handle:
        handle.write('{"case_key": "lora-st')
    ScoreStore(tmp_path, run_id="run1", worker="gw1").append([make_row(make_case(400), worker="gw1")])
    with pytest.warns(UserWarning):
        rows = list(read_rows(tmp_path))
    assert sorted(r.case_key for r in rows) == ["lora-step000200-p00", "lora-step000400-p00"]


def test_latest_rows_keeps_the_newest_per_case_and_metric():
    case_a, case_b = make_case(200, "00"), make_case(200, "01")
    old_a = replace(make_row(case_a, value=0.1), recorded_at=100.0)
    new_a = replace(make_row(case_a, value=0.9), recorded_at=200.0)
    other_metric = replace(make_row(case_a, "magnitude_score", 0.4), recorded_at=50.0)
    only_b = replace(make_row(case_b, value=0.5), recorded_at=10.0)
    latest = latest_rows([new_a, old_a, other_metric, only_b])  # order on disk does not matter
    by_key = {(r.case_key, r.metric): r for r in latest}
    assert len(latest) == 3
    assert by_key[(case_a.key, "spectral_score")].value == 0.9
    assert by_key[(case_a.key, "magnitude_score")].value == 0.4
    assert by_key[(case_b.key, "spectral_score")].value == 0.5


def test_latest_rows_on_a_tie_takes_the_later_row():
    case = make_case()
    first = replace(make_row(case, value=0.1), recorded_at=5.0)
    second = replace(make_row(case, value=0.2), recorded_at=5.0)
    assert [r.value for r in latest_rows([first, second])] == [0.2]


def test_rerun_appends_and_latest_supersedes(tmp_path):
    case = make_case()
    ScoreStore(tmp_path, run_id="run1").append([replace(make_row(case, value=0.2), recorded_at=1.0)])
    ScoreStore(tmp_path, run_id="run2").append([replace(make_row(case, value=0.8, run_id="run2"), recorded_at=2.0)])
    all_rows = list(read_rows(tmp_path))
    assert len(all_rows) == 2  # history stays on disk
    [latest] = latest_rows(all_rows)
    assert (latest.value, latest.run_id) == (0.8, "run2")


def test_non_finite_values_keep_the_row_and_the_batch(tmp_path):
    """Rows are strict JSON; a NaN from one judge must not cost the batch its other scores."""
    store = ScoreStore(tmp_path, run_id="run1")
    good = make_row(make_case(200, "00"), value=0.5)
    nan_value = make_row(make_case(200, "01"), value=float("nan"))
    inf_raw = make_row(make_case(200, "02"), value=0.7, raw={"ratio": float("inf"), "series": [1.0, float("nan")]})
    store.append([good, nan_value, inf_raw])
    rows = {row.case_key: row for row in store.rows()}
    assert len(rows) == 3
    assert rows[good.case_key] == good
    flagged = rows[nan_value.case_key]
    assert flagged.value is None
    assert flagged.error == "image_stats returned a non-finite value (nan)"
    assert rows[inf_raw.case_key].value == 0.7
    assert rows[inf_raw.case_key].raw == {"ratio": None, "series": [1.0, None]}
    assert "NaN" not in store.path.read_text() and "Infinity" not in store.path.read_text()


def test_a_judge_error_is_kept_over_the_non_finite_note():
    row = make_row(make_case(), value=float("nan"), error="llm: refused")
    assert (row.value, row.error) == (None, "llm: refused")
