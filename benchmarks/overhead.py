"""Benchmark: the plugin's own per-case overhead above pytest's, on 2,000 tiny images with a no-op judge.

Two suites of the same number of tests run side by side, alternating, in fresh pytest processes:
- plain: `@pytest.mark.parametrize` over 2,000 integers, each test empty (pytest's own cost per test; the
  lora-harness plugin is installed but inactive, as in any project that has it);
- harness: the stock eval test (`test_image(lora_case, lora_gate)` -> `lora_gate.check_image`) over a kohya
  sample folder of 2,000 8x8 PNGs (20 checkpoints x 100 prompts), judged by a no-op judge that a conftest
  registers (in the benchmark only) and a per-image threshold on its metric.

A conftest in each suite stamps the clock at session start, after collection, at the first and last test,
and at unconfigure, so the per-case cost (the test phase divided by the number of tests) is told apart from
the fixed costs (collection, the session-end CSV / report). The harness's overhead per case is the difference
of the two per-case costs. Each suite runs `--repeats` times; medians are compared.

With `--before DIR` (a copy of an older `lora_harness` package, e.g. from `git archive <rev> lora_harness`), the
harness suite also runs on that code, in the same alternation, so a change's effect is a ratio of one run.

    .venv/bin/python benchmarks/overhead.py [--cases 2000] [--repeats 3] [--before DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

STAMPS = '''
import json, os, time

_T = {"n": 0}


def pytest_sessionstart(session):
    _T["start"] = time.perf_counter()


def pytest_collection_finish(session):
    _T["collected"] = time.perf_counter()


def pytest_runtest_logstart(nodeid, location):
    if "first" not in _T:
        _T["first"], _T["first_cpu"] = time.perf_counter(), time.process_time()


def pytest_runtest_logfinish(nodeid, location):
    _T["last"], _T["last_cpu"] = time.perf_counter(), time.process_time()
    _T["n"] += 1


def pytest_unconfigure(config):
    _T["end"] = time.perf_counter()
    with open(os.environ["OVERHEAD_STAMPS"], "w") as handle:
        json.dump(_T, handle)
'''

NOOP_JUDGE = '''
from lora_harness.judges.base import Score, register


@register("noop")
class NoopJudge:
    """Returns a constant without looking at the image: what is left is the harness's own cost."""

    name, version, metrics = "noop", "1", ["noop"]

    def judge(self, case, image, context):
        return [Score("noop", 1.0)]
'''

PLAIN_TEST = '''
import pytest


@pytest.mark.parametrize("case", range({cases}))
def test_image(case):
    pass
'''

CONFIG = '''[run]
name = "overhead"
report_dir = "reports"

[[sources]]
path = "samples"

[[judges]]
name = "noop"

[thresholds.noop]
image = 0.5
'''


def make_harness_suite(root: Path, cases: int) -> None:
    root.mkdir(parents=True)
    samples = root / "samples"
    samples.mkdir()
    prompts = min(cases, 100)
    steps = (cases + prompts - 1) // prompts
    (samples / "sample_prompts.txt").write_text("".join(f"<phigep> portrait {i}\n" for i in range(prompts)))
    rng = np.random.default_rng(0)
    made = 0
    for step in range(1, steps + 1):
        for p in range(prompts):
            if made == cases:
                break
            pixels = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(samples / f"bench_{step * 100:06d}_{p:02d}_20250101120000.png")
            made += 1
    (root / "lora_eval.toml").write_text(CONFIG)
    (root / "conftest.py").write_text(STAMPS + NOOP_JUDGE)
    shutil.copy(Path(__file__).resolve().parents[1] / "evals" / "test_lora.py", root / "test_lora.py")
    # the stock suite also has test_checkpoint: keep only the per-image test, so both suites have `cases` tests
    text = (root / "test_lora.py").read_text()
    (root / "test_lora.py").write_text(text[: text.index("def test_checkpoint")])


def make_plain_suite(root: Path, cases: int) -> None:
    root.mkdir(parents=True)
    (root / "conftest.py").write_text(STAMPS)
    (root / "test_plain.py").write_text(PLAIN_TEST.format(cases=cases))


def run_suite(root: Path, args: list[str], cases: int, code: Path | None = None) -> dict[str, float]:
    """One pytest process over the suite; `code`: the folder that holds the `lora_harness` package to use."""
    stamps = root / "stamps.json"
    env = {**os.environ, "OVERHEAD_STAMPS": str(stamps)}
    if code is not None:
        env["PYTHONPATH"] = str(code.resolve())
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly", *args]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{root.name} suite failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    t = json.loads(stamps.read_text())
    if t["n"] != cases:
        raise SystemExit(f"{root.name}: {t['n']} tests ran, expected {cases}")
    return {
        "collect_s": t["collected"] - t["start"],
        "tests_s": t["last"] - t["first"],
        "per_case_ms": 1000 * (t["last"] - t["first"]) / cases,
        "cpu_per_case_ms": 1000 * (t["last_cpu"] - t["first_cpu"]) / cases,
        "session_end_s": t["end"] - t["last"],
        "total_s": t["end"] - t["start"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the suites here and keep them")
    parser.add_argument("--before", type=Path, help="a folder holding an older lora_harness package to compare with")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="lora-overhead-"))
    plain, harness = work / "plain", work / "harness"
    for folder in (plain, harness):
        shutil.rmtree(folder, ignore_errors=True)
    make_plain_suite(plain, args.cases)
    make_harness_suite(harness, args.cases)
    here = Path(__file__).resolve().parents[1]
    codes = {"harness": here} | ({"before": args.before} if args.before else {})
    runs: dict[str, list[dict[str, float]]] = {"plain": [], **{name: [] for name in codes}}
    for _ in range(args.repeats):  # alternate, so a slow spell of the machine hits all
        runs["plain"].append(run_suite(plain, [], args.cases, here))
        for name, code in codes.items():
            shutil.rmtree(harness / "reports", ignore_errors=True)
            runs[name].append(run_suite(harness, ["--lora-config", str(harness / "lora_eval.toml")], args.cases, code))
    print(f"plugin overhead: {args.cases} tests, median of {args.repeats} runs each, alternating; load average "
          f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    print(f"{'suite':10} {'collect s':>10} {'tests s':>9} {'per case ms':>12} {'CPU ms':>7} {'session end s':>14} {'total s':>8}")
    med = {}
    for name, results in runs.items():
        med[name] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        m = med[name]
        print(f"{name:10} {m['collect_s']:10.3f} {m['tests_s']:9.3f} {m['per_case_ms']:12.3f} {m['cpu_per_case_ms']:7.3f} "
              f"{m['session_end_s']:14.3f} {m['total_s']:8.3f}")
        each = " ".join(f"{r['per_case_ms']:.3f}/{r['cpu_per_case_ms']:.3f}" for r in results)
        print(f"  each run per case ms, wall/CPU: {each}")
    plain_ms, plain_cpu = med["plain"]["per_case_ms"], med["plain"]["cpu_per_case_ms"]
    ours, ours_cpu = {}, {}
    for name in codes:
        m = med[name]
        ours[name] = m["per_case_ms"] - plain_ms
        ours_cpu[name] = m["cpu_per_case_ms"] - plain_cpu
        whole = 1000 * (m["total_s"] - med["plain"]["total_s"]) / args.cases
        print(f"{name}: per case above plain pytest {ours[name]:.3f} ms in the test phase ({m['per_case_ms'] / plain_ms:.2f}x "
              f"pytest's own); process CPU {ours_cpu[name]:.3f} ms; {whole:.3f} ms per case counting collection and the "
              "session-end CSV/report")
    if "before" in ours:
        print(f"harness overhead per case now / before: wall {ours['harness'] / ours['before']:.2f}, "
              f"process CPU {ours_cpu['harness'] / ours_cpu['before']:.2f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
