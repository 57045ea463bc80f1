"""Maxima (`image_max`, `checkpoint_max`) for lower-is-better metrics such as face_distance: the same one
verdict rule as minimums, mirrored, checked on known answers and by simulation against its promise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from lora_harness.core.config import ConfigError, StatsConfig, Threshold, load_config
from lora_harness.judges.base import Score
from lora_harness.plugin.terminal_table import format_table
from lora_harness.report.view import Rules, build_view
from lora_harness.verdicts.thresholds import (
    Finding, checkpoint_findings, checkpoint_verdict, image_breach, image_findings, image_verdict,
)
from report_rows import make_row

FACE = "face_distance"
MAX = {FACE: Threshold(image_max=0.6, checkpoint_max=0.5)}


def _scores(value: float | None) -> dict[str, Score]:
    return {FACE: Score(FACE, value)}


# --- per image -----------------------------------------------------------------------------------------


def test_image_above_the_maximum_fails_and_equal_passes():
    assert image_findings(_scores(0.6), MAX) == []  # exactly at the maximum passes
    assert image_findings(_scores(0.2), MAX) == []
    findings = image_findings(_scores(0.61), MAX)
    assert findings == [Finding(FACE, 0.61, None, "image", maximum=0.6)]
    assert findings[0].outside
    assert findings[0].describe() == "face_distance = 0.6100 > 0.6000 (per-image maximum)"
    verdict, _ = image_verdict(_scores(0.61), MAX, gated=True)
    assert verdict.decision == "fail"


def test_image_nan_under_a_maximum_is_an_error_not_a_pass():
    (finding,) = image_findings(_scores(math.nan), {FACE: Threshold(image_max=0.6)})
    assert finding.decision == "error" and not finding.outside
    assert "NaN" in finding.describe()


def test_image_breach_names_the_bound():
    both = Threshold(image=0.2, image_max=0.6)
    assert image_breach(0.1, both) == "minimum"
    assert image_breach(0.7, both) == "maximum"
    assert image_breach(0.2, both) is None and image_breach(0.6, both) is None
    assert image_breach(5.0, Threshold()) is None


def test_image_with_both_minimum_and_maximum():
    both = {FACE: Threshold(image=0.2, image_max=0.6)}
    assert image_findings(_scores(0.4), both) == []
    assert [f.minimum for f in image_findings(_scores(0.1), both)] == [0.2]
    assert [f.maximum for f in image_findings(_scores(0.7), both)] == [0.6]


# --- per checkpoint ------------------------------------------------------------------------------------

LOW = [0.30, 0.32, 0.28, 0.31, 0.29, 0.30, 0.33, 0.27, 0.30]  # interval well under 0.5
HIGH = [0.70, 0.72, 0.68, 0.71, 0.69, 0.70, 0.73, 0.67, 0.70]  # interval well over 0.5
STRADDLE = [0.40, 0.60, 0.45, 0.55, 0.50, 0.42, 0.58, 0.48, 0.52]  # mean 0.5, interval around it
JUST_UNDER = [0.45 + d for d in (-0.08, 0.08, -0.05, 0.05, 0.0, -0.03, 0.03, -0.06, 0.06)]  # mean 0.45 < 0.5 < high


def _ckpt(values, on="ci", **bounds):
    return checkpoint_findings({FACE: values}, {FACE: Threshold(on=on, **bounds)}, StatsConfig())


@pytest.mark.parametrize("on", ["ci", "ci_low", "mean"])
def test_checkpoint_maximum_passes_well_under_and_fails_well_over(on):
    assert _ckpt(LOW, on, checkpoint_max=0.5) == []
    (finding,) = _ckpt(HIGH, on, checkpoint_max=0.5)
    assert finding.decision == "fail" and finding.outside and finding.maximum == 0.5 and finding.minimum is None
    assert finding.value > 0.5
    assert "> 0.5000 (per-checkpoint maximum" in finding.describe()


def test_checkpoint_maximum_ci_wording():
    (finding,) = _ckpt(HIGH, "ci", checkpoint_max=0.5)
    assert finding.describe().startswith("face_distance CI low = 0.6")
    assert "(per-checkpoint maximum; mean 0.7000, 98% CI [" in finding.describe() and "n=9)" in finding.describe()
    (high,) = _ckpt(HIGH, "ci_low", checkpoint_max=0.5)
    assert high.describe().startswith("face_distance CI high = 0.7")
    assert "per-checkpoint maximum on the CI's upper bound" in high.describe()
    (mean,) = _ckpt(HIGH, "mean", checkpoint_max=0.5)
    assert mean.describe() == "face_distance = 0.7000 > 0.5000 (per-checkpoint maximum)"


def test_checkpoint_maximum_straddled_is_inconclusive_with_ci_and_a_fail_with_ci_low():
    (finding,) = _ckpt(JUST_UNDER, "ci", checkpoint_max=0.5)
    assert finding.decision == "inconclusive" and not finding.outside
    text = finding.describe()
    assert text.startswith("face_distance: inconclusive: mean 0.4500, 98% CI [")
    assert "straddles the maximum 0.5" in text and "images would decide" in text
    (sits,) = _ckpt(STRADDLE, "ci", checkpoint_max=0.5)
    assert "the mean sits on the maximum" in sits.describe()
    (strict,) = _ckpt(JUST_UNDER, "ci_low", checkpoint_max=0.5)
    assert strict.decision == "fail" and strict.statistic == "ci_low"
    assert _ckpt(JUST_UNDER, "mean", checkpoint_max=0.5) == []  # the point estimate alone is under it


def test_checkpoint_maximum_without_values_is_incomplete():
    (finding,) = checkpoint_findings({}, {FACE: Threshold(checkpoint_max=0.5)})
    assert finding.decision == "incomplete" and finding.maximum == 0.5
    (finding,) = checkpoint_findings({FACE: [None, math.nan]}, {FACE: Threshold(image_max=0.6)})
    assert finding.decision == "incomplete"
    verdict, _ = checkpoint_verdict({"other": [0.1]}, {FACE: Threshold(checkpoint_max=0.5)}, gated=True)
    assert verdict.decision == "incomplete"


def test_checkpoint_with_both_minimum_and_maximum():
    assert _ckpt(LOW, checkpoint=0.2, checkpoint_max=0.5) == []
    (over,) = _ckpt(HIGH, checkpoint=0.2, checkpoint_max=0.5)
    assert over.maximum == 0.5 and over.decision == "fail"
    (under,) = _ckpt(LOW, checkpoint=0.4, checkpoint_max=0.5)
    assert under.minimum == 0.4 and under.maximum is None and under.decision == "fail"
    assert under.describe().startswith("face_distance CI high = ")


# --- config --------------------------------------------------------------------------------------------


def test_threshold_accepts_a_maximum_with_or_without_a_minimum():
    assert Threshold(image_max=0.6).has_bounds and Threshold(checkpoint_max=0.5).has_checkpoint_bounds
    assert Threshold(image=0.2, image_max=0.2).image_max == 0.2  # a single allowed value is odd but valid
    assert not Threshold().has_bounds


@pytest.mark.parametrize("level", ["image", "checkpoint"])
def test_maximum_below_minimum_is_an_error(level):
    with pytest.raises(ValidationError) as info:
        Threshold(**{level: 0.6, f"{level}_max": 0.5})
    assert f"{level}_max = 0.5 is below {level} = 0.6" in str(info.value)


def test_config_error_names_the_key_and_the_fix(tmp_path: Path):
    path = tmp_path / "lora_eval.toml"
    path.write_text(
        '[[sources]]\npath = "samples"\n\n[[judges]]\nname = "face_distance"\n\n'
        "[thresholds.face_distance]\nimage = 0.3\nimage_max = 0.2\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text and "thresholds.face_distance:" in text
    assert "image_max = 0.2 is below image = 0.3" in text and "set image_max >= image" in text


def test_config_loads_maxima(tmp_path: Path):
    path = tmp_path / "lora_eval.toml"
    path.write_text(
        '[[sources]]\npath = "samples"\n\n[[judges]]\nname = "face_distance"\n\n'
        "[thresholds.face_distance]\nimage_max = 0.6\ncheckpoint_max = 0.5\n"
    )
    threshold = load_config(path).thresholds[FACE]
    assert (threshold.image, threshold.image_max, threshold.checkpoint, threshold.checkpoint_max) == (None, 0.6, None, 0.5)


# --- the report view and the terminal table -------------------------------------------------------------


def test_view_marks_a_failing_maximum_and_counts_failures():
    values = [0.55, 0.60, 0.70, 0.72, 0.68, 0.66]  # four over the per-image 0.6 (0.60 is on it); mean over 0.5
    rows = [make_row("lora-a", 800, f"{i:02d}", FACE, v) for i, v in enumerate(values)]
    view = build_view(rows, Rules(thresholds=MAX, gated_keys=frozenset({"lora-a-step000800"})))
    assert view.has_thresholds
    (ck,) = view.checkpoints
    cell = ck.cells[FACE]
    assert cell.failures == 4 and cell.ok is False
    assert ck.status == "fail"
    assert any("per-checkpoint maximum" in f for f in ck.findings)
    below = {case.prompt_id: case.cells[FACE].below for case in ck.cases}
    assert below == {"00": False, "01": False, "02": True, "03": True, "04": True, "05": True}
    assert ck.cases[0].cells[FACE].maximum == 0.6
    assert {case.prompt_id for case in view.failing_cases} == {"02", "03", "04", "05"}
    table = format_table(view)
    assert "!0.652 n=6 fail=4" in table


def test_view_passes_a_checkpoint_under_its_maximum():
    rows = [make_row("lora-a", 800, f"{i:02d}", FACE, v) for i, v in enumerate(LOW)]
    view = build_view(rows, Rules(thresholds=MAX, gated_keys=frozenset({"lora-a-step000800"})))
    (ck,) = view.checkpoints
    assert ck.status == "pass" and ck.cells[FACE].ok is True and ck.cells[FACE].failures == 0


def test_view_maximum_only_thresholds_count_as_thresholds():
    rows = [make_row("lora-a", 800, "00", FACE, 0.3)]
    assert build_view(rows, Rules(thresholds={FACE: Threshold(image_max=0.6)})).has_thresholds


# --- the promise, by simulation -------------------------------------------------------------------------

K, N, SD = 400, 9, 0.1


def _pass_rate(true_mean: float, on: str, seed: int) -> float:
    rng = np.random.default_rng(seed)
    stats = StatsConfig()
    thresholds = {FACE: Threshold(checkpoint_max=0.5, on=on)}
    passes = 0
    for _ in range(K):
        values = np.clip(rng.normal(true_mean, SD, N), 0.0, None)
        passes += not checkpoint_findings({FACE: [float(v) for v in values]}, thresholds, stats)
    return passes / K


@pytest.mark.parametrize("on", ["ci", "ci_low"])
def test_a_checkpoint_at_its_maximum_passes_at_most_as_promised(on):
    p = (1 - StatsConfig().confidence) / 2  # a gate passes only when the whole interval clears the bound
    rate = _pass_rate(0.5, on, seed=20240)
    assert rate <= p + 0.01 + 3 * math.sqrt(p * (1 - p) / K), rate


@pytest.mark.parametrize("on", ["ci", "ci_low"])
def test_a_checkpoint_well_under_its_maximum_passes(on):
    assert _pass_rate(0.3, on, seed=20241) > 0.9
