"""Batched vs one-at-a-time scoring with the embedding judges, side by side in one process.

For `clip_score` (a tiny random CLIP) and `dino` (a tiny random ViT, DINO's architecture), both built from
configs and saved to a temporary folder, the same N images are scored twice by the same loaded judge:

1. one at a time: `judge.judge(case, image)` per image (one model call per image);
2. batched: one `judge.judge_batch(all cases)`, which runs the model on `--batch-size` images per call.

Model loading is excluded (both runs share the loaded model); each mode is warmed up once, then timed over
`--repeats` rounds, best round kept. Prints images/s and the ratio. Target (issue 5): batched >= 3x on CPU.
The outputs are also checked to agree (batched and single scores must be the same numbers).

Face section (`face_identity`, dlib, real weights; issue 13), on scikit-image's public-domain faces:
1. cost per image, the pipeline before issue 13 (detection on a 640 px copy with one dlib up-step, the
   largest box, one descriptor) vs today's (detection scaled so a 40 px face is found, every face above the
   floor described), side by side on the same images: a 1024 px canvas with a 120 px face and with a 40 px
   face, 512 and 2048 px canvases. Target: today / before < 2x at 1024 px.
2. the smallest face found per canvas size (the astronaut's face pasted at 24..80 px), before and today;
3. the calibrated scale: dlib distance and cosine of astronaut augmentations (same person) and of the LFW
   faces (different people) against the astronaut photo.

    .venv/bin/python benchmarks/embedding_judges.py [--images 64] [--size 256] [--batch-size 32]
    .venv/bin/python benchmarks/embedding_judges.py --sections face [--repeats 3]
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

from lora_harness.core.cases import EvalCase, Prompt  # noqa: E402
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


# --- face_identity ------------------------------------------------------------------------------------------

def face_section(repeats: int) -> float:
    """Prints the three face tables; returns the cost ratio today / before on the 1024 px images."""
    import io

    from PIL import Image

    from face_images import astronaut, astronaut_crop, canvas_with_face, legacy_largest_face, lfw_face

    today = create_judge("face_identity")
    backend = today._faces.get()  # the loaded dlib models, shared by both pipelines
    context = JudgeContext(reference_images=[astronaut()], reference_paths=[Path("astronaut.png")])
    print(f"\nface_identity (dlib): before = 640 px RGB copy, one up-step, largest box; today = defaults "
          f"(min_face_px {today.min_face_px}, detect_min_side {today.detect_min_side}, "
          f"detect_max_side {today.detect_max_side}); best of {repeats}")
    ratios_1024 = []
    for side, face_px in ((1024, 120), (1024, 40), (512, 91), (2048, 60)):
        image = canvas_with_face(side, face_px)
        t_before = timed(lambda: legacy_largest_face(backend, image), repeats)
        t_today = timed(lambda: backend.faces(image), repeats)
        ratio = t_today / t_before
        if side == 1024:
            ratios_1024.append(ratio)
        found_before = legacy_largest_face(backend, image) is not None
        found_today = [f.size for f in backend.faces(image)]
        print(f"  {side:>4} px image, {face_px:>3} px face: before {t_before * 1000:6.0f} ms (found {found_before!s:5})"
              f"  today {t_today * 1000:6.0f} ms (faces {found_today})  today/before {ratio:4.2f}x")

    print("  smallest face found (astronaut pasted at 24..80 px; each size once):")
    for side in (512, 1024, 2048):
        sizes = range(24, 82, 2)
        smallest = {}
        for name, finder in (("before", lambda img: [legacy_largest_face(backend, img)]), ("today", backend.detect)):
            hits = [px for px in sizes if any(
                found is not None and abs((found[0][2] - found[0][0]) - px) < 0.35 * px
                for found in finder(canvas_with_face(side, px))
            )]
            smallest[name] = hits[0] if hits else None
        print(f"    {side:>4} px image: before {smallest['before']} px, today {smallest['today']} px")

    def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    photo = astronaut()
    same = {
        "crop": astronaut_crop(), "flip": np.ascontiguousarray(photo[:, ::-1]), "jpeg q20": jpeg(photo, 20),
        "resize 256": np.asarray(Image.fromarray(photo).resize((256, 256), Image.Resampling.LANCZOS)),
        "resize 1024": np.asarray(Image.fromarray(photo).resize((1024, 1024), Image.Resampling.LANCZOS)),
        "grey": np.asarray(Image.fromarray(photo).convert("L")), "darker": (photo * 0.6).astype(np.uint8),
        "40 px face in 1024": canvas_with_face(1024, 40), "60 px face in 2048": canvas_with_face(2048, 60),
    }

    def measured(images: list[np.ndarray]) -> tuple[list[float], list[float], int]:
        scores = [{s.metric: s.value for s in r} for r in today.judge_batch([(None, i) for i in images], context)]
        found = [s for s in scores if s["face_detected"] == 1.0]
        return [s["face_distance"] for s in found], [s["face_identity_max"] for s in found], int(sum(s["face_match"] for s in found))

    d_same, c_same, m_same = measured(list(same.values()))
    d_diff, c_diff, m_diff = measured([lfw_face(i) for i in range(100)])
    print(f"  same person ({len(d_same)}/{len(same)} astronaut augmentations found): distance "
          f"{min(d_same):.3f}-{max(d_same):.3f}, cosine {min(c_same):.3f}-{max(c_same):.3f}, face_match {m_same}/{len(d_same)}")
    print(f"  different people ({len(d_diff)}/100 LFW faces found): distance {min(d_diff):.3f}-{max(d_diff):.3f}, "
          f"cosine {min(c_diff):.3f}-{max(c_diff):.3f}, face_match {m_diff}/{len(d_diff)}, "
          f"cosine > 0.9: {sum(c > 0.9 for c in c_diff)}")
    worst = max(ratios_1024)
    print(f"face cost today / before at 1024 px: max {worst:.2f}x ({'meets' if worst < 2 else 'MISSES'} the < 2x target)")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="image side in px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--sections", default="embed,face", help="comma-separated: embed (clip/dino), face")
    args = parser.parse_args()
    sections = {part.strip() for part in args.sections.split(",") if part.strip()}
    if "embed" in sections:
        embed_section(args)
    if "face" in sections:
        face_section(args.repeats)
    return 0


def embed_section(args: argparse.Namespace) -> None:

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


if __name__ == "__main__":
    sys.exit(main())
