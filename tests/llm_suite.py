"""A tiny kohya-style eval suite for LLM-judge tests: grey images of known brightness, a reference photo,
a config pointing `llm_rubric` at the local server, and helpers to read back what the store recorded."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

LORA = "person-lora"
PROMPTS = ["<phigep> portrait photo", "<phigep> in a park", "<phigep> playing chess", "<phigep> on a beach"]
METRICS = [
    "eval_person_llm", "eval_same_person_llm", "eval_prompt_adherence_llm",
    "eval_prompt_adherence_llm_simpler_prompt", "eval_image_quality_llm", "eval_limb_quality_llm",
    "eval_artifacts_quality_llm",
]

EVAL_TESTS = '''
def test_image(lora_case, lora_gate):
    lora_gate.check_image(lora_case)


def test_checkpoint(lora_checkpoint, lora_gate):
    lora_gate.check_checkpoint(lora_checkpoint)


def test_pairwise(lora_pairwise_comparison):
    lora_pairwise_comparison.check()
'''


def level(step: int, prompt: int) -> int:
    """The grey level of an image: distinct per case, so every score is predictable and distinct."""
    return 20 + (step // 100) * 40 + prompt * 9


def write_suite(
    root: Path,
    *,
    base_url: str | None,
    options: str = "",
    steps: Iterable[int] = (100,),
    prompts: int = 4,
    loras: Iterable[str] = (LORA,),
    extra: str = "",
    references: bool = True,
    size: int = 48,
) -> Path:
    """Write samples, reference and lora_eval.toml under root; return the config path."""
    sources = ""
    for lora in loras:
        folder = root / "samples" / lora
        folder.mkdir(parents=True, exist_ok=True)
        texts = PROMPTS[:prompts] + [f"<phigep> scene {i}" for i in range(len(PROMPTS), prompts)]
        (folder / "sample_prompts.txt").write_text("\n".join(f"{p} --d 42" for p in texts) + "\n")
        for step in steps:
            for p in range(prompts):
                shade = level(step, p) + (5 if lora != LORA else 0)
                pixels = np.full((size, size, 3), shade % 256, dtype=np.uint8)  # long sweeps wrap round
                Image.fromarray(pixels).save(folder / f"{lora}_{step:06d}_{p:02d}_20250101120000_42.png")
        sources += f'[[sources]]\npath = "samples/{lora}"\n\n'
    ref = root / "reference"
    ref.mkdir(exist_ok=True)
    Image.fromarray(np.full((48, 48, 3), 200, dtype=np.uint8)).save(ref / "person.png")
    base = f'base_url = "{base_url}", ' if base_url else ""
    person = '[person]\nreferences = ["reference"]\ntrigger = "<phigep>"\ndescription = "a person"\n' if references else ""
    config = root / "lora_eval.toml"
    config.write_text(
        f"""[run]
name = "llm"
report_dir = "reports"

{sources}
{person}
[[judges]]
name = "llm_rubric"
options = {{ {base}backoff_initial = 0.01, backoff_max = 0.05, timeout = 5.0{', ' + options if options else ''} }}

{extra}

[thresholds.eval_person_llm]
image = 0.5

[gate]
checkpoints = "all"
"""
    )
    (root / "test_llm_eval.py").write_text(EVAL_TESTS)
    return config


def store_rows(run_dir: Path) -> list[dict]:
    rows = []
    for path in sorted((run_dir / "scores").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def assert_one_row_per_score(rows: list[dict], cases: int, metrics: list[str] = METRICS) -> dict[tuple[str, str], dict]:
    """Zero lost and zero duplicated: exactly one row per (case, metric); returns them keyed."""
    counts = Counter((r["case_key"], r["metric"]) for r in rows)
    duplicated = {k: n for k, n in counts.items() if n > 1}
    assert not duplicated, f"duplicated score rows: {duplicated}"
    assert len({k[0] for k in counts}) == cases, f"expected {cases} cases, got {sorted({k[0] for k in counts})}"
    for case in {k[0] for k in counts}:
        missing = [m for m in metrics if (case, m) not in counts]
        assert not missing, f"{case}: lost scores for {missing}"
    return {(r["case_key"], r["metric"]): r for r in rows}
