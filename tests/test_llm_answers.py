"""What counts as an answer, and which answers are asked again: strict score types, valid answers kept across
re-asks, and cache keys that hold only the rubric texts of the criteria asked together (issue 15)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llm_server import llm_server  # noqa: F401  (fixture)
from llm_suite import LORA, assert_one_row_per_score, level, store_rows, write_suite
from lora_harness.core.config import load_config
from lora_harness.run.harness import Harness
from lora_harness.judges.llm import rubrics
from lora_harness.judges.llm.schemas import parse_criteria, parse_pair


def run_harness(config: Path, run_id: str = "r1") -> list[dict]:
    harness = Harness(load_config(config), run_id=run_id)
    for case in harness.cases:
        harness.score(case)
    return [r for r in store_rows(harness.config.run_dir) if r["run_id"] == run_id]


# --- strict parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["true", "false", '"0.7"', '"1"', "null", "[0.5]", '{"v": 0.5}'])
def test_a_score_must_be_a_json_number(bad):
    content = f'{{"a": {{"textual_justification": "ok", "score": {bad}}}, "b": {{"textual_justification": "x", "score": 1}}}}'
    answers, problems = parse_criteria(content, ("a", "b"))
    assert set(answers) == {"b"} and answers["b"].score == 1.0  # an integer is a JSON number
    assert "a" in problems and "valid number" in problems["a"], problems
    assert parse_pair('{"textual_justification": "x", "preference": true}')[1].startswith("invalid answer")
    assert parse_pair('{"textual_justification": "x", "preference": "0.2"}')[1].startswith("invalid answer")
    assert parse_criteria('{"textual_justification": 3, "score": 0.5}', ("a",))[1]["a"].startswith("invalid answer")


@pytest.mark.parametrize("value", [True, "0.7"])
def test_a_non_number_score_from_the_server_is_asked_again_then_an_error(tmp_path, llm_server, value):
    dark = lambda request: "portrait photo" in request.text  # noqa: E731  (prompt 00)
    llm_server.add_fault("bad_score", times=100, match=dark, value=value)
    rows = run_harness(write_suite(tmp_path, base_url=llm_server.url, prompts=2, options="answer_retries = 2"))
    keyed = assert_one_row_per_score(rows, cases=2)
    broken = f"{LORA}-step000100-p00-s42"
    for (case, metric), row in keyed.items():
        if case == broken:
            assert row["value"] is None, (metric, row["value"])
            assert "Input should be a valid number" in row["error"] and f"got {value!r}" in row["error"], row["error"]
            assert "(asked 3 times)" in row["error"]
        else:
            want = 1.0 if metric == "eval_person_llm" else level(100, 1) / 255
            assert row["error"] is None and row["value"] == pytest.approx(want, abs=0.01), metric
    assert sum(1 for c in llm_server.calls if c.fault == "bad_score") == 3


def test_a_valid_answer_from_an_earlier_attempt_is_kept_when_a_reask_fixes_the_rest(tmp_path, llm_server):
    # attempt 1 spoils `artifacts` (a string), attempt 2 spoils `person_present` (a boolean): together they
    # answer every criterion validly, so no third call and no error, though neither attempt alone was valid.
    llm_server.add_fault("bad_score", times=1, keys=("artifacts",), value="0.7")
    llm_server.add_fault("bad_score", times=1, keys=("person_present",), value=True)
    rows = run_harness(write_suite(tmp_path, base_url=llm_server.url, prompts=1, options="answer_retries = 1"))
    keyed = assert_one_row_per_score(rows, cases=1)
    assert llm_server.call_count == 2
    case = f"{LORA}-step000100-p00-s42"
    for (_, metric), row in keyed.items():
        assert row["error"] is None, row["error"]
        want = 1.0 if metric == "eval_person_llm" else level(100, 0) / 255
        assert row["value"] == pytest.approx(want, abs=0.01), metric
    calls = keyed[(case, "eval_artifacts_quality_llm")]["raw"]["calls"]
    assert [c["valid"] for c in calls] == [False, True]


def test_a_key_left_invalid_by_every_attempt_is_the_only_error(tmp_path, llm_server):
    llm_server.add_fault("bad_score", times=1, keys=("artifacts", "limb_quality"), value=True)
    llm_server.add_fault("bad_score", times=1, keys=("artifacts",), value="1")
    rows = run_harness(write_suite(tmp_path, base_url=llm_server.url, prompts=1, options="answer_retries = 1"))
    keyed = assert_one_row_per_score(rows, cases=1)
    errors = {metric: row["error"] for (_, metric), row in keyed.items() if row["error"]}
    assert list(errors) == ["eval_artifacts_quality_llm"] and "got '1'" in errors["eval_artifacts_quality_llm"]
    assert keyed[(f"{LORA}-step000100-p00-s42", "eval_limb_quality_llm")]["value"] == pytest.approx(level(100, 0) / 255, abs=0.01)


# --- cache keys per criterion group -------------------------------------------------------------------------


def _reworded(monkeypatch, key: str) -> None:
    """Edit one criterion's wording, the way a maintainer would in rubrics.py."""
    changed = tuple(dataclasses.replace(c, rubric=c.rubric + " Be strict.") if c.key == key else c for c in rubrics.CRITERIA)
    monkeypatch.setattr(rubrics, "CRITERIA", changed)
    monkeypatch.setattr(rubrics, "CRITERIA_BY_KEY", {c.key: c for c in changed})
    monkeypatch.setattr(rubrics, "CRITERIA_BY_METRIC", {c.metric: c for c in changed})


def test_editing_one_criterion_reasks_only_that_criterion_per_criterion(tmp_path, llm_server, monkeypatch):
    config = write_suite(tmp_path, base_url=llm_server.url, options='mode = "per_criterion"')
    run_harness(config, "r1")
    assert llm_server.call_count == 4 * 7
    _reworded(monkeypatch, "limb_quality")
    rows = run_harness(config, "r2")
    again = llm_server.calls[4 * 7:]
    assert len(again) == 4 and {c.keys for c in again} == {("limb_quality",)}
    assert all("Be strict." in text for text in llm_server.texts[4 * 7:])  # the new wording was sent
    keyed = assert_one_row_per_score(rows, cases=4)
    cached = {m for (_, m), r in keyed.items() if r["raw"]["cached"]}
    assert "eval_limb_quality_llm" not in cached and len(cached) == 6


def test_editing_one_criterion_reasks_the_combined_calls_that_include_it(tmp_path, llm_server, monkeypatch):
    config = write_suite(tmp_path, base_url=llm_server.url, options='criteria = ["eval_person_llm", "artifacts"]')
    run_harness(config, "r1")
    assert llm_server.call_count == 4
    _reworded(monkeypatch, "limb_quality")  # not asked by this judge: its calls stay cached
    run_harness(config, "r2")
    assert llm_server.call_count == 4
    _reworded(monkeypatch, "artifacts")
    run_harness(config, "r3")
    assert llm_server.call_count == 8


def test_group_digest_covers_only_the_group_and_every_text_it_sends():
    by_key = rubrics.CRITERIA_BY_KEY
    a = rubrics.group_digest((by_key["person_present"],))
    assert a == rubrics.group_digest((by_key["person_present"],))
    assert a != rubrics.group_digest((by_key["artifacts"],))
    changed = dataclasses.replace(by_key["person_present"], title="someone there")
    assert a != rubrics.group_digest((changed,))
    assert rubrics.group_digest((by_key["artifacts"], by_key["person_present"])) != rubrics.group_digest((by_key["artifacts"],))
    assert len(rubrics.pairwise_digest()) == 16
