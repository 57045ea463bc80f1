"""What issue 18's identity extras cost next to the face judging they build on, side by side in one process.

On scikit-image's public-domain faces (the astronaut at 512 px and pasted into a 1024 px canvas, LFW faces),
with dlib's real weights (extra `face`):

1. pose: `face_identity` per image (detection, landmarks, descriptor: the work that exists anyway) vs the
   head-pose estimate added per face (`cv2.solvePnP` on the 5 landmarks). Target: pose < 1% of judging.
2. reference audit: 10 photos (astronaut framings + one LFW stranger) end to end, and its share spent
   outside face detection (leave-one-out, thumbnails, duplicates). Target: outside detection < 10%.
3. diversity: the set metrics of 16 images of 512 px from pixels (thumbnails, pairwise distances, Vendi),
   vs judging the same 16 images with face_identity. Target: < 10% of judging.

    .venv/bin/python benchmarks/identity_extras.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from face_images import astronaut, canvas_with_face, lfw_face  # noqa: E402
from lora_harness.analyses.reference_audit import audit_images, audit_references  # noqa: E402
from lora_harness.analyses.diversity_metrics import image_embeddings, mean_pairwise_cosine_distance, vendi_score  # noqa: E402
from lora_harness.judges import JudgeContext  # noqa: E402
from lora_harness.judges.face_identity import FaceIdentityJudge  # noqa: E402
from lora_harness.judges.pose import head_pose  # noqa: E402


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def framings() -> list[np.ndarray]:
    a = astronaut()
    boxes = [(0, 400, 100, 500), (20, 340, 150, 470), (10, 260, 180, 430), (0, 512, 0, 512), (40, 300, 170, 430),
             (0, 380, 60, 440), (30, 330, 80, 380), (0, 450, 50, 500), (15, 315, 120, 420)]
    return [np.asarray(Image.fromarray(np.ascontiguousarray(a[t:b, l:r])).resize((400, 400))) for t, b, l, r in boxes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    judge = FaceIdentityJudge()
    backend = judge.backend_models()
    context = JudgeContext(reference_images=[astronaut()])
    images = [astronaut(), canvas_with_face(1024, 120), lfw_face(74, face_px=140), lfw_face(10, face_px=140)]
    print(f"identity extras: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f}, best of {args.repeats}")

    judging = best(lambda: judge.judge_batch([(None, im) for im in images], context), args.repeats)
    faces = [judge.detect_sized(backend, im) for im in images]
    pose = best(lambda: [head_pose(f.landmarks, "dlib", w, h) for fs, _, (w, h) in faces for f in fs], args.repeats)
    n_faces = sum(len(fs) for fs, _, _ in faces)
    print(f"1. face_identity judging {len(images)} images: {judging * 1000:.1f} ms; pose of {n_faces} faces: "
          f"{pose * 1000:.3f} ms -> pose / judging = {pose / judging:.4%} (target < 1%)")

    photos = framings() + [lfw_face(74, face_px=140)]
    with tempfile.TemporaryDirectory() as tmp:
        for i, im in enumerate(photos):
            Image.fromarray(im).save(Path(tmp) / f"p{i:02d}.png")
        whole = best(lambda: audit_references([Path(tmp)]), args.repeats)
    detected = [judge.detect(backend, im)[0] for im in photos]
    names = [f"p{i:02d}.png" for i in range(len(photos))]
    rest = best(lambda: audit_images(photos, names, detected, backend="dlib", match_distance=0.6), args.repeats)
    print(f"2. audit of {len(photos)} photos: {whole * 1000:.1f} ms end to end; leave-one-out + duplicates from "
          f"detected faces: {rest * 1000:.1f} ms -> {rest / whole:.2%} of the audit (target < 10%)")

    rng = np.random.default_rng(0)
    sixteen = [np.asarray(Image.fromarray(photos[i % len(photos)]).resize((512, 512))) for i in rng.permutation(16)]
    judging16 = best(lambda: judge.judge_batch([(None, im) for im in sixteen], context), 1)
    diversity = best(lambda: (mean_pairwise_cosine_distance(e := image_embeddings(sixteen)), vendi_score(e)), args.repeats)
    print(f"3. diversity of 16 images from pixels: {diversity * 1000:.1f} ms; face_identity judging them: "
          f"{judging16 * 1000:.1f} ms -> {diversity / judging16:.2%} (target < 10%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
