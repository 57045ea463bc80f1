"""Run-wide limits and the run-wide stop of the LLM judges (issue 15): `max_in_flight`, the per-minute
limits and a fatal answer (401/403/404) are the run's, shared by xdist workers through files in the run
folder, not divided per worker. The e2e tests run real `pytest -n 4` subprocesses against the local server
and read the peak concurrency and request count the server itself observed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from llm_server import FakeOpenAIServer
from llm_suite import LORA, METRICS, assert_one_row_per_score, store_rows, write_suite
from lora_harness.core.config import load_config
from lora_harness.run.harness import Harness
from lora_harness.judges.llm.runwide import FatalFlag, RequestSlots, SharedRateLimiter
from test_llm_e2e import clean_env, run


# --- units: the shared pieces, two instances standing for two processes --------------------------------------


def test_request_slots_bound_holders_across_instances(tmp_path):
    a, b = RequestSlots(2, tmp_path), RequestSlots(2, tmp_path)  # own descriptors, like two processes
    active, peak, lock = 0, 0, threading.Lock()

    def work(slots: RequestSlots) -> None:
        nonlocal active, peak
        with slots.hold():
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.02)
            with lock:
                active -= 1

    threads = [threading.Thread(target=work, args=(s,)) for s in (a, b) * 6]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2
    with a.hold(), a.hold():  # both slots of the run taken by a: b waits until one is free
        got = threading.Event()
        waiter = threading.Thread(target=lambda: (b.hold().__enter__(), got.set()))
        waiter.start()
        assert not got.wait(0.1)
    assert got.wait(2)
    waiter.join()
    a.close(), b.close()


def test_shared_rate_limiter_is_one_bucket_for_every_process(tmp_path):
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    a = SharedRateLimiter(tmp_path, requests_per_minute=60, clock=clock, sleep=sleep)
    b = SharedRateLimiter(tmp_path, requests_per_minute=60, clock=clock, sleep=sleep)
    assert a.acquire(10) == 0.0
    assert b.acquire(10) == pytest.approx(1.0)  # a took the bucket's one request: b waits a second
    b.pause(5.0)  # a 429 seen by b pauses a too (the account is over its limit)
    assert a.acquire(10) == pytest.approx(5.0)


def test_fatal_flag_first_writer_wins_and_is_seen_by_others(tmp_path):
    path = tmp_path / "fatal-r1.txt"
    first, second = FatalFlag(path), FatalFlag(path)
    assert first.reason is None and second.reason is None
    assert first.set("authentication failed; check OPENAI_API_KEY") == "authentication failed; check OPENAI_API_KEY"
    assert second.set("something else") == "authentication failed; check OPENAI_API_KEY"
    assert FatalFlag(path).reason == "authentication failed; check OPENAI_API_KEY"
    assert FatalFlag(tmp_path / "fatal-r2.txt").reason is None  # another run is not stopped


# --- one process: a fatal answer stops every later checkpoint ------------------------------------------------


@pytest.mark.parametrize("status, says", [("404", "check the model name 'gpt-4o'"), ("403", "does this key have access to model 'gpt-4o'")])
def test_a_fatal_answer_stops_every_later_checkpoint_of_the_run(tmp_path, status, says):
    with FakeOpenAIServer(latency=0.05) as server:
        server.add_fault(status, times=10_000)
        config = write_suite(tmp_path, base_url=server.url, steps=(100, 200, 300, 400), options="max_in_flight = 2")
        harness = Harness(load_config(config), run_id="r1")
        for case in harness.cases:
            harness.score(case)
    assert server.call_count <= 2  # 4 checkpoints of 4 images: only the requests already on the wire
    rows = [r for r in store_rows(harness.config.run_dir) if r["run_id"] == "r1"]
    keyed = assert_one_row_per_score(rows, cases=16)
    assert all(r["value"] is None and says in r["error"] for r in keyed.values())
    assert all(says in r["raw"]["stopped"] for r in keyed.values())


# --- xdist: real pytest -n 4 runs ----------------------------------------------------------------------------


def _suite(root: Path, url: str, options: str) -> Path:
    # 2 LoRAs x 4 steps x 4 prompts = 32 images in 8 checkpoints: 8 xdist groups over 4 workers
    return write_suite(root, base_url=url, steps=(100, 200, 300, 400), loras=(LORA, "other-lora"), options=options)


@pytest.mark.slow
@pytest.mark.parametrize("limit", [1, 3])
def test_max_in_flight_is_exact_for_the_whole_run_under_xdist(tmp_path, limit):
    with FakeOpenAIServer(latency=0.25) as server:
        _suite(tmp_path, server.url, f"max_in_flight = {limit}")
        result = run(tmp_path, "-n", "4", "-k", "test_image", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert server.call_count == 32
    assert server.max_concurrent == limit  # never more, and the limit is used
    rows = store_rows(tmp_path / "reports" / "llm")
    assert len({r["worker"] for r in rows}) >= 2  # several workers really judged at once
    assert_one_row_per_score(rows, cases=32)


@pytest.mark.slow
def test_a_wrong_key_costs_at_most_max_in_flight_requests_under_xdist(tmp_path):
    with FakeOpenAIServer(latency=0.2, expected_key="sk-right-key") as server:
        _suite(tmp_path, server.url, "max_in_flight = 2")
        result = run(tmp_path, "-n", "4", "-k", "test_image", env=clean_env(OPENAI_API_KEY="sk-wrong-key"), timeout=300)
    assert result.returncode == 1, result.stdout[-3000:]
    assert 1 <= server.call_count <= 2, server.call_count  # 32 images in 8 checkpoints on 4 workers
    stops = [line for line in result.stdout.splitlines() if "STOPPED" in line]
    assert len(stops) == 1, result.stdout[-3000:]
    assert "authentication failed" in stops[0] and "check OPENAI_API_KEY" in stops[0] and "224 score(s)" in stops[0]
    assert "sk-wrong-key" not in result.stdout
    rows = store_rows(tmp_path / "reports" / "llm")
    keyed = assert_one_row_per_score(rows, cases=32, metrics=METRICS)
    assert all(r["value"] is None for r in keyed.values())


def test_a_claim_taken_just_after_another_worker_answered_reads_the_cache_again(tmp_path, monkeypatch):
    """Worker A answers, caches and drops its claim between worker B's cache miss and B's claim: B must
    not ask a second time (found by the -n 4 benchmark: 67 calls for 66 questions)."""
    import numpy as np

    from lora_harness.core.cases import EvalCase, Prompt
    from lora_harness.judges.base import JudgeContext
    from lora_harness.judges.llm import LlmRubricJudge
    from lora_harness.judges.llm.calls import CallRunner

    with FakeOpenAIServer() as server:
        context = JudgeContext(cache_dir=tmp_path, worker_count=2, run_id="r1")
        items = [(EvalCase("l", 1, Prompt("00", "p"), Path("a.png")), np.full((8, 8, 3), 120, np.uint8))]
        a = LlmRubricJudge(base_url=server.url, criteria=["eval_person_llm"])
        b = LlmRubricJudge(base_url=server.url, criteria=["eval_person_llm"])
        [[first]] = a.judge_batch(items, context)
        assert server.call_count == 1
        runner = b.runner(context)
        real = CallRunner._from_cache
        looks = []

        def from_cache(plan):  # B's first look at the cache happened before A's entry landed
            looks.append(plan.key)
            return None if len(looks) == 1 else real(runner, plan)

        monkeypatch.setattr(runner, "_from_cache", from_cache)
        [[second]] = b.judge_batch(items, context)
    assert server.call_count == 1
    assert second.value == first.value == 1.0
    assert second.raw["calls"][0]["cached"] is False  # asked in this run (by A): counted, once, by its id
    assert second.raw["calls"][0]["id"] == first.raw["calls"][0]["id"]
