"""Unit tests of the vision-LLM judge's parts: rubrics, answer schemas, edge maps, encoding, the cache,
rate limits and retries, cost accounting, options and endpoint resolution. No server needed."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_harness.judges.llm import cache as llm_cache
from lora_harness.judges.llm.client import Endpoint, redact, resolve_endpoint
from lora_harness.judges.llm.cost import CallRecord, Prices, summary_lines, totals_by_judge
from lora_harness.judges.llm.edges import canny_thresholds, edge_map, median_grey
from lora_harness.judges.llm.calls import json_body
from lora_harness.judges.llm.encoding import (
    estimated_image_tokens,
    jpeg_data_url,
    one_opencv_thread,
    pixel_hash,
    png_bilevel_data_url,
)
from lora_harness.judges.llm.options import RubricOptions, parse_options
from lora_harness.judges.llm.ratelimit import RateLimiter, RetryPolicy, retry_after_seconds
from lora_harness.judges.llm.rubrics import CRITERIA, images_needed, rubric_messages, select_criteria
from lora_harness.judges.llm.schemas import answer_schema, pair_schema, parse_criteria, parse_pair

SEED_RESULTS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed_results"


# --- rubrics -----------------------------------------------------------------------------------------------


def test_metric_names_are_the_studys_csv_columns():
    csv = SEED_RESULTS / "res_gpt4o.csv"
    if not csv.is_file():
        pytest.skip(f"study CSVs not found at {SEED_RESULTS}")
    columns = set(csv.read_text().splitlines()[0].split(","))
    assert len(CRITERIA) == 7
    assert {c.metric for c in CRITERIA} == {col for col in columns if col.startswith("eval_")}
    assert len({c.key for c in CRITERIA}) == 7


def test_each_criterion_shows_the_images_the_study_used():
    needs = {c.metric: set(c.needs) for c in CRITERIA}
    assert needs["eval_person_llm"] == {"generated"}
    assert needs["eval_same_person_llm"] == {"reference", "generated"}
    for metric in ("eval_image_quality_llm", "eval_limb_quality_llm", "eval_artifacts_quality_llm"):
        assert needs[metric] == {"generated", "edges"}
    assert {c.metric for c in CRITERIA if c.uses_prompt} == {
        "eval_prompt_adherence_llm", "eval_prompt_adherence_llm_simpler_prompt"}
    assert images_needed(CRITERIA) == ("reference", "generated", "edges")


def test_messages_label_each_image_and_carry_prompt_and_trigger():
    urls = {"generated": "data:g", "reference": "data:r", "edges": "data:e"}
    messages = rubric_messages(CRITERIA, urls, prompt="<phigep> in a park", trigger="<phigep>",
                               description="a woman", detail="high")
    parts = messages[1]["content"]
    labels = [p["text"] for p in parts[:-1] if p["type"] == "text"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert images == ["data:r", "data:g", "data:e"] and len(labels) == 3
    assert all(p["image_url"]["detail"] == "high" for p in parts if p["type"] == "image_url")
    text = parts[-1]["text"]
    assert "'<phigep> in a park'" in text and "stands for the person in the reference photo (a woman)" in text
    assert all(f"`{c.key}`" in text for c in CRITERIA)
    single = rubric_messages([CRITERIA[0]], {"generated": "data:g"}, prompt="p", trigger=None, description=None, detail="auto")
    assert [p["type"] for p in single[1]["content"]] == ["text", "image_url", "text"]
    assert "Prompt" not in single[1]["content"][-1]["text"]  # person-present does not use the prompt


def test_select_criteria_by_metric_or_key_keeps_study_order_and_rejects_unknown():
    chosen = select_criteria(["artifacts", "eval_person_llm"])
    assert [c.key for c in chosen] == ["person_present", "artifacts"]
    with pytest.raises(ValueError, match="unknown criterion 'eval_persons_llm'; allowed: eval_person_llm"):
        select_criteria(["eval_persons_llm"])


# --- schemas -----------------------------------------------------------------------------------------------


def test_combined_schema_is_strict_and_has_no_numeric_bounds():
    schema = answer_schema(("person_present", "artifacts"))
    assert schema["required"] == ["person_present", "artifacts"] and schema["additionalProperties"] is False
    inner = schema["properties"]["artifacts"]
    assert inner["required"] == ["textual_justification", "score"]
    assert inner["properties"]["score"] == {"type": "number"}
    assert pair_schema()["required"] == ["textual_justification", "preference"]


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"a": {"textual_justification": "ok", "score": 1.2}, "b": {"textual_justification": "x", "score": 0.3}}',
         "less than or equal to 1"),
        ('{"a": {"textual_justification": "ok", "score": -0.1}, "b": {"textual_justification": "x", "score": 0.3}}',
         "greater than or equal to 0"),
        ('{"a": {"textual_justification": "ok", "score": "high"}, "b": {"textual_justification": "x", "score": 0.3}}',
         "valid number"),
        ('{"b": {"textual_justification": "x", "score": 0.3}}', "answer has no 'a'"),
    ],
)
def test_invalid_criterion_answers_are_problems_not_scores(content, problem):
    answers, problems = parse_criteria(content, ("a", "b"))
    assert set(answers) == {"b"} and answers["b"].score == 0.3
    assert problem in problems["a"]


def test_unparseable_answers_are_problems_for_every_key():
    for content, problem in [('{"a": {"textual', "not valid JSON"), (None, "empty answer"), ("[1, 2]", "not a JSON object")]:
        answers, problems = parse_criteria(content, ("a", "b"))
        assert answers == {} and set(problems) == {"a", "b"} and problem in problems["a"]
    answers, problems = parse_criteria('{"textual_justification": "fine", "score": 0.25}', ("a",))
    assert answers["a"].score == 0.25 and answers["a"].textual_justification == "fine" and problems == {}
    assert parse_criteria('{"textual_justification": "x", "score": NaN}', ("a",))[1]["a"].startswith("invalid answer")
    assert parse_pair('{"textual_justification": "x", "preference": 1.5}')[1].startswith("invalid answer")


# --- edges and encoding ------------------------------------------------------------------------------------


def test_canny_thresholds_follow_the_median_grey_level():
    grey = np.concatenate([np.full(300, 10), np.full(400, 100), np.full(300, 250)]).astype(np.uint8).reshape(10, 100)
    assert median_grey(grey) == float(np.median(grey)) == 100.0
    assert canny_thresholds(grey) == pytest.approx((33.0, 133.0))
    even = np.array([[10, 20]], dtype=np.uint8)
    assert median_grey(even) == 15.0
    bright = np.full((4, 4), 250, dtype=np.uint8)
    assert canny_thresholds(bright) == pytest.approx((82.5, 255.0))


def test_edge_map_marks_the_outline_of_a_square():
    image = np.full((64, 64, 3), 40, dtype=np.uint8)
    image[16:48, 16:48] = 220
    edges = edge_map(image)
    assert edges.shape == (64, 64) and edges.dtype == np.uint8
    assert set(np.unique(edges)) <= {0, 255}
    assert edges[16:48, 14:18].any() and edges[14:18, 16:48].any()  # the square's left and top sides
    assert not edges[24:40, 24:40].any() and not edges[:8, :8].any()  # flat areas have no edges


def test_jpeg_data_url_respects_max_side_and_decodes():
    image = np.zeros((300, 600, 3), dtype=np.uint8)
    image[:, :300] = 200
    url = jpeg_data_url(image, max_side=256, quality=90)
    assert url.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.format == "JPEG" and decoded.size == (256, 128)
    assert abs(np.asarray(decoded)[:, :100].mean() - 200) < 3
    small = jpeg_data_url(np.full((32, 32), 7, dtype=np.uint8), max_side=256, quality=90)
    assert Image.open(io.BytesIO(base64.b64decode(small.split(",", 1)[1]))).size == (32, 32)  # never upscaled


def test_edge_map_png_is_lossless_one_bit_and_far_smaller_than_jpeg():
    rng = np.random.default_rng(0)
    photo = (rng.random((256, 256, 3)) * 40 + np.linspace(0, 200, 256)[None, :, None]).astype(np.uint8)
    photo[64:192, 64:192] = 250
    edges = edge_map(photo)
    url = png_bilevel_data_url(edges)
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.format == "PNG" and decoded.mode == "1"
    assert np.array_equal(np.asarray(decoded.convert("L")), edges)  # every edge pixel exactly as computed
    assert len(url) * 3 < len(jpeg_data_url(edges, max_side=1024, quality=90))


def test_one_opencv_thread_is_scoped():
    import cv2

    before = cv2.getNumThreads()
    with one_opencv_thread():
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == before


@pytest.mark.parametrize("text", ["plain", 'quote " and backslash \\ and \n newline', "data:not-an-image", "é ü 中", ""])
def test_json_body_is_byte_for_byte_what_json_dumps_gives(text):
    url = "data:image/jpeg;base64," + base64.b64encode(bytes(range(256)) * 20).decode()
    odd_url = 'data:image/png;base64,AAAA"BBBB'  # not splice-safe: json must escape it
    payload = {
        "model": "gpt-4o", "temperature": 0.5, "seed": None, "messages": [
            {"role": "system", "content": text},
            {"role": "user", "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": url, "detail": "auto"}},
                {"type": "image_url", "image_url": {"url": odd_url}},
                {"type": "image_url", "image_url": {"url": url}},
            ]},
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": text, "schema": {"enum": [text, 1.5]}}},
    }
    body = json_body(payload)
    assert body == json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    assert json.loads(body) == payload


def test_pixel_hash_is_content_addressed():
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    b = a.copy()
    assert pixel_hash(a) == pixel_hash(b)
    b[0, 0, 0] = 1
    assert pixel_hash(a) != pixel_hash(b)
    assert pixel_hash(a) != pixel_hash(a.reshape(16, 4, 3))  # same bytes, other shape
    assert pixel_hash(np.asfortranarray(a)) == pixel_hash(a)


def test_image_token_estimate_follows_the_tile_formula():
    assert estimated_image_tokens(512, 512, max_side=1024, detail="high") == 85 + 170  # one 512 px tile
    assert estimated_image_tokens(1024, 1024, max_side=1024, detail="auto") == 85 + 170 * 4  # 768 x 768: 2 x 2
    assert estimated_image_tokens(2048, 2048, max_side=512, detail="auto") == 85 + 170  # sent at 512 x 512
    assert estimated_image_tokens(1000, 4000, max_side=8192, detail="auto") == 85 + 170 * 4  # 512 x 2048: 1 x 4
    assert estimated_image_tokens(2048, 2048, max_side=1024, detail="low") == 85


# --- cache -------------------------------------------------------------------------------------------------


def test_cache_round_trip_is_atomic_and_ignores_corrupt_entries(tmp_path):
    store = llm_cache.AnswerCache(tmp_path)
    key = llm_cache.cache_key({"model": "m", "image": "abc", "repeat": 0})
    assert store.get(key) is None
    store.put(key, {"answers": {"a": {"score": 0.5}}})
    assert store.get(key) == {"answers": {"a": {"score": 0.5}}}
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{key}.json"]  # no temp file left
    store.path(key).write_text('{"answers": ')  # torn by something outside the cache's control
    assert store.get(key) is None
    store.put(key, {"answers": {}})
    assert store.get(key) == {"answers": {}}


def test_cache_write_killed_midway_leaves_no_entry(tmp_path, monkeypatch):
    store = llm_cache.AnswerCache(tmp_path)
    key = llm_cache.cache_key({"x": 1})

    def crash(*args):
        raise KeyboardInterrupt  # what a kill between write and rename looks like to the reader

    monkeypatch.setattr(llm_cache.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put(key, {"answers": {"a": 1}})
    assert store.get(key) is None and not any(p.is_file() for p in tmp_path.rglob("*"))


def test_cache_key_depends_on_every_field_and_not_on_order():
    base = {"model": "gpt-4o", "host": "api.openai.com/v1", "rubric_version": "1", "criteria": ["a", "b"],
            "image": "h1", "references": ["r1"], "prompt": "p", "repeat": 0}
    key = llm_cache.cache_key(base)
    assert llm_cache.cache_key(dict(reversed(list(base.items())))) == key
    for field, other in [("model", "gpt-4o-mini"), ("host", "localhost:8000/v1"), ("rubric_version", "2"),
                         ("criteria", ["a"]), ("image", "h2"), ("references", ["r2"]), ("prompt", "q"), ("repeat", 1)]:
        assert llm_cache.cache_key({**base, field: other}) != key, field


# --- rate limits and retries -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_requests_per_minute_spaces_requests():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=120, clock=clock, sleep=clock.sleep)  # 2 per second
    for _ in range(7):
        limiter.acquire(10)
    assert clock.now == pytest.approx(2.5)  # bucket of 2 at start, then one every 0.5 s


def test_tokens_per_minute_waits_and_settles_with_actual_usage():
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=6000, clock=clock, sleep=clock.sleep)  # 100 tokens per second
    limiter.acquire(100)
    limiter.acquire(100)
    assert clock.now == pytest.approx(1.0)
    limiter.settle(100, 20)  # the request used less than estimated: 80 tokens come back
    limiter.acquire(80)
    assert clock.now == pytest.approx(1.0)
    limiter.settle(80, 380)  # used 300 more than estimated: later requests pay for it
    limiter.acquire(100)
    assert clock.now == pytest.approx(5.0)


def test_pause_holds_every_request():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.pause(2.5)
    assert limiter.acquire(1) == pytest.approx(2.5)
    assert limiter.acquire(1) == 0.0


def test_retry_after_header_forms():
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"Retry-After": "0.05"}) == 0.05
    date = email.utils.formatdate(1000.0 + 7, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=lambda: 1000.0) == pytest.approx(7.0)
    assert retry_after_seconds({"Retry-After": "soon"}) is None and retry_after_seconds({}) is None


def test_backoff_is_exponential_with_jitter_and_capped():
    import random

    policy = RetryPolicy(max_retries=5, initial_delay=1.0, max_delay=8.0)
    rng = random.Random(0)
    for retry, base in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        samples = [policy.backoff(retry, rng) for _ in range(200)]
        assert min(samples) >= base / 2 and max(samples) <= base
        assert max(samples) - min(samples) > base / 4  # jittered, not constant


# --- cost --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    judge: str
    raw: dict


def test_cost_totals_count_each_call_once_and_cached_as_free():
    prices = Prices(2.5, 10.0)
    shared = CallRecord("c1", "gpt-4o", 1000, 200, prices.cost(1000, 200)).to_raw()
    retried = CallRecord("c2", "gpt-4o", 1000, 50, prices.cost(1000, 50), retries=2, valid=False).to_raw()
    cached = CallRecord("c0", "gpt-4o", 1000, 200, 0.0, cached=True).to_raw()
    rows = [Row("llm_rubric", {"calls": [shared, retried]}), Row("llm_rubric", {"calls": [shared]}),
            Row("llm_rubric", {"calls": [cached]}), Row("image_stats", {"peak": 1})]
    totals = totals_by_judge(rows)["llm_rubric"]
    assert (totals.calls, totals.cached, totals.invalid, totals.retries) == (2, 1, 1, 2)
    assert (totals.prompt_tokens, totals.completion_tokens) == (2000, 250)
    assert totals.cost_usd == pytest.approx((2000 * 2.5 + 250 * 10) / 1e6)
    [line] = summary_lines(rows)
    assert "2 API call(s), 1 answer(s) from cache" in line and "2,000 input + 250 output tokens, $0.0075" in line
    unpriced = [Row("llm_rubric", {"calls": [CallRecord("x", "m", 10, 5, None).to_raw()]})]
    assert "cost unknown (set price_input_per_mtok" in summary_lines(unpriced)[0]


# --- options and endpoint ----------------------------------------------------------------------------------


def test_options_errors_name_the_option_and_the_fix():
    with pytest.raises(ValueError, match=r"(?s)llm_rubric judge: invalid options.*mode: Input should be 'combined' or 'per_criterion' \(got 'combine'\)"):
        parse_options(RubricOptions, "llm_rubric", {"mode": "combine"})
    with pytest.raises(ValueError, match=r"tempreature: unknown option; allowed options: model, base_url"):
        parse_options(RubricOptions, "llm_rubric", {"tempreature": 0.5})
    with pytest.raises(ValueError, match="'api_key' does not belong in the config.*OPENAI_API_KEY"):
        parse_options(RubricOptions, "llm_rubric", {"api_key": "sk-123"})
    with pytest.raises(ValueError, match="repeats = 3 with temperature = 0 .* set temperature > 0"):
        parse_options(RubricOptions, "llm_rubric", {"repeats": 3})
    assert parse_options(RubricOptions, "llm_rubric", {"repeats": 3, "temperature": 0.7}).repeats == 3


def test_seed_false_in_toml_sends_no_seed():
    import tomllib

    options = tomllib.loads("seed = false")
    assert parse_options(RubricOptions, "llm_rubric", options).seed is None
    assert parse_options(RubricOptions, "llm_rubric", {"seed": 7}).seed == 7
    with pytest.raises(ValueError, match="seed: seed = true is not a seed: give an integer, or false"):
        parse_options(RubricOptions, "llm_rubric", {"seed": True})
    from lora_harness.judges.llm import LlmRubricJudge

    judge = LlmRubricJudge(base_url="http://127.0.0.1:9/v1", seed=False)
    assert judge.seed(0) is None and judge.request_fields(1, "d")["seed"] is None


def test_endpoint_key_from_environment_before_dotenv_and_never_in_repr(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\nOPENAI_BASE_URL=http://localhost:9999/v1\n")
    from_env = resolve_endpoint(model="m", base_url=None, environ={"OPENAI_API_KEY": "sk-from-env"})
    assert from_env.api_key == "sk-from-env" and from_env.base_url == "http://localhost:9999/v1"
    from_file = resolve_endpoint(model="m", base_url="http://127.0.0.1:1/v1", environ={})
    assert from_file.api_key == "sk-from-dotenv" and str(tmp_path / ".env") in from_file.key_source
    assert "sk-from" not in repr(from_file) and "sk-from" not in str(from_file)
    assert from_file.host == "127.0.0.1:1/v1"
    custom = resolve_endpoint(model="m", base_url=None, api_key_env="AZURE_OPENAI_API_KEY",
                              environ={"AZURE_OPENAI_API_KEY": "az"}, env_file=str(tmp_path / ".env"))
    assert custom.api_key == "az"


def test_no_key_and_no_base_url_is_unavailable_with_instructions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    endpoint = resolve_endpoint(model="m", base_url=None, environ={})
    reason = endpoint.unavailable_reason()
    assert reason is not None and "set OPENAI_API_KEY" in reason and "base_url" in reason
    assert resolve_endpoint(model="m", base_url="http://localhost:11434/v1", environ={}).unavailable_reason() is None
    assert Endpoint("m", None, "sk").host == "api.openai.com/v1"


def test_bad_base_url_and_missing_env_file_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="base_url = 'localhost:8000' is not an http"):
        resolve_endpoint(model="m", base_url="localhost:8000", environ={})
    with pytest.raises(ValueError, match="must not contain credentials"):
        resolve_endpoint(model="m", base_url="http://user:pw@host/v1", environ={})
    with pytest.raises(ValueError, match="env_file = .*file not found"):
        resolve_endpoint(model="m", base_url=None, env_file=str(tmp_path / "nope.env"), environ={})


def test_redact_scrubs_every_occurrence():
    assert redact("Bearer sk-abc and sk-abc", ("sk-abc",)) == "Bearer *** and ***"
