"""A secret written through every path to the run folder is found nowhere on disk.

Paths: a case judge's error, a pairwise comparison (`Harness.compare`), memorization (`checks/memorization.py`),
a test's own score (`lora_record`), a ready row (`ScoreStore.append`) and the generation log. Each writes the
secret in its own way (an exception text, an error string, a raw value, a log field); the test then reads every
file under the run folder byte by byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lora_harness.core.cases import Checkpoint
from lora_harness.checks.memorization import MemorizationCheck
from lora_harness.core.config import parse_config
from lora_harness.generation.cache import GenerationLog
from lora_harness.run.harness import Harness
from lora_harness.judges.base import Score, register
from lora_harness.judges.llm.pairwise import Comparison
from lora_harness.core.redact import REDACTED
from lora_harness.run.store import ScoreRow, read_rows

SECRET = "sk-store-door-secret-0123456789abcdef"
ENV_SECRET = "plain-env-secret-4242"  # not key-shaped: redacted because its variable is named like a secret


@register("leaky_case_judge")
class LeakyCaseJudge:
    """Fails like a client library that quotes its auth header in the exception text."""

    name, version, metrics = "leaky_case_judge", "1", ["leaky"]

    def judge(self, case, image, context):
        raise RuntimeError(f"401 Unauthorized: 'Authorization: Bearer {SECRET}' token={ENV_SECRET}")


@register("leaky_pair_judge")
class LeakyPairJudge:
    """A pair judge (`compare_batch`) whose every preference carries the key in its error and raw values."""

    name, version, metrics = "leaky_pair_judge", "1", ["pairwise_preference"]

    def comparisons(self, cases):
        base = sorted((c for c in cases if c.loraname == "base"), key=lambda c: c.key)
        cand = sorted((c for c in cases if c.loraname == "cand"), key=lambda c: c.key)
        return [Comparison(self.name, Checkpoint.of(base[0]), Checkpoint.of(cand[0]), tuple(zip(base, cand)), (), 0.1)]

    def compare_batch(self, pairs, context):
        return [[Score("pairwise_preference", None, {"request": f"api_key={ENV_SECRET}"}, f"quota exceeded for {SECRET}")]
                for _ in pairs]


@register("leaky_similarity")
class LeakySimilarity:
    """A similarity judge for memorization whose raw values quote the key."""

    name, version, metrics = "leaky_similarity", "1", ["leaky_similarity_max"]

    def judge(self, case, image, context):
        reference = str(context.reference_paths[0])
        return [Score("leaky_similarity_max", 0.2, {"best_reference": reference, "endpoint": f"https://x/?key={ENV_SECRET}"})]


def _image(path: Path, seed: int) -> None:
    pixels = (np.random.default_rng(seed).random((32, 32, 3)) * 80 + 80).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def _harness(tmp_path: Path) -> Harness:
    folder, training = tmp_path / "samples", tmp_path / "training"
    folder.mkdir()
    training.mkdir()
    (folder / "sample_prompts.txt").write_text("<phigep> portrait\n")
    for seed, lora in enumerate(("base", "cand")):
        _image(folder / f"{lora}_000100_00_20250101120000.png", seed)
    _image(training / "photo.png", 7)
    config = parse_config(
        {"run": {"report_dir": str(tmp_path / "reports")}, "sources": [{"path": str(folder)}],
         "judges": [{"name": "image_stats"}, {"name": "leaky_case_judge"}, {"name": "leaky_pair_judge"}],
         "memorization": {"training_dir": str(training), "judges": ["leaky_similarity"]}},
        base_dir=tmp_path,
    )
    return Harness(config, run_id="r1")


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_secret_through_every_store_path_is_nowhere_under_the_run_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LEAKY_SERVICE_TOKEN", ENV_SECRET)
    harness = _harness(tmp_path)
    run_dir = harness.config.run_dir
    cand = next(c for c in harness.cases if c.loraname == "cand")

    scores = harness.score(cand)  # 1. a case judge's exception text
    (comparison,) = harness.pairwise_comparisons()
    result = harness.compare(comparison)  # 2. a pairwise comparison
    memorization = MemorizationCheck().evaluate(harness, Checkpoint.of(cand))  # 3. memorization
    harness.record(cand, Score("own", 1.0, {"note": f"used {SECRET}"}), source="test:own")  # 4. lora_record
    row = ScoreRow.of(cand, Score("appended", None, error=f"denied: {SECRET}"), judge="x", judge_version="1",
                      run_id="r1", worker="main")
    harness.store.append([row])  # 5. a ready row
    GenerationLog(run_dir / "images", "main").write("image", action="failed", case=cand.key,
                                                     error=f"hub said 401 for token {ENV_SECRET}")  # 6. generation log

    files = _files(run_dir)
    assert {p.parent.name for p in files} == {"scores", "images"}
    for path, data in files.items():
        assert SECRET.encode() not in data and ENV_SECRET.encode() not in data, f"secret on disk in {path}"
    # every path did write, with the secret replaced (not dropped): the evidence a reader needs stays
    rows = {r.metric: r for r in read_rows(run_dir)}
    assert "401 Unauthorized" in rows["leaky"].error and REDACTED in rows["leaky"].error
    assert rows["pairwise_preference"].error == f"quota exceeded for {REDACTED}"
    assert rows["pairwise_preference"].raw == {"request": f"api_key={REDACTED}"}
    assert rows["memorization_leaky_similarity_max"].raw["endpoint"] == f"https://x/?key={REDACTED}"
    assert rows["memorization_leaky_similarity_max"].value == 0.2
    assert rows["own"].raw == {"note": f"used {REDACTED}"}
    assert rows["appended"].error == f"denied: {REDACTED}"
    log = (run_dir / "images" / "generation.main.jsonl").read_text()
    assert f"token {REDACTED}" in log
    # ... and what the run keeps in memory (failure messages, reports) is the redacted text too
    assert SECRET not in scores["leaky"].error and REDACTED in scores["leaky"].error
    assert result.errors == [f"quota exceeded for {REDACTED}"]
    assert not memorization.errors and all(ENV_SECRET not in line for line in memorization.lines)
    assert harness.score(cand)["own"].raw == {"note": f"used {REDACTED}"}
