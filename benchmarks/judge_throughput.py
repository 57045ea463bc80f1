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
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from lora_harness.cases import EvalCase, Prompt  # noqa: E402
from lora_harness.judges.base import JudgeContext  # noqa: E402
from lora_harness.judges.llm import LlmRubricJudge  # noqa: E402


def serve(latency: float, port_queue: "multiprocessing.Queue[str]", stop: "multiprocessing.synchronize.Event") -> None:
    from llm_server import FakeOpenAIServer

    with FakeOpenAIServer(latency=latency, score_from="hash") as server:
        port_queue.put(server.url)
        stop.wait()


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (the study's samples: 512)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="combined runs (each from an empty cache); the median is compared (this machine is noisy)")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    process = ctx.Process(target=serve, args=(args.latency, queue, stop), daemon=True)
    process.start()
    try:
        url = queue.get(timeout=60)
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
    finally:
        stop.set()
        process.join(timeout=10)

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
