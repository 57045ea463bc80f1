"""Throughput of the `llm_rubric` judge against a local OpenAI-compatible server with a fixed latency.

Three runs over the same N images x 7 criteria, side by side in one process:

1. research-style: one call per criterion, sequential, no cache (the study's 7 calls per image);
2. this judge: `combined` mode (one call per image) at `max_in_flight` 16, empty cache;
3. the same judge again: a cached rerun.

It prints wall times, calls, the ratios, and the ideal bound for run 2 (calls x latency / concurrency).
Run 2 is repeated (`--repeats`, each from an empty cache: other prompts) and its median compared, because
a shared 2-core machine drifts by +-20% from minute to minute.
Targets (issue 3): run 2 >= 20x faster than run 1; run 2 within 1.3x of its ideal bound; run 3 <= 5% of
run 2 with zero calls. The server runs in its own process (as a real endpoint would), answering every
request after exactly `--latency` seconds. Images are 512 x 512 (the study's sample size).

    .venv/bin/python benchmarks/judge_throughput.py [--images 64] [--latency 0.1] [--concurrency 16] [--size 512] [--repeats 3]

With `--workers N` (issue 15) it measures a real run instead: `pytest -n N` over an eval suite of kohya
sample folders (2 LoRAs, checkpoints of `--prompts` images, `--images` in all, rounded up to whole
checkpoints), `llm_rubric` combined at `max_in_flight = --concurrency`, against the server answering after
`--latency` +- `--jitter` seconds. Each repeat runs twice, side by side: judging ahead off (one checkpoint at
a time per worker, the old way) and on. The judge phase is the server's own span, from the first request's
arrival to the last answer (pytest's start-up is not in it); the ideal bound is calls x latency / max_in_flight.
Target: judging ahead within 1.25x of the ideal bound; the server never sees more than max_in_flight at once.

    .venv/bin/python benchmarks/judge_throughput.py --latency 1.0 --jitter 0.2 --prompts 3 --workers 2 --concurrency 8 --images 64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from lora_harness.core.cases import EvalCase, Prompt  # noqa: E402
from lora_harness.judges.base import JudgeContext  # noqa: E402
from lora_harness.judges.llm import LlmRubricJudge  # noqa: E402


def serve(latency: float, port_queue: "multiprocessing.Queue[str]", stop: "multiprocessing.synchronize.Event",
          jitter: float = 0.0) -> None:
    from llm_server import FakeOpenAIServer

    with FakeOpenAIServer(latency=latency, jitter=jitter, score_from="hash") as server:
        port_queue.put(server.url)
        stop.wait()


@contextlib.contextmanager
def serving(args: argparse.Namespace) -> Iterator[str]:
    """The local OpenAI-compatible server with the benchmark's latency, in its own process; yields its URL."""
    ctx = multiprocessing.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    process = ctx.Process(target=serve, args=(args.latency, queue, stop, args.jitter), daemon=True)
    process.start()
    try:
        yield queue.get(timeout=60)
    finally:
        stop.set()
        process.join(timeout=10)


def server_calls(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_stats", timeout=10) as response:
        return int(json.load(response)["calls"])


def images(n: int, size: int = 512) -> list[np.ndarray]:
    """n distinct size x size photos: the astronaut portrait (512 px, skimage ships it) shifted and re-toned."""
    from PIL import Image
    from skimage import data

    base = data.astronaut()
    if size != 512:
        base = np.asarray(Image.fromarray(base).resize((size, size), Image.Resampling.BOX))
    base = base.astype(np.int16)
    out = []
    for i in range(n):
        shifted = np.roll(base, shift=(i * 7) % size, axis=1)
        out.append(np.clip(shifted + (i % 11) - 5, 0, 255).astype(np.uint8))
    return out


def cases(n: int, tag: str) -> list[EvalCase]:
    return [
        EvalCase("bench-lora", 1000, Prompt(f"{i % 100:02d}", f"<phigep> portrait photo {tag} {i}"), Path(f"bench_{i}.png"))
        for i in range(n)
    ]


def timed(judge: LlmRubricJudge, items: list, context: JudgeContext, url: str) -> tuple[float, int, list, float]:
    before = server_calls(url)
    cpu = time.process_time()
    start = time.perf_counter()
    results = judge.judge_batch(items, context)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    errors = [s.error for scores in results for s in scores if s.error]
    if errors:
        raise SystemExit(f"benchmark run had judge errors: {errors[:3]}")
    return elapsed, server_calls(url) - before, results, cpu


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_stats", timeout=10) as response:
        return json.load(response)


def suite_run(args: argparse.Namespace, ahead: bool, tag: str) -> dict:
    """One `pytest -n workers` run of a fresh suite against a fresh server process; the server's numbers."""
    import subprocess

    from PIL import Image

    from llm_suite import write_suite

    with serving(args) as url:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            checkpoints = -(-args.images // args.prompts)
            steps = tuple(100 * (i + 1) for i in range(-(-checkpoints // 2)))
            options = f"max_in_flight = {args.concurrency}, judge_ahead = {'true' if ahead else 'false'}"
            write_suite(root, base_url=url, steps=steps, prompts=args.prompts, loras=("bench-a", "bench-b"),
                        options=options, size=8)
            config = root / "lora_eval.toml"  # scores are hashes here: no thresholds, every test passes
            config.write_text(config.read_text().replace("[thresholds.eval_person_llm]\nimage = 0.5\n", ""))
            pngs = sorted((root / "samples").rglob("*.png"))
            for png, pixels in zip(pngs, images(len(pngs), args.size)):  # distinct photos, not grey squares
                Image.fromarray(pixels if tag == "a" else pixels[::-1].copy()).save(png)
            env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PYTEST_ADDOPTS")}
            env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
            command = [sys.executable, "-m", "pytest", str(root / "test_llm_eval.py"), "--lora-config",
                       str(root / "lora_eval.toml"), "-p", "no:cacheprovider", "-q", "--lora-progress", "off",
                       "-n", str(args.workers), "-k", "test_image"]
            start = time.perf_counter()
            result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)
            wall = time.perf_counter() - start
            if result.returncode != 0:
                raise SystemExit(f"benchmark pytest run failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
            stats = server_stats(url)
            return {"images": len(pngs), "wall": wall, **stats}


def workers_main(args: argparse.Namespace) -> int:
    """`--workers N`: real `pytest -n N` runs, judging ahead off and on, side by side (see the module doc)."""
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for repeat in range(args.repeats):
        for ahead in (False, True):
            runs[ahead].append(suite_run(args, ahead, "a" if repeat % 2 == 0 else "b"))
    calls = runs[True][0]["calls"]
    ideal = calls * args.latency / args.concurrency
    print(f"llm_rubric in a pytest -n {args.workers} run: {runs[True][0]['images']} images ({args.size} px) in checkpoints "
          f"of {args.prompts}, combined, max_in_flight {args.concurrency}, server latency {args.latency:g} s "
          f"+- {args.jitter:g} s; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'judging ahead':<16}{'judge phase s (median)':>24}{'/ ideal':>9}{'peak in flight':>16}{'calls':>7}"
          f"{'pytest wall s':>15}   each run's judge phase")
    medians = {}
    for ahead in (False, True):
        spans = [r["span_s"] for r in runs[ahead]]
        medians[ahead] = statistics.median(spans)
        peak = max(r["max_concurrent"] for r in runs[ahead])
        print(f"{'on' if ahead else 'off':<16}{medians[ahead]:>24.2f}{medians[ahead] / ideal:>8.2f}x{peak:>16}"
              f"{runs[ahead][0]['calls']:>7}{statistics.median(r['wall'] for r in runs[ahead]):>15.1f}   "
              + " ".join(f"{x:.2f}" for x in spans))
    print(f"ideal bound: {calls} calls x {args.latency:g} s / {args.concurrency} = {ideal:.2f} s; "
          f"judging ahead vs off: {medians[False] / medians[True]:.2f}x faster (medians of {args.repeats})")
    peak = max(r["max_concurrent"] for rs in runs.values() for r in rs)
    checks = [
        (f"judging ahead / ideal bound: {medians[True] / ideal:.2f}x (target <= 1.25x)", medians[True] / ideal <= 1.25),
        (f"peak requests in flight at the server: {peak} (limit {args.concurrency})", peak <= args.concurrency),
        ("same number of calls in every run", len({r["calls"] for rs in runs.values() for r in rs}) == 1),
    ]
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    return 0 if all(ok for _, ok in checks) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--jitter", type=float, default=0.0, help="each answer's latency is uniform in latency +- jitter")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (the study's samples: 512)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="combined runs (each from an empty cache); the median is compared (this machine is noisy)")
    parser.add_argument("--workers", type=int, default=0, help="measure real `pytest -n WORKERS` runs (see above)")
    parser.add_argument("--prompts", type=int, default=3, help="with --workers: images per checkpoint")
    args = parser.parse_args()
    if args.workers:
        return workers_main(args)

    with serving(args) as url:
        pixels = images(args.images, args.size)
        reference = images(1, args.size)[0][::-1].copy()
        with tempfile.TemporaryDirectory() as tmp:
            context = JudgeContext(reference_images=[reference], trigger="<phigep>", description="a woman astronaut",
                                   cache_dir=Path(tmp) / "cache")
            common = {"base_url": url, "timeout": 30.0}
            research = LlmRubricJudge(mode="per_criterion", max_in_flight=1, cache=False, **common)
            ours = LlmRubricJudge(mode="combined", max_in_flight=args.concurrency, **common)
            warm = [(cases(1, "warm-up")[0], pixels[0])]
            research.judge_batch(warm, context)  # import openai, open connections: not part of any timing
            ours.judge_batch(warm, context)

            t_seq, calls_seq, res_seq, _ = timed(research, list(zip(cases(args.images, "a"), pixels)), context, url)
            runs = []  # each repeat asks other prompts, so each starts from an empty cache
            for repeat in range(args.repeats):
                items = list(zip(cases(args.images, f"b{repeat}"), pixels))
                runs.append(timed(ours, items, context, url))
            t_cached, calls_cached, res_cached, _ = timed(ours, items, context, url)  # the last repeat again

    walls = [run[0] for run in runs]
    t_ours = statistics.median(walls)
    _, calls_ours, res_ours, _ = runs[-1]
    cpu_ours = statistics.median(run[3] for run in runs)
    if any(run[1] != calls_ours for run in runs):
        raise SystemExit(f"repeats made different numbers of calls: {[run[1] for run in runs]}")
    ideal = calls_ours * args.latency / args.concurrency
    same = all(a.value == b.value for x, y in zip(res_ours, res_cached) for a, b in zip(x, y))
    metrics = len(res_ours[0])
    print(f"llm_rubric throughput: {args.images} images ({args.size} px) x {metrics} criteria, "
          f"server latency {args.latency * 1000:.0f} ms")
    print(f"{'run':<44}{'wall s':>9}{'calls':>7}{'scores':>8}")
    print(f"{'research-style (per criterion, sequential)':<44}{t_seq:>9.3f}{calls_seq:>7}{sum(map(len, res_seq)):>8}")
    label = f"combined, max_in_flight {args.concurrency}" + (f" (median of {len(walls)})" if len(walls) > 1 else "")
    print(f"{label:<44}{t_ours:>9.3f}{calls_ours:>7}{sum(map(len, res_ours)):>8}")
    if len(walls) > 1:
        print(f"{'  each run':<44}" + " ".join(f"{w:.3f}" for w in walls))
    print(f"{'combined, cached rerun':<44}{t_cached:>9.3f}{calls_cached:>7}{sum(map(len, res_cached)):>8}")
    print(f"ideal bound for the combined run: {calls_ours} calls x {args.latency:g} s / {args.concurrency} = {ideal:.3f} s")
    cores = os.cpu_count() or 1
    print(f"judge process CPU in the combined run: {cpu_ours:.3f} s ({cpu_ours / max(1, calls_ours) * 1000:.1f} ms per call: "
          f"JPEG + edge map + JSON body); {cores} cores, load average {os.getloadavg()[0]:.1f} "
          "(the server process runs beside it)")
    speedup, vs_ideal, cached_share = t_seq / t_ours, t_ours / ideal, t_cached / t_ours
    checks = [
        (f"speed-up vs research-style: {speedup:.1f}x (target >= 20x)", speedup >= 20),
        (f"combined run / ideal bound: {vs_ideal:.2f}x (target <= 1.3x)", vs_ideal <= 1.3),
        (f"cached rerun / combined run: {cached_share * 100:.1f}% (target <= 5%), calls {calls_cached} (target 0)",
         cached_share <= 0.05 and calls_cached == 0),
        ("cached rerun returns the same scores", same),
    ]
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
