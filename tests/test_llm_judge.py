"""The `llm_rubric` and `llm_pairwise` judges against a real local HTTP server speaking the OpenAI API, through
the real `openai` client and the harness's crash-safe store: values, modes, repeats, concurrency, the cache,
and every injected fault, asserting what the store recorded (one row per score, none lost, none doubled)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from llm_server import FakeOpenAIServer, llm_server  # noqa: F401  (fixture)
from llm_suite import LORA, METRICS, assert_one_row_per_score, level, store_rows, write_suite
from lora_harness.core.cases import EvalCase, Prompt
from lora_harness.core.config import load_config
from lora_harness.run.harness import Harness
from lora_harness.judges.base import JudgeContext, create_judge
from lora_harness.judges.llm import LlmPairwiseJudge, LlmRubricJudge
from lora_harness.judges.llm.pairwise import plan_comparison
from lora_harness.judges.model_loading import ModelUnavailable


def run_harness(config: Path, run_id: str = "r1") -> tuple[Harness, list[dict]]:
    harness = Harness(load_config(config), run_id=run_id)
    for case in harness.cases:
        harness.score(case)
    return harness, [r for r in store_rows(harness.config.run_dir) if r["run_id"] == run_id]


def expected(case_key: str, metric: str) -> float:
    """What the server answers for a suite image: its brightness (person present: 1 above 0.05)."""
    step = int(case_key.split("-step")[1][:6])
    prompt = int(case_key.split("-p")[-1][:2])
    brightness = level(step, prompt) / 255
    return (1.0 if brightness > 0.05 else 0.0) if metric == "eval_person_llm" else brightness


def values_ok(rows: dict) -> None:
    for (case, metric), row in rows.items():
        assert row["error"] is None, row["error"]
        assert row["value"] == pytest.approx(expected(case, metric), abs=0.01), (case, metric)


# --- values, modes, raw ------------------------------------------------------------------------------------


def test_combined_mode_one_call_per_image_with_justification_and_tokens(tmp_path, llm_server):
    _, rows = run_harness(write_suite(tmp_path, base_url=llm_server.url))
    keyed = assert_one_row_per_score(rows, cases=4)
    values_ok(keyed)
    assert llm_server.call_count == 4
    assert {c.keys for c in llm_server.calls} == {
        ("person_present", "same_person", "prompt_adherence", "prompt_adherence_scene", "image_quality",
         "limb_quality", "artifacts")}
    raw = keyed[(f"{LORA}-step000100-p01-s42", "eval_limb_quality_llm")]["raw"]
    assert raw["justification"].startswith("limb_quality: brightness")
    assert raw["mode"] == "combined" and raw["asked_with"] == 7 and raw["samples"] == [raw["mean"]]
    [call] = raw["calls"]
    assert call["prompt_tokens"] == 100 + 255 * 3 and call["completion_tokens"] > 0 and call["cached"] is False
    same_call = {r["raw"]["calls"][0]["id"] for (case, _), r in keyed.items() if case.endswith("p01-s42")}
    assert len(same_call) == 1  # one call answered all seven criteria of the image


def test_per_criterion_mode_asks_seven_calls_and_agrees_with_combined(tmp_path, llm_server):
    _, rows = run_harness(write_suite(tmp_path, base_url=llm_server.url, options='mode = "per_criterion"'))
    values_ok(assert_one_row_per_score(rows, cases=4))
    assert llm_server.call_count == 4 * 7
    assert sorted({c.schema_name for c in llm_server.calls}) == sorted(
        f"criterion_{k}" for k in ("person_present", "same_person", "prompt_adherence", "prompt_adherence_scene",
                                   "image_quality", "limb_quality", "artifacts"))


def test_criteria_subset_and_missing_reference(tmp_path, llm_server):
    config = write_suite(tmp_path, base_url=llm_server.url, references=False,
                         options='criteria = ["eval_person_llm", "eval_same_person_llm", "artifacts"]')
    _, rows = run_harness(config)
    keyed = assert_one_row_per_score(rows, cases=4, metrics=["eval_person_llm", "eval_same_person_llm", "eval_artifacts_quality_llm"])
    assert len(keyed) == 12
    for (case, metric), row in keyed.items():
        if metric == "eval_same_person_llm":
            assert row["value"] is None and "needs a reference photo" in row["error"] and "person.references" in row["error"]
        else:
            assert row["value"] == pytest.approx(expected(case, metric), abs=0.01)
    assert {c.keys for c in llm_server.calls} == {("person_present", "artifacts")}


def test_repeats_record_every_sample_mean_and_std(tmp_path, llm_server):
    config = write_suite(tmp_path, base_url=llm_server.url, prompts=2, options="repeats = 3, temperature = 0.8")
    _, rows = run_harness(config)
    keyed = assert_one_row_per_score(rows, cases=2)
    assert llm_server.call_count == 2 * 3
    assert sorted({c.fingerprint for c in llm_server.calls}).__len__() == 6  # seeds differ per repeat
    raw = keyed[(f"{LORA}-step000100-p00-s42", "eval_image_quality_llm")]["raw"]
    assert len(raw["samples"]) == 3 and len(raw["justifications"]) == 3 and len(raw["calls"]) == 3
    assert raw["mean"] == pytest.approx(np.mean(raw["samples"])) and raw["std"] == pytest.approx(np.std(raw["samples"], ddof=1))
    assert raw["std"] > 0  # the server's answers vary with the seed at temperature > 0
    assert keyed[(f"{LORA}-step000100-p00-s42", "eval_image_quality_llm")]["value"] == pytest.approx(raw["mean"])


# --- concurrency, limits, cache ----------------------------------------------------------------------------


def test_calls_run_concurrently_up_to_max_in_flight(tmp_path):
    with FakeOpenAIServer(latency=0.15) as server:
        config = write_suite(tmp_path, base_url=server.url, steps=(100, 200, 300), options="max_in_flight = 4")
        start = time.perf_counter()
        _, rows = run_harness(config)
        elapsed = time.perf_counter() - start
    assert_one_row_per_score(rows, cases=12)
    assert server.max_concurrent == 4
    assert elapsed < 12 * 0.15  # far from sequential (1.8 s); three checkpoints of four calls each


def test_limits_are_the_runs_totals_shared_under_xdist(llm_server, tmp_path):
    from lora_harness.judges.llm.runwide import SharedRateLimiter

    judge = LlmRubricJudge(base_url=llm_server.url, max_in_flight=16, requests_per_minute=600, tokens_per_minute=60000)
    runner = judge.runner(JudgeContext(worker_count=4, cache_dir=tmp_path, run_id="r1"))
    assert runner.settings.max_in_flight == 16 and runner.slots.count == 16  # not divided: slots are shared
    assert runner.slots.folder == tmp_path / "llm-run" / "llm_rubric"
    assert isinstance(runner.limiter, SharedRateLimiter)
    assert runner.limiter.requests.rate == pytest.approx(600 / 60) and runner.limiter.tokens.rate == pytest.approx(60000 / 60)
    assert runner.fatal.path == tmp_path / "llm-run" / "llm_rubric" / "fatal-r1.txt"
    alone = LlmRubricJudge(base_url=llm_server.url).runner(JudgeContext(cache_dir=tmp_path))
    assert alone.slots.folder is None and alone.fatal.path is None  # one process: nothing to share


def test_rerun_answers_everything_from_the_cache(tmp_path, llm_server):
    config = write_suite(tmp_path, base_url=llm_server.url, steps=(100, 200))
    _, first = run_harness(config, "r1")
    calls = llm_server.call_count
    assert calls == 8
    _, second = run_harness(config, "r2")
    assert llm_server.call_count == calls  # zero calls
    a, b = assert_one_row_per_score(first, cases=8), assert_one_row_per_score(second, cases=8)
    assert {k: r["value"] for k, r in a.items()} == {k: r["value"] for k, r in b.items()}
    assert all(r["raw"]["cached"] for r in b.values()) and not any(r["raw"]["cached"] for r in a.values())
    cache_files = list((tmp_path / "reports" / "llm" / "cache" / "llm").rglob("*.json"))
    assert len(cache_files) == 8


def test_changing_the_model_or_prompt_misses_the_cache(tmp_path, llm_server):
    config = write_suite(tmp_path, base_url=llm_server.url, prompts=1)
    run_harness(config, "r1")
    config.write_text(config.read_text().replace("timeout = 5.0", 'timeout = 5.0, model = "other-model"'))
    run_harness(config, "r2")
    assert llm_server.call_count == 2
    prompts = tmp_path / "samples" / LORA / "sample_prompts.txt"
    prompts.write_text("<phigep> portrait photo, smiling --d 42\n")
    run_harness(config, "r3")
    assert llm_server.call_count == 3


# --- faults: retried, then recorded; never lost, never doubled ---------------------------------------------


def test_429_honours_retry_after_and_loses_nothing(tmp_path, llm_server):
    llm_server.add_fault("429", times=2, retry_after="0.3")
    _, rows = run_harness(write_suite(tmp_path, base_url=llm_server.url, options="max_in_flight = 2"))
    values_ok(assert_one_row_per_score(rows, cases=4))
    assert [c.status for c in llm_server.calls].count(429) == 2 and llm_server.call_count == 6
    for limited in (c for c in llm_server.calls if c.status == 429):
        retry = next(c for c in llm_server.calls if c.index > limited.index and c.fingerprint == limited.fingerprint)
        assert retry.started - limited.started >= 0.28, "Retry-After not honoured"


def test_500s_are_retried_with_backoff(tmp_path, llm_server):
    llm_server.add_fault("500", times=3)
    _, rows = run_harness(write_suite(tmp_path, base_url=llm_server.url))
    keyed = assert_one_row_per_score(rows, cases=4)
    values_ok(keyed)
    assert llm_server.call_count == 7
    assert sum(r["raw"]["calls"][0]["retries"] for (c, m), r in keyed.items() if m == "eval_person_llm") == 3


def test_timeout_then_retry_records_one_score(tmp_path, llm_server):
    config = write_suite(tmp_path, base_url=llm_server.url, prompts=2)
    config.write_text(config.read_text().replace("timeout = 5.0", "timeout = 0.4"))
    llm_server.add_fault("delay", delay=1.5)
    _, rows = run_harness(config)
    keyed = assert_one_row_per_score(rows, cases=2)
    values_ok(keyed)
    assert sorted(r["raw"]["calls"][0]["retries"] for (c, m), r in keyed.items() if m == "eval_person_llm") == [0, 1]


@pytest.mark.parametrize("fault", ["malformed", "out_of_range", "missing_key", "refusal", "truncated"])
def test_an_unusable_answer_is_asked_again(tmp_path, llm_server, fault):
    llm_server.add_fault(fault, times=1)
    _, rows = run_harness(write_suite(tmp_path, base_url=llm_server.url))
    keyed = assert_one_row_per_score(rows, cases=4)
    values_ok(keyed)
    assert llm_server.call_count == 5
    asked_twice = [r for (c, m), r in keyed.items() if m == "eval_person_llm" and len(r["raw"]["calls"]) == 2]
    assert len(asked_twice) == 1 and [c["valid"] for c in asked_twice[0]["raw"]["calls"]] == [False, True]


@pytest.mark.parametrize(
    "fault, message",
    [
        ("out_of_range", "score: Input should be less than or equal to 1 (got 1.7)"),
        ("malformed", "answer is not valid JSON"),
        ("refusal", "model refused: I'm sorry, I can't help with that."),
        ("truncated", "answer cut off at max_tokens = 1500; raise max_tokens"),
        ("500", "gave up after 3 attempts (InternalServerError 500"),
    ],
)
def test_a_persistent_fault_becomes_a_judge_error_never_a_score(tmp_path, llm_server, fault, message):
    dark = lambda request: "portrait photo" in request.text  # noqa: E731  (prompt 00 of every checkpoint)
    llm_server.add_fault(fault, times=100, match=dark)
    _, rows = run_harness(write_suite(tmp_path, base_url=llm_server.url, options="max_retries = 2, answer_retries = 2"))
    keyed = assert_one_row_per_score(rows, cases=4)
    broken = f"{LORA}-step000100-p00-s42"
    for (case, metric), row in keyed.items():
        if case == broken:
            assert row["value"] is None and message in row["error"], row["error"]
            assert row["error"].startswith(f"llm_rubric: {metric}: ")
        else:
            assert row["error"] is None and row["value"] == pytest.approx(expected(case, metric), abs=0.01)
    assert sum(1 for c in llm_server.calls if c.fault == fault) == 3  # 1 + 2 retries (transient or answer)


def test_authentication_failure_stops_the_batch_after_one_call(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key")
    with FakeOpenAIServer(expected_key="sk-right-key") as server:
        _, rows = run_harness(write_suite(tmp_path, base_url=server.url, options="max_in_flight = 1"))
    keyed = assert_one_row_per_score(rows, cases=4)
    assert server.call_count == 1
    errors = {r["error"] for r in keyed.values()}
    assert all(r["value"] is None for r in keyed.values())
    assert any("authentication failed" in e and "check OPENAI_API_KEY" in e for e in errors)
    assert any("not sent: an earlier request of this run failed" in e for e in errors)
    assert not any("sk-wrong-key" in e for e in errors)


def test_a_server_quoting_the_key_back_is_redacted(tmp_path, monkeypatch, llm_server):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-123456")
    llm_server.add_fault("echo_auth", times=100)
    _, rows = run_harness(write_suite(tmp_path, base_url=llm_server.url, prompts=1))
    keyed = assert_one_row_per_score(rows, cases=1)
    for row in keyed.values():
        assert "Authorization: Bearer ***" in row["error"] and "SECRET" not in row["error"]


# --- availability and construction -------------------------------------------------------------------------


def test_no_endpoint_means_unavailable_not_failed(tmp_path, monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    judge = create_judge("llm_rubric", {})
    assert "set OPENAI_API_KEY" in judge.unavailable()
    case = EvalCase("l", 1, Prompt("00", "p"), Path("x.png"))
    with pytest.raises(ModelUnavailable, match="llm_rubric: no LLM endpoint configured"):
        judge.judge_batch([(case, np.zeros((8, 8, 3), np.uint8))], JudgeContext())


def test_a_bad_image_errors_only_its_own_scores(llm_server, tmp_path):
    judge = LlmRubricJudge(base_url=llm_server.url, criteria=["eval_person_llm"])
    cases = [EvalCase("l", 1, Prompt(f"0{i}", "p"), Path(f"{i}.png")) for i in range(2)]
    results = judge.judge_batch([(cases[0], np.zeros((8, 8), np.uint8)), (cases[1], np.full((8, 8, 3), 255, np.uint8))],
                                JudgeContext(cache_dir=tmp_path))
    assert "expected an RGB uint8 array" in results[0][0].error and results[1][0].value == 1.0
    assert llm_server.call_count == 1


def test_a_cache_that_cannot_be_written_keeps_the_scores_and_warns(llm_server, tmp_path, monkeypatch):
    from lora_harness.judges.llm import cache as llm_cache

    def disk_full(self, key, value):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(llm_cache.AnswerCache, "put", disk_full)
    judge = LlmRubricJudge(base_url=llm_server.url, criteria=["eval_person_llm"])
    items = [(EvalCase("l", 1, Prompt(f"0{i}", "p"), Path(f"{i}.png")), np.full((8, 8, 3), 250 + i, np.uint8)) for i in range(3)]
    with pytest.warns(UserWarning, match=r"3 of 3 answers could not be written to the cache .*No space left"):
        results = judge.judge_batch(items, JudgeContext(cache_dir=tmp_path))
    assert [r[0].value for r in results] == [1.0, 1.0, 1.0] and not any(r[0].error for r in results)
    monkeypatch.undo()
    judge.judge_batch(items, JudgeContext(cache_dir=tmp_path))
    assert llm_server.call_count == 6  # nothing was cached, so the rerun asks again (and now caches)
    judge.judge_batch(items, JudgeContext(cache_dir=tmp_path))
    assert llm_server.call_count == 6


def test_edge_map_goes_as_a_lossless_png_unless_jpeg_is_asked_for(llm_server, tmp_path):
    from lora_harness.judges.llm.common import EncodedImage

    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[16:48, 16:48] = 255
    png = EncodedImage(pixels, LlmRubricJudge(base_url=llm_server.url).options).edges_url()
    jpeg_judge = LlmRubricJudge(base_url=llm_server.url, edges_format="jpeg")
    jpeg = EncodedImage(pixels, jpeg_judge.options).edges_url()
    assert png.startswith("data:image/png;base64,") and jpeg.startswith("data:image/jpeg;base64,")
    assert LlmRubricJudge(base_url=llm_server.url).request_fields(0, "d") != jpeg_judge.request_fields(0, "d")  # own cache entries


# --- pairwise ----------------------------------------------------------------------------------------------


def test_pairwise_asks_both_orders_and_cancels_position_bias(tmp_path):
    with FakeOpenAIServer(position_bias=0.2) as server:
        judge = LlmPairwiseJudge(base_url=server.url, baseline="base", candidate="cand")
        cases = [EvalCase(name, 100, Prompt("00", "<phigep> in a park"), Path(f"{name}.png"), seed=1) for name in ("base", "cand")]
        comparison = plan_comparison("llm_pairwise", "base", "cand", 0.1, cases)
        dark, bright = np.full((16, 16, 3), 64, np.uint8), np.full((16, 16, 3), 128, np.uint8)
        context = JudgeContext(reference_images=[np.full((16, 16, 3), 200, np.uint8)], cache_dir=tmp_path)
        [[score]] = judge.compare_batch([(cases[0], dark, cases[1], bright)], context)
        assert server.call_count == 2
        truth = 0.5 + (128 - 64) / 255
        assert score.value == pytest.approx(truth, abs=0.01)  # each order alone is off by the bias of 0.2
        assert [a["preference"] for a in score.raw["answers"]] == pytest.approx([truth - 0.2, 1 - truth - 0.2], abs=0.01)
        assert score.raw["position_bias"] == pytest.approx(0.2, abs=0.01)
        assert comparison.pairs == ((cases[0], cases[1]),)
        judge.compare_batch([(cases[0], dark, cases[1], bright)], context)
        assert server.call_count == 2  # cached


def test_pairwise_selectors_explain_what_is_wrong():
    cases = [EvalCase("base", step, Prompt("00", "p"), Path("x.png"), seed=1) for step in (100, 200)]
    cases.append(EvalCase("cand", 200, Prompt("00", "q"), Path("y.png"), seed=1))
    assert plan_comparison("j", "base", "base@100", 0.1, cases[:2]).baseline.training_step == 200
    with pytest.raises(ValueError, match="no LoRA or source named 'nope'; known: base, cand"):
        plan_comparison("j", "nope", "cand", 0.1, cases)
    with pytest.raises(ValueError, match=r"base has no step 300; steps: \[100, 200\]"):
        plan_comparison("j", "base@300", "cand", 0.1, cases)
    with pytest.raises(ValueError, match="share no image with the same prompt and seed"):
        plan_comparison("j", "base", "cand", 0.1, cases)
    with pytest.raises(ValueError, match="are the same checkpoint"):
        plan_comparison("j", "base", "base@latest", 0.1, cases)


def test_comparison_verdict_uses_the_mean_and_margin_and_fails_on_judge_errors():
    from lora_harness.core.cases import Checkpoint
    from lora_harness.judges.base import Score
    from lora_harness.judges.llm.pairwise import Comparison, ComparisonResult

    cases = [(EvalCase("base", 1, Prompt(f"0{i}", f"p{i}"), Path("b.png")), EvalCase("cand", 1, Prompt(f"0{i}", f"p{i}"), Path("c.png")))
             for i in range(3)]
    comparison = Comparison("llm_pairwise", Checkpoint("base", 1), Checkpoint("cand", 1), tuple(cases), ("cand-x",), 0.1)
    ok = ComparisonResult(comparison, tuple(Score("pairwise_preference", v) for v in (0.6, 0.61, 0.62)))
    assert ok.decision == "pass" and ok.not_worse  # the whole interval is above 0.4
    ok.check()
    undecided = ComparisonResult(comparison, tuple(Score("pairwise_preference", v) for v in (0.3, 0.45, 0.5)))
    assert undecided.decision == "inconclusive" and not undecided.not_worse  # mean 0.4167, 3 pairs cannot tell
    with pytest.raises(AssertionError, match=r"(?s)INCONCLUSIVE.*0.5 - margin 0.1: INCONCLUSIVE"):
        undecided.check()
    worse = ComparisonResult(comparison, tuple(Score("pairwise_preference", v) for v in (0.1, 0.12, 0.11)))
    assert worse.decision == "fail"
    with pytest.raises(AssertionError, match=r"(?s)mean preference for the candidate = 0.110 .*minimum 0.400 = 0.5 - margin 0.1: WORSE"):
        worse.check()
    assert "no baseline image with the same prompt and seed for: cand-x" in worse.describe()
    broken = ComparisonResult(comparison, (Score("pairwise_preference", 0.9), Score("pairwise_preference", None, error="llm_pairwise: boom"), Score("pairwise_preference", 0.9)))
    assert broken.decision == "error" and "judge error: llm_pairwise: boom" in broken.describe()
