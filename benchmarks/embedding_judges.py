"""Batched vs one-at-a-time scoring with the embedding judges, side by side in one process.

For `clip_score` (a tiny random CLIP) and `dino` (a tiny random ViT, DINO's architecture), both built from
configs and saved to a temporary folder, the same N images are scored twice by the same loaded judge:

1. one at a time: `judge.judge(case, image)` per image (one model call per image);
2. batched: one `judge.judge_batch(all cases)`, which runs the model on `--batch-size` images per call.

Model loading is excluded (both runs share the loaded model); each mode is warmed up once, then timed over
`--repeats` rounds, best round kept. Prints images/s and the ratio. Target (issue 5): batched >= 3x on CPU.
The outputs are also checked to agree (batched and single scores must be the same numbers).

    .venv/bin/python benchmarks/embedding_judges.py [--images 64] [--size 256] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from lora_harness.cases import EvalCase, Prompt  # noqa: E402
from lora_harness.judges import create_judge  # noqa: E402
from lora_harness.judges.base import JudgeContext  # noqa: E402


def images(n: int, size: int) -> list[np.ndarray]:
    """Deterministic, distinct images: crops of the astronaut portrait plus seeded noise."""
    from PIL import Image
    from skimage import data

    base = data.astronaut()
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        top, left = (i * 7) % 200, (i * 13) % 200
        crop = Image.fromarray(base[top : top + 312, left : left + 312]).resize((size, size))
        noisy = np.asarray(crop).astype(np.int16) + rng.integers(-8, 9, (size, size, 3))
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return out


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations, lazy loading, reference embeddings
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compare(name: str, judge, items, context: JudgeContext, repeats: int, metric: str) -> float:
    single = [judge.judge(case, image, context) for case, image in items]
    batched = judge.judge_batch(items, context)
    worst = max(
        abs(next(s.value for s in a if s.metric == metric) - next(s.value for s in b if s.metric == metric))
        for a, b in zip(single, batched)
    )
    t_single = timed(lambda: [judge.judge(case, image, context) for case, image in items], repeats)
    t_batch = timed(lambda: judge.judge_batch(items, context), repeats)
    n = len(items)
    ratio = t_single / t_batch
    print(
        f"{name:<11} one-at-a-time {n / t_single:8.1f} images/s   batched {n / t_batch:8.1f} images/s   "
        f"ratio {ratio:5.2f}x   max |batched - single| {metric} = {worst:.2e}"
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="image side in px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch
    import transformers

    from tiny_models import save_tiny_clip, save_tiny_vit

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"{args.images} images of {args.size}x{args.size} px, batch_size {args.batch_size}, best of {args.repeats}"
    )
    pictures = images(args.images, args.size)
    items = [
        (EvalCase("bench", 100, Prompt(f"{i:02d}", f"photo of <phigep> number {i}"), Path(f"{i}.png")), image)
        for i, image in enumerate(pictures)
    ]
    context = JudgeContext(
        reference_images=pictures[:3], reference_paths=[Path(f"ref{i}.png") for i in range(3)],
        trigger="<phigep>", description="a woman astronaut",
    )
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = save_tiny_clip(Path(tmp) / "clip")
        vit = save_tiny_vit(Path(tmp) / "vit")
        clip_judge = create_judge("clip_score", {"model": str(clip), "batch_size": args.batch_size})
        ratios["clip_score"] = compare("clip_score", clip_judge, items, context, args.repeats, "clip_score")
        dino_judge = create_judge("dino", {"model": str(vit), "batch_size": args.batch_size})
        ratios["dino"] = compare("dino", dino_judge, items, context, args.repeats, "dino_mean")
    target = 3.0
    verdict = "meets" if min(ratios.values()) >= target else "MISSES"
    print(f"batched / one-at-a-time: min ratio {min(ratios.values()):.2f}x ({verdict} the >= {target:.0f}x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
