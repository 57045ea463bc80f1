"""Judging ahead (issue 15): a process submits the next checkpoints' LLM requests while a test waits for its
own, so checkpoints of a few images do not cap concurrency; a waiting test's requests go first; under xdist
no question is asked twice and every call is counted once, by the worker that made it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from llm_server import FakeOpenAIServer
from llm_suite import LORA, assert_one_row_per_score, store_rows, write_suite
from lora_harness.core.cases import EvalCase, Prompt
from lora_harness.core.config import load_config
from lora_harness.run.harness import Harness
from lora_harness.judges.base import JudgeContext
from lora_harness.judges.llm import LlmRubricJudge
from lora_harness.judges.llm.cost import summary_lines
from test_llm_e2e import run


def judge_all(config: Path, *, stream: bool, run_id: str = "r1") -> tuple[Harness, list[dict]]:
    harness = Harness(load_config(config), run_id=run_id)
    if stream:
        harness.stream_order = list(harness.checkpoints)  # what the plugin sets from the collected tests
    for case in harness.cases:
        harness.score(case)
    return harness, [r for r in store_rows(harness.config.run_dir) if r["run_id"] == run_id]


@pytest.mark.parametrize("stream", [True, False])
def test_small_checkpoints_no_longer_cap_concurrency(tmp_path, stream):
    latency = 0.5
    with FakeOpenAIServer(latency=latency) as server:
        config = write_suite(tmp_path, base_url=server.url, steps=(100, 200, 300, 400), prompts=3, options="max_in_flight = 8")
        harness, rows = judge_all(config, stream=stream)
    assert_one_row_per_score(rows, cases=12)
    assert server.call_count == 12 and len(set(server.fingerprints())) == 12  # nothing asked twice
    starts = [c.started for c in server.calls]
    judging = max(starts) - min(starts) + latency  # the judge phase as the server saw it (no import time)
    if stream:
        assert 6 <= server.max_concurrent <= 8  # the next checkpoints were in flight with the first
        # 12 calls / 8 slots: two rounds (1.0 s), not four checkpoints one after another (2.0 s); the margin
        # is for this shared 2-core machine, where a thread can stall for a few hundred ms
        assert judging < 3.2 * latency
    else:
        assert server.max_concurrent == 3  # without judging ahead: one checkpoint of 3 images at a time
        assert judging >= 4 * latency
    assert summary_lines([_Row(r) for r in rows])[0].startswith("llm_rubric: 12 API call(s), 0 answer(s) from cache")


class _Row:
    """What `summary_lines` reads of a stored row."""

    def __init__(self, data: dict) -> None:
        self.judge, self.raw = data["judge"], data["raw"]


def _items(tag: str, n: int, shade: int = 100) -> list:
    """n distinct images (the question depends on the pixels: equal images are one question)."""
    return [(EvalCase("l", 1, Prompt(f"{i:02d}", f"p {tag} {i}"), Path(f"{tag}{i}.png")), np.full((8, 8, 3), shade + i, np.uint8))
            for i in range(n)]


def test_a_waiting_test_goes_before_work_taken_ahead(tmp_path):
    with FakeOpenAIServer(latency=0.2) as server:
        judge = LlmRubricJudge(base_url=server.url, max_in_flight=1, criteria=["eval_person_llm"])
        context = JudgeContext(cache_dir=tmp_path)
        ahead = judge.submit_batch(_items("ahead", 8), context, ahead=True)
        time.sleep(0.05)  # the first request taken ahead is on the wire
        start = time.perf_counter()
        [scores] = judge.judge_batch(_items("now", 1, shade=200), context)
        waited = time.perf_counter() - start
        assert scores[0].value == 1.0 and waited < 0.2 * 5  # the one in flight, then this: not 8 more (1.6 s); slack for a loaded VM
        assert server.call_count <= 2 + 1
        # a case taken ahead and needed now moves to the front of the queue, and is not asked twice
        start = time.perf_counter()
        [scores] = judge.judge_batch(_items("ahead", 8)[6:7], context)
        assert time.perf_counter() - start < 0.2 * 3 and scores[0].error is None
        results = judge.collect(ahead, context)
    assert all(r[0].value == 1.0 for r in results)
    assert server.call_count == 9 and len(set(server.fingerprints())) == 9
    assert [c.keys for c in server.calls] == [("person_present",)] * 9


def test_an_answer_taken_ahead_keeps_its_call_record(tmp_path):
    with FakeOpenAIServer() as server:
        judge = LlmRubricJudge(base_url=server.url, criteria=["eval_person_llm"], cache=False)
        context = JudgeContext(cache_dir=tmp_path)
        judge.collect(judge.submit_batch(_items("x", 2), context, ahead=True), context)
        results = judge.judge_batch(_items("x", 2), context)  # no cache: the outcomes taken ahead are handed over
    assert server.call_count == 2
    assert [r[0].raw["calls"][0]["cached"] for r in results] == [False, False]


@pytest.mark.slow
def test_xdist_workers_judge_ahead_without_asking_twice(tmp_path):
    with FakeOpenAIServer(latency=0.3) as server:
        write_suite(tmp_path, base_url=server.url, steps=(100, 200, 300, 400), prompts=3, loras=(LORA, "other-lora"),
                    options="max_in_flight = 8")
        result = run(tmp_path, "-n", "2", "-k", "test_image or test_checkpoint", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert server.call_count == 24 and len(set(server.fingerprints())) == 24  # no question asked twice
    assert 6 < server.max_concurrent <= 8  # checkpoints of 3 images, 2 workers: more than 2 x 3 at once
    assert "llm_rubric: 24 API call(s), 0 answer(s) from cache" in result.stdout, result.stdout[-2000:]
    rows = store_rows(tmp_path / "reports" / "llm")
    assert_one_row_per_score(rows, cases=24)


def test_judge_ahead_false_takes_nothing_ahead(tmp_path):
    with FakeOpenAIServer(latency=0.2) as server:
        config = write_suite(tmp_path, base_url=server.url, steps=(100, 200, 300), prompts=2,
                             options="max_in_flight = 8, judge_ahead = false")
        harness, rows = judge_all(config, stream=True)
    assert_one_row_per_score(rows, cases=6)
    assert server.max_concurrent == 2  # one checkpoint of 2 images at a time, though the order is known
    assert harness.judges[0].prefetch_target == 0


def test_priority_pool_runs_urgent_then_promoted_then_ahead_each_once():
    import threading

    from lora_harness.judges.llm.pool import AHEAD, URGENT, PriorityPool

    pool, gate, ran, finished = PriorityPool(1, "t"), threading.Event(), [], threading.Event()
    pool.submit(URGENT, gate.wait)  # holds the only thread while the queue fills
    time.sleep(0.05)
    pool.submit(AHEAD, ran.append, "ahead-1")
    second = pool.submit(AHEAD, ran.append, "ahead-2")
    pool.submit(URGENT, ran.append, "urgent")
    pool.promote(second)
    pool.submit(AHEAD, finished.set)
    gate.set()
    assert finished.wait(5)
    assert ran == ["urgent", "ahead-2", "ahead-1"]  # ahead-2 ran once, though queued twice
    pool.shutdown()
