"""Benchmark: build the report (CSV + HTML with thumbnails and trend plots) for 10,000 rows and 1,000 images.

Target (issue 6): under 10 s on the development machine. The data is synthetic and made in a temp folder:
2 LoRAs x 50 checkpoints x 10 prompts = 1,000 PNG images (512 x 512, like the study's samples), 10 metrics
each (seven LLM questions with justifications, CLIP score, two image statistics) = 10,000 score rows.

Two builds run side by side. Cold: a rebuild from the store alone, every image decoded again for its
thumbnail (`lora-harness report` on a run folder without thumbs/, or `--from-csv` with images). End of a
pytest run: what the controller does at session end, where the eval workers already made each thumbnail
right after judging the image, from the pixels the judges had (its extra cost per image is printed too).
The target applies to the report a run writes; the cold time is printed against it as well.

    .venv/bin/python benchmarks/report_build.py [--images embed|link] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# lora_harness is imported inside the functions: thumbnail worker processes (spawn) re-import this script
# as their main module, and a real run's main module (pytest, lora-harness) is light as well.

LORAS = ("bench-lora-r4", "bench-lora-r32")
STEPS = tuple(range(200, 10_200, 200))  # 50 checkpoints
PROMPTS = tuple(f"{i:02d}" for i in range(10))
LLM_METRICS = (
    "eval_person_llm", "eval_image_quality_llm", "eval_limb_quality_llm", "eval_artifacts_quality_llm",
    "eval_same_person_llm", "eval_prompt_adherence_llm", "eval_prompt_adherence_llm_simpler_prompt",
)
TARGET_SECONDS = 10.0


def base_images(folder: Path, count: int = 20, size: int = 512) -> list[Path]:
    """A few distinct photo-like PNGs (smooth gradients, shapes, mild noise): copies make up the 1,000."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(count):
        r = 255 * (0.5 + 0.5 * np.sin(6.3 * (x * (i + 1) / 7 + y)))
        g = 255 * np.clip(x * y + 0.2 * rng.random(), 0, 1)
        b = 255 * (0.5 + 0.5 * np.cos(4.0 * (y - x) + i))
        image = np.stack([r, g, b], axis=2) + rng.normal(0, 6, (size, size, 3))
        path = folder / f"base_{i:02d}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def make_run(root: Path) -> tuple[Path, int, int]:
    from lora_harness.report.manifest import RunManifest, write_manifest
    from lora_harness.run.store import ScoreRow, ScoreStore

    samples, run_dir = root / "samples", root / "reports" / "bench"
    samples.mkdir(parents=True)
    bases = base_images(samples)
    rng = np.random.default_rng(1)
    rows: list = []
    images = 0
    for li, lora in enumerate(LORAS):
        for si, step in enumerate(STEPS):
            for prompt in PROMPTS:
                image = samples / f"{lora}_{step:06d}_{prompt}_20250106170134.png"
                shutil.copyfile(bases[images % len(bases)], image)
                images += 1
                key = f"{lora}-step{step:06d}-p{prompt}-s42"
                common = dict(
                    case_key=key, checkpoint_key=f"{lora}-step{step:06d}", loraname=lora, training_step=step,
                    step_kind="step", prompt_id=prompt, prompt=f"<phigep> prompt {prompt} & <friends>", seed=42,
                    timestamp="20250106170134", image=str(image), variant=lora, error=None, run_id="bench",
                    worker="main", recorded_at=float(images),
                )
                trend = min(1.0, 0.4 + si / 60 - 0.1 * li)
                for metric in LLM_METRICS:
                    value = float(np.clip(trend + rng.normal(0, 0.15), 0, 1).round(2))
                    raw = {"score": value, "textual_justification": f"The face matches the reference closely; "
                           f"hair colour and length agree, eyes and beard as in the photo ({metric}, {value}).",
                           "model": "gpt-4o-2024-08-06", "cost_usd": 0.0021}
                    rows.append(ScoreRow(**common, metric=metric, value=value, raw=raw, judge="llm", judge_version="3"))
                rows.append(ScoreRow(**common, metric="clip_score", value=float(25 + 10 * trend + rng.normal(0, 3)),
                                     raw={"model": "openai/clip-vit-base-patch16"}, judge="clip", judge_version="1"))
                for metric in ("spectral_score", "magnitude_score"):
                    rows.append(ScoreRow(**common, metric=metric, value=float(rng.random()),
                                         raw={"hf_ratio": float(rng.random()), "n_peaks": 2}, judge="image_stats", judge_version="1"))
    ScoreStore(run_dir, run_id="bench").append(rows)
    write_manifest(run_dir, RunManifest(run_name="bench", config_hash="benchmark0000000"))
    return run_dir, len(rows), images


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_build(run_dir: Path, options) -> tuple:
    """Wall seconds, CPU seconds of this process (all threads) and of its worker processes, for one build."""
    from lora_harness.report.build import report_run
    from lora_harness.report.html import BuildTimings

    timings = BuildTimings()
    started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    files = report_run(run_dir, options=options, timings=timings)
    return time.perf_counter() - started, time.process_time() - cpu, _children_cpu() - children, timings, files.html


def thumbnails_while_judging(run_dir: Path, max_px: int) -> float:
    """What the eval workers do after judging each image (plugin `_thumbnail`): a thumbnail from the pixels
    the judges already had, packed by the process's `ThumbnailWriter` (one pack file, not one file per image).
    Decoding here stands in for the judges' own decode; only the rest is extra."""
    from lora_harness.report.thumbs import THUMBS_DIRNAME, ThumbnailWriter
    from lora_harness.run.store import latest_rows, read_rows

    shutil.rmtree(run_dir / THUMBS_DIRNAME)
    images = {row.case_key: Path(row.image) for row in latest_rows(read_rows(run_dir))}
    decoded = {key: np.asarray(Image.open(path).convert("RGB")) for key, path in images.items()}  # the judges' decode
    started = time.process_time()
    writer = ThumbnailWriter.for_run(run_dir, max_px, run_id="bench", worker="main")
    for key, path in images.items():
        writer.submit(key, path, decoded[key])
    writer.close()
    return time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", choices=["embed", "link"], default="embed")
    parser.add_argument("--keep", help="build in this folder and keep it (default: a temp folder, removed)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lora-harness-bench-"))
    try:
        started = time.perf_counter()
        run_dir, n_rows, n_images = make_run(root)
        print(f"synthetic run: {n_rows} rows, {n_images} images ({time.perf_counter() - started:.1f} s to generate)")
        from lora_harness.report.html import ReportOptions

        options = ReportOptions(images=args.images)
        load_before = os.getloadavg()[0]
        cores = os.cpu_count() or 1
        cold, cold_cpu, cold_workers, cold_phases, html = timed_build(run_dir, options)
        judged_cpu = thumbnails_while_judging(run_dir, options.thumbnail_px)
        end, end_cpu, end_workers, end_phases, _ = timed_build(run_dir, options)
        for label, seconds, cpu, workers, phases in (
            ("cold rebuild (no thumbnails yet)", cold, cold_cpu, cold_workers, cold_phases),
            ("end of a pytest run (thumbnails made while judging)", end, end_cpu, end_workers, end_phases),
        ):
            detail = ", ".join(f"{name} {value:.2f}" for name, value in phases.phases.items())
            idle = max(cpu, (cpu + workers) / cores)
            print(f"{label}: {seconds:.2f} s wall; CPU {cpu:.2f} s here + {workers:.2f} s in thumbnail workers "
                  f"(so on {cores} idle cores at least {idle:.2f} s); phases (wall): {detail}")
        print(f"thumbnails while judging: {judged_cpu / n_images * 1000:.1f} ms CPU per image in the eval workers, "
              f"spread over the run ({judged_cpu:.2f} s in all)")
        print(f"machine: {cores} cores, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
              "(other processes share the cores: wall time grows with the load)")
        print(f"end-of-run/cold ratio: {end / cold:.2f}; report.html {html.stat().st_size / 1e6:.1f} MB ({args.images} images)")
        print(f"cold rebuild: {cold:.2f} s ({'under' if cold < TARGET_SECONDS else 'over'} the {TARGET_SECONDS:.0f} s target)")
        verdict = "PASS" if end < TARGET_SECONDS else "FAIL"
        print(f"{verdict}: end-of-run report {end:.2f} s vs target {TARGET_SECONDS:.0f} s")
        return 0 if end < TARGET_SECONDS else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
