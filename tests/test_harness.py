"""Harness behaviour that the plugin relies on: recording order and secret redaction at the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lora_harness.core.config import parse_config
from lora_harness.run.harness import Harness
from lora_harness.judges.base import Score, register
from lora_harness.run.store import read_rows

SECRET = "sk-test-harness-secret-0123456789"


@register("leaky_test_judge")
class LeakyJudge:
    """Fails like a client library that quotes its auth header in the exception text."""

    name, version, metrics = "leaky_test_judge", "1", ["leaky"]

    def judge(self, case, image, context):
        raise RuntimeError(f"401 Unauthorized for header 'Authorization: Bearer {SECRET}'")


def make_harness(tmp_path: Path, judges: list[str]) -> Harness:
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "sample_prompts.txt").write_text("<phigep> portrait\n")
    pixels = (np.random.default_rng(0).random((48, 48, 3)) * 60 + 90).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "lora_000100_00_20250101120000.png")
    config = parse_config(
        {"run": {"report_dir": str(tmp_path / "reports")}, "sources": [{"path": str(folder)}],
         "judges": [{"name": name} for name in judges]},
        base_dir=tmp_path,
    )
    return Harness(config, run_id="r1")


def test_a_score_recorded_before_judging_does_not_stop_the_judges(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, ["image_stats"])
    case = harness.cases[0]
    harness.record(case, Score("custom", 0.25), source="test:x")
    scores = harness.score(case)
    assert set(scores) == {"spectral_score", "magnitude_score", "custom"}
    assert scores["custom"].value == 0.25 and scores["spectral_score"].value is not None
    assert sorted(r.metric for r in read_rows(harness.config.run_dir)) == ["custom", "magnitude_score", "spectral_score"]


def test_a_secret_in_a_judge_error_never_reaches_the_store_or_the_failure_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    harness = make_harness(tmp_path, ["image_stats", "leaky_test_judge"])
    case = harness.cases[0]
    scores = harness.score(case)
    assert scores["leaky"].value is None and "401 Unauthorized" in scores["leaky"].error
    assert SECRET not in scores["leaky"].error
    assert all(SECRET not in line for line in harness.image_verdict(case)[0].lines)
    stored = "".join(p.read_text() for p in (harness.config.run_dir / "scores").glob("*.jsonl"))
    assert "401 Unauthorized" in stored and SECRET not in stored
    assert scores["spectral_score"].value is not None  # the other judge's scores are kept
