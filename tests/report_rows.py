"""Synthetic score rows, stores and images for the report tests (importable: tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lora_harness.run.store import ScoreRow, ScoreStore

XSS = "<script>alert('x')</script>"


def make_row(
    loraname: str = "lora-r4",
    step: int = 200,
    prompt_id: str = "00",
    metric: str = "eval_person_llm",
    value: float | None = 0.8,
    *,
    seed: int | None = 42,
    prompt: str = "<phigep> portrait photo",
    image: str = "",
    raw: dict[str, Any] | None = None,
    error: str | None = None,
    judge: str = "llm",
    run_id: str = "run1",
    recorded_at: float = 1.0,
) -> ScoreRow:
    checkpoint = f"{loraname}-step{step:06d}"
    key = f"{checkpoint}-p{prompt_id}" + ("" if seed is None else f"-s{seed}")
    return ScoreRow(
        case_key=key, checkpoint_key=checkpoint, loraname=loraname, training_step=step, step_kind="step",
        prompt_id=prompt_id, prompt=prompt, seed=seed, timestamp="20250106170134", image=image, variant=loraname,
        metric=metric, value=value, raw=raw or {}, error=error, judge=judge, judge_version="2", run_id=run_id,
        worker="main", recorded_at=recorded_at,
    )


def write_image(path: Path, seed: int, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def sweep_rows(tmp: Path, *, loras=("lora-r4", "lora-r32"), steps=(200, 400, 600), prompts=("00", "01")) -> list[ScoreRow]:
    """Two LoRAs over three steps and two prompts, two metrics, with images and LLM-style justifications."""
    rows = []
    for li, lora in enumerate(loras):
        for si, step in enumerate(steps):
            for pi, prompt_id in enumerate(prompts):
                image = write_image(tmp / "images" / f"{lora}_{step:06d}_{prompt_id}.png", li * 100 + si * 10 + pi)
                prompt = XSS if prompt_id == "01" else "<phigep> portrait photo, studio light"
                person = 0.2 + 0.3 * si + 0.05 * li
                rows.append(make_row(lora, step, prompt_id, "eval_person_llm", round(person, 3), prompt=prompt,
                                     image=str(image), raw={"textual_justification": f"face matches ({lora} {step} {prompt_id})", "model": "gpt-4o", "cost_usd": 0.01}))
                rows.append(make_row(lora, step, prompt_id, "clip_score", 20.0 + si + li, prompt=prompt,
                                     image=str(image), judge="clip", raw={"model": "clip-vit-base-patch16"}))
    return rows


def write_store(run_dir: Path, rows: list[ScoreRow], run_id: str = "run1", worker: str = "main") -> None:
    ScoreStore(run_dir, run_id=run_id, worker=worker).append(rows)
