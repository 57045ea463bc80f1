"""The generation image cache's reuse check: key only (the text chunk, as before issue 14) vs the issue-14 check
(chunk CRCs + SHA-256 of the pixel data against the seal; and the full-decode fallback for files without a
seal), next to what judging costs anyway (decoding the image for the judges).

Writes N PNGs at SIZE px with the harness's own writer (`save_png`: key, pixel digest, seal), then times, side
by side in one run with the order rotated per image: `stored_digest` (key only), `check_cached` (sealed file),
`_check_decoded` (the full-decode path), and `load_rgb` (the harness's decode before judging). Medians, ratios.

    .venv/bin/python benchmarks/cache_check.py [--images 40] [--size 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from lora_harness.generation.cache import (  # noqa: E402
    CacheKey, _check_decoded, check_cached, pixel_digest, save_png, stored_digest,
)
from lora_harness.core.images import load_rgb  # noqa: E402


def photo_like(size: int, seed: int) -> Image.Image:
    """Smooth gradients plus mild noise: compresses like a generated photo, not like white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y - seed), np.sin(4 * (x + y))], axis=-1) * 90 + 128
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths, keys = [], []
        for i in range(args.images):
            key = CacheKey.of({"case": i})
            path = Path(tmp) / f"{i:03d}.png"
            save_png(photo_like(args.size, i), path, key)
            paths.append(path)
            keys.append(key)
        steps = {
            "key only": lambda p, k: stored_digest(p) == k.digest,
            "key + seal": lambda p, k: check_cached(p, k.digest).usable,
            "full decode": lambda p, k: _check_decoded(p, {"pixels": _pixels[p]}).usable,
            "judge decode": lambda p, k: load_rgb(p) is not None,
        }
        timings: dict[str, list[float]] = {name: [] for name in steps}
        _pixels = {}
        for path in paths:
            with Image.open(path) as img:
                img.load()
                _pixels[path] = pixel_digest(img)
        for r in range(args.rounds):
            for i, (path, key) in enumerate(zip(paths, keys)):
                names = list(steps)
                names = names[(i + r) % len(names):] + names[: (i + r) % len(names)]  # rotate the order per image
                for name in names:
                    started = time.perf_counter()
                    assert steps[name](path, key)
                    timings[name].append(time.perf_counter() - started)
        med = {name: statistics.median(values) * 1000 for name, values in timings.items()}
        size_mb = statistics.mean(p.stat().st_size for p in paths) / 1e6
        print(f"cache reuse check: {args.images} PNGs of {args.size}x{args.size} px ({size_mb:.2f} MB each), {args.rounds} rounds, medians per image")
        for name, value in med.items():
            print(f"  {name:13s} {value:8.2f} ms")
        for name in ("key + seal", "full decode"):
            extra = med[name] - med["key only"]
            print(f"{name}: adds {extra:.2f} ms per reused image = {extra / med['judge decode']:.2f}x the decode judging does anyway")
        print(f"seal vs full decode: {med['full decode'] / med['key + seal']:.1f}x faster")


if __name__ == "__main__":
    main()
