"""Adaptive judging (`[gate] adaptive = true`): an inconclusive gated checkpoint gets more judge repeats, in
rounds, against a real local OpenAI-compatible server; the looks are paid for with spent confidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llm_server import FakeOpenAIServer
from llm_suite import write_suite
from lora_harness.core.config import GateConfig, StatsConfig, load_config
from lora_harness.run.harness import Harness
from lora_harness.verdicts.sequential import decision_stats, look_confidence, planned_rounds, repeat_rounds


def test_rounds_double_up_to_the_budget_and_each_look_spends_its_share() -> None:
    assert planned_rounds(1, 8) == [1, 2, 4, 8]
    assert planned_rounds(9, 144) == [9, 18, 36, 72, 144]
    assert planned_rounds(3, 10) == [3, 6, 10]
    assert look_confidence(0.98, 4) == pytest.approx(0.995)
    assert repeat_rounds(GateConfig()) == [1]
    assert decision_stats(GateConfig(), StatsConfig()).confidence == 0.98
    assert decision_stats(GateConfig(adaptive=True, max_repeats=8), StatsConfig()).confidence == pytest.approx(0.995)
    with pytest.raises(ValueError):
        planned_rounds(4, 2)


def _suite(root: Path, url: str, adaptive: bool) -> Path:
    """Three images of the same grey (0.651): the judge's noise (+-0.01 at temperature > 0) is all that
    spreads their scores, so repeats narrow the interval; the minimum is 0.62."""
    options = 'temperature = 0.7, criteria = ["same_person"], mode = "per_criterion"'
    config = write_suite(root, base_url=url, options=options, prompts=3)
    for index, png in enumerate(sorted((root / "samples").rglob("*.png"))):
        pixels = np.full((48, 48, 3), 166, dtype=np.uint8)
        pixels[0, index] = 167  # a different image (own cache key and noise), the same brightness to 3 places
        Image.fromarray(pixels).save(png)
    text = config.read_text().replace("[thresholds.eval_person_llm]\nimage = 0.5\n", "[thresholds.eval_same_person_llm]\ncheckpoint = 0.62\n")
    text = text.replace('[gate]\ncheckpoints = "all"', f"[gate]\nadaptive = {'true' if adaptive else 'false'}\nmax_repeats = 8")
    config.write_text(text)
    return config


@pytest.mark.slow
def test_an_inconclusive_checkpoint_is_decided_by_more_repeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-adaptive")
    with FakeOpenAIServer() as server:
        fixed = Harness(load_config(_suite(tmp_path / "fixed", server.url, adaptive=False)), run_id="fixed")
        [checkpoint] = fixed.checkpoints
        verdict, findings, _ = fixed.checkpoint_verdict(checkpoint)
        assert verdict.decision == "inconclusive", verdict.lines
        assert server.call_count == 3  # one answer per image

        adaptive = Harness(load_config(_suite(tmp_path / "adaptive", server.url, adaptive=True)), run_id="adaptive")
        before = server.call_count
        verdict, findings, values = adaptive.checkpoint_verdict(checkpoint)
        assert verdict.decision == "pass", verdict.lines
        asked = server.call_count - before
        assert asked in (3 + 3, 3 + 3 + 6, 3 + 3 + 6 + 12)  # 1, 2, 4, 8 repeats: earlier answers from the cache
        repeats = {score.raw.get("repeats") for case in adaptive.cases for score in [adaptive.score(case)["eval_same_person_llm"]]}
        assert len(repeats) == 1 and repeats.pop() > 1
        # the new answers are stored like any other: the newest row per case is the repeated one
        rows = [r for r in adaptive.store.rows(run_id="adaptive") if r.metric == "eval_same_person_llm"]
        assert len(rows) > 3 and {r.raw.get("repeats") for r in rows} >= {1}
