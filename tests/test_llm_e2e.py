"""End-to-end: pytest subprocesses evaluating a small suite with `llm_rubric` against the local server.

A run killed with SIGKILL halfway and started again ends with every score and repeats no cached call; the
API key appears nowhere in reports, logs, CSV or cache files; without an endpoint the LLM-judged tests
skip with a reason saying how to enable them; the pairwise comparison gates "candidate not worse"; and the
terminal summary carries the token/cost line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from llm_server import FakeOpenAIServer
from llm_suite import LORA, METRICS, assert_one_row_per_score, store_rows, write_suite

pytestmark = pytest.mark.slow


def pytest_command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", str(root / "test_llm_eval.py"), "--lora-config", str(root / "lora_eval.toml"),
            "-p", "no:cacheprovider", "-q", "--lora-progress", "off", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    return {**env, **extra}


def run(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(pytest_command(root, *args), cwd=root, env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_sigkill_halfway_then_rerun_finishes_without_repeating_cached_calls(tmp_path):
    with FakeOpenAIServer(latency=0.15) as server:
        root = tmp_path
        write_suite(root, base_url=server.url, steps=(100, 200, 300), options="max_in_flight = 1")
        victim = subprocess.Popen(pytest_command(root, "-k", "test_image"), cwd=root, env=clean_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(server.ok_calls()) < 6 and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        time.sleep(0.3)  # let a request the victim had in flight reach the server's log
        first_calls = server.call_count
        cache = root / "reports" / "llm" / "cache" / "llm"
        cached = list(cache.rglob("*.json"))
        assert 5 <= len(cached) < 12  # one worker thread: every answer before the 6th was cached
        killed_rows = store_rows(root / "reports" / "llm")
        assert len(killed_rows) >= 4 * 7  # the first checkpoint's batch was recorded before the kill

        result = run(root, "-n", "2")  # and under xdist: no image judged by two workers
        assert result.returncode == 0, result.stdout[-3000:]
        second = server.calls[first_calls:]
    assert len(second) == 12 - len(cached), "a cached answer was asked again (or an uncached one skipped)"
    first_answered = {c.fingerprint for c in server.calls[:first_calls] if c.status == 200}
    assert len({c.fingerprint for c in second}) == len(second)  # no image judged twice (xdist groups)
    assert len(first_answered | {c.fingerprint for c in second}) == 12
    rerun_id = next(r["run_id"] for r in store_rows(root / "reports" / "llm") if r not in killed_rows)
    rows = [r for r in store_rows(root / "reports" / "llm") if r["run_id"] == rerun_id]
    keyed = assert_one_row_per_score(rows, cases=12)
    assert all(r["value"] is not None for r in keyed.values())
    assert sum(r["raw"]["cached"] for (case, metric), r in keyed.items() if metric == METRICS[0]) == len(cached)
    wide = pd.read_csv(root / "reports" / "llm" / "scores.csv")
    assert len(wide) == 12 and wide[METRICS].notna().all().all()


def test_api_key_never_reaches_reports_logs_csv_or_cache(tmp_path):
    key = f"sk-test-{uuid.uuid4().hex}"
    with FakeOpenAIServer(expected_key=key) as server:
        server.add_fault("echo_auth", times=1)  # a server that quotes the Authorization header back
        server.add_fault("429", times=1, retry_after="0.05")
        write_suite(tmp_path, base_url=server.url, options="answer_retries = 1")
        result = run(tmp_path, "-rA", "-o", "log_cli=true", "--log-cli-level=DEBUG",
                     env=clean_env(OPENAI_API_KEY=key, OPENAI_LOG="debug"))
    assert all(c.has_authorization for c in server.calls)
    assert server.call_count >= 5  # the key was really used
    output = result.stdout + result.stderr
    # the terminal cost line: 3 answered calls (one after a 429), the echoed 400 is an error, not a call
    assert "llm_rubric: 3 API call(s), 0 answer(s) from cache, 1 transient retry" in output, output[-1500:]
    assert "Authorization: Bearer ***" in output  # the echoed header, redacted in the failure message
    leaks = [str(p) for p in tmp_path.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert not leaks, f"API key written to {leaks}"
    assert key not in output
    assert key[8:] not in output  # not even partly
    files = {p.suffix for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    assert {".jsonl", ".csv", ".json"} <= files  # the grep covered store, CSVs and cache


def test_without_an_endpoint_gated_llm_tests_are_incomplete_saying_how_to_enable(tmp_path):
    write_suite(tmp_path, base_url=None)
    result = run(tmp_path, "-rs", "-k", "test_image or test_checkpoint")
    assert result.returncode == 1, result.stdout[-3000:]  # gated metrics never judged: not a pass
    assert "5 failed" in result.stdout.splitlines()[-1] and "INCOMPLETE" in result.stdout
    assert "no LLM endpoint configured: set OPENAI_API_KEY in the environment or in a .env file" in result.stdout
    assert "base_url" in result.stdout
    accepted = run(tmp_path, "-rs", "-k", "test_image or test_checkpoint", "--allow-incomplete")
    assert accepted.returncode == 0, accepted.stdout[-3000:]
    assert "5 skipped" in accepted.stdout and "passed" not in accepted.stdout.splitlines()[-1]
    assert "accepted by --allow-incomplete" in accepted.stdout


def test_pairwise_comparison_gates_candidate_not_worse(tmp_path):
    with FakeOpenAIServer(position_bias=0.15) as server:
        extra = f"""[[judges]]
name = "llm_pairwise"
options = {{ base_url = "{server.url}", baseline = "BASE", candidate = "CAND", margin = MARGIN }}
"""
        write_suite(tmp_path, base_url=server.url, loras=(LORA, "person-lora-v2"),
                    extra=extra.replace("BASE", "person-lora-v2").replace("CAND", LORA).replace("MARGIN", "0.0"))
        worse = run(tmp_path, "-k", "test_pairwise")
        assert worse.returncode == 1, worse.stdout[-3000:]
        assert "person-lora-step000100 vs baseline person-lora-v2-step000100 (4 pairs, same prompt and seed)" in worse.stdout
        assert "minimum 0.500 = 0.5 - margin 0: WORSE" in worse.stdout
        assert server.call_count == 8  # 4 pairs x both orders

        config = tmp_path / "lora_eval.toml"
        config.write_text(config.read_text().replace("margin = 0.0", "margin = 0.1"))
        tolerated = run(tmp_path, "-k", "test_pairwise")
        assert tolerated.returncode == 0, tolerated.stdout[-3000:]
        assert server.call_count == 8  # same pairs: answered from the cache
    rows = [r for r in store_rows(tmp_path / "reports" / "llm") if r["metric"] == "pairwise_preference"]
    assert len(rows) == 8 and all(r["loraname"] == LORA for r in rows)
    assert all(r["value"] == pytest.approx(0.5 - 5 / 255, abs=0.01) for r in rows)  # bias 0.15 cancelled
