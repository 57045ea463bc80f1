"""Unit tests of the offline image-statistics judge: known answers on synthetic images, and clean vs
damaged versions of a real photo (skimage's astronaut, 512x512)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

# Imported directly (not through lora_harness.judges) so that registration does not depend on the package
# __init__; the import registers "image_stats".
from lora_harness.judges import image_stats as ist  # noqa: E402
from lora_harness.core.cases import EvalCase, Prompt  # noqa: E402
from lora_harness.judges.base import Judge, JudgeContext, Score, create_judge  # noqa: E402

CASE = EvalCase(loraname="person", training_step=1000, prompt=Prompt("00", "a photo of sks person"),
                image_path=Path("person_001000_00.png"))
CONTEXT = JudgeContext()


@pytest.fixture(scope="module")
def judge() -> ist.ImageStatsJudge:
    return ist.ImageStatsJudge()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    image = skimage_data.astronaut()
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    return image


def scores(judge: ist.ImageStatsJudge, image: np.ndarray) -> dict[str, Score]:
    return {score.metric: score for score in judge.judge(CASE, image, CONTEXT)}


def add_pattern(image: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float64) + pattern[:, :, None], 0, 255).astype(np.uint8)


def checkerboard(h: int, w: int, cell: int, amplitude: float = 20.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return amplitude * np.where((yy // cell + xx // cell) % 2 == 0, 1.0, -1.0)


def grid(h: int, w: int, period: int, amplitude: float = 20.0) -> np.ndarray:
    """One-pixel bright lines every `period` pixels, both directions (a VAE/tiling-seam look)."""
    yy, xx = np.mgrid[:h, :w]
    return amplitude * ((yy % period == 0) | (xx % period == 0)).astype(np.float64)


def white_patch(image: np.ndarray, fraction: float, top: int = 60, left: int = 200) -> tuple[np.ndarray, float]:
    """Paint a pure-white square of about `fraction` of the area; return the image and the exact fraction."""
    h, w = image.shape[:2]
    side = int(round(math.sqrt(fraction * h * w)))
    out = image.copy()
    out[top : top + side, left : left + side] = 255
    return out, side * side / (h * w)


# --- the clean photo -------------------------------------------------------------------------------------


def test_clean_photo_scores_high(judge, astronaut):
    result = scores(judge, astronaut)
    assert result["spectral_score"].value > 0.95
    assert result["magnitude_score"].value > 0.8  # it has black space and specular highlights on the suit
    assert result["spectral_score"].raw["peak_energy"] == 0.0
    assert result["spectral_score"].raw["peak_freq"] is None
    assert -4.0 < result["spectral_score"].raw["slope"] < -1.5  # natural images: power ~ 1/f^2..1/f^3


def test_scattered_specular_highlights_still_score_high(judge, astronaut):
    """Two hundred 3x3 pure-white glints (0.7% of the area) are highlights, not a blown-out region."""
    rng = np.random.default_rng(0)
    image = astronaut.copy()
    for y, x in zip(rng.integers(0, 509, 200), rng.integers(0, 509, 200)):
        image[y : y + 3, x : x + 3] = 255
    result = scores(judge, image)["magnitude_score"]
    assert result.value > 0.8
    assert result.raw["largest_blown_fraction"] < 0.005


# --- periodic patterns -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "make", "period_px"),
    [
        ("fine 2-px checkerboard", lambda h, w: checkerboard(h, w, 2), 4),
        ("coarse 8-px grid", lambda h, w: grid(h, w, 8), 8),
        ("1-px checkerboard (Nyquist)", lambda h, w: checkerboard(h, w, 1), 2),
    ],
)
def test_periodic_pattern_drops_spectral_score(judge, astronaut, kind, make, period_px):
    clean = scores(judge, astronaut)["spectral_score"]
    damaged = scores(judge, add_pattern(astronaut, make(*astronaut.shape[:2])))["spectral_score"]
    assert clean.value - damaged.value >= 0.5, kind
    assert damaged.value < 0.3, kind
    assert damaged.raw["n_peaks"] >= 1
    assert damaged.raw["peak_energy"] > 0.02
    # the strongest peak sits on a harmonic of the pattern: a multiple of 1/period along x or y, or both
    f = damaged.raw["peak_freq"]
    harmonics = [math.hypot(i / period_px, j / period_px) for i in range(period_px // 2 + 1)
                 for j in range(period_px // 2 + 1) if i or j]
    assert min(abs(f - h) for h in harmonics) < 2 / 512, (kind, f)


@pytest.mark.parametrize("make", [lambda: checkerboard(512, 512, 2), lambda: checkerboard(512, 512, 1),
                                  lambda: grid(512, 512, 8)], ids=["checker-2px", "checker-1px", "grid-8px"])
def test_peak_energy_is_the_patterns_share_of_the_spectrum(astronaut, make):
    """Known answer, computed independently with Parseval on the full-plane FFT: the share of the damaged
    image's (Hann-windowed, >= 0.02 cycles/px) spectral energy that belongs to the injected pattern."""
    damaged = add_pattern(astronaut, make())
    grey_damaged = ist.to_grey(damaged).astype(np.float64)
    pattern = grey_damaged - ist.to_grey(astronaut)  # what was really added, after clipping to 0..255
    window = np.outer(np.hanning(512), np.hanning(512))
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(512), np.fft.fftfreq(512)))

    def high_energy(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.fft2((x - np.average(x, weights=window)) * window)) ** 2
        return float(spectrum[radius >= 0.02].sum())

    expected = high_energy(pattern) / high_energy(grey_damaged)
    measured = ist.spectral_stats(grey_damaged)["peak_energy"]
    assert measured == pytest.approx(expected, rel=0.1)


def test_no_peaks_in_crops_of_clean_photos(judge):
    """False-positive guard: crops of assorted sizes and aspect ratios of photos without periodic content
    (straight edges, fur, foliage, stars) must not show periodic peaks."""
    photos = [skimage_data.astronaut(), skimage_data.chelsea(), skimage_data.coffee(),
              skimage_data.hubble_deep_field(), skimage_data.immunohistochemistry()]
    rng = np.random.default_rng(8)
    worst = 1.0
    for _ in range(60):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        ch, cw = rng.integers(48, h + 1), rng.integers(48, w + 1)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = np.ascontiguousarray(photo[y : y + ch, x : x + cw])
        worst = min(worst, scores(judge, crop)["spectral_score"].raw["peak_score"])
    assert worst > 0.8


def test_weak_checkerboard_is_still_detected(judge, astronaut):
    """+-5 grey levels: hard to see, but already a clear periodic peak."""
    faint = add_pattern(astronaut, checkerboard(512, 512, 2, amplitude=5.0))
    damaged = scores(judge, faint)["spectral_score"]
    assert damaged.value < 0.5
    assert damaged.raw["peak_max_db"] > 30.0


def test_sinusoid_known_frequency():
    """A pure grating at an off-bin frequency on a flat background: one peak, at the grating's frequency."""
    h, w = 256, 320
    yy, xx = np.mgrid[:h, :w]
    freq = 1 / 7.3  # cycles/px, deliberately not a multiple of 1/256 or 1/320
    angle = math.radians(30)
    grey = 128 + 10 * np.sin(2 * np.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
    grey = grey + np.random.default_rng(1).normal(0, 2, grey.shape)
    stats = ist.spectral_stats(grey)
    assert stats["peak_freq"] == pytest.approx(freq, abs=2 / 256)
    assert stats["peak_energy"] > 0.5  # the grating is nearly all of the image's AC energy
    assert stats["n_peaks"] == 1


def test_pattern_survives_downscaling_of_large_images(judge, astronaut):
    """At 1024x1024 the spectrum is taken after box-downscaling to 512: a 2-px checkerboard becomes a
    1-px one (Nyquist) and an 8-px grid a 4-px one, and both must still be caught."""
    big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024), Image.Resampling.BICUBIC))
    clean = scores(judge, big)["spectral_score"]
    assert clean.value > 0.95
    assert clean.raw["height"] == 512 and clean.raw["width"] == 512
    for pattern in (checkerboard(1024, 1024, 2), grid(1024, 1024, 8)):
        damaged = scores(judge, add_pattern(big, pattern))["spectral_score"]
        assert clean.value - damaged.value >= 0.5


def test_white_noise_known_answers():
    """White noise has a flat spectrum: the share of power at radius >= 0.25 cycles/px is the share of the
    [-0.5, 0.5]^2 frequency square outside that circle, 1 - pi / 16; its spectral slope is 0."""
    grey = np.random.default_rng(2).normal(128, 30, (512, 512))
    stats = ist.spectral_stats(grey)
    assert stats["hf_ratio"] == pytest.approx(1 - math.pi / 16, abs=0.02)
    assert stats["slope"] == pytest.approx(0.0, abs=0.2)
    assert stats["peak_energy"] == 0.0  # noise has no isolated peaks
    assert stats["peak_max_db"] < 20.0


def test_heavy_noise_drops_spectral_score(judge, astronaut):
    noise = np.random.default_rng(3).normal(0, 80, astronaut.shape)
    noisy = np.clip(astronaut + noise, 0, 255).astype(np.uint8)
    clean = scores(judge, astronaut)["spectral_score"]
    damaged = scores(judge, noisy)["spectral_score"]
    assert clean.value - damaged.value >= 0.4
    assert damaged.raw["hf_ratio"] > 10 * clean.raw["hf_ratio"]


def test_straight_edges_are_not_periodic_peaks(judge, astronaut):
    """A sharp-edged square puts bright lines through the spectrum; they must not count as periodic peaks."""
    image, _ = white_patch(astronaut, 0.10)
    result = scores(judge, image)["spectral_score"]
    assert result.raw["peak_energy"] == 0.0
    assert result.value > 0.95


# --- clipping, saturation, blown-out regions --------------------------------------------------------------


def test_blown_out_patch_drops_magnitude_score(judge, astronaut):
    image, fraction = white_patch(astronaut, 0.10)
    clean = scores(judge, astronaut)["magnitude_score"]
    damaged = scores(judge, image)["magnitude_score"]
    assert clean.value - damaged.value >= 0.6
    assert damaged.value < 0.2
    assert damaged.raw["largest_blown_fraction"] == pytest.approx(fraction, abs=0.003)
    assert clean.raw["largest_blown_fraction"] < 0.01


def test_mid_grey_known_answer(judge):
    grey = np.full((64, 96, 3), 128, dtype=np.uint8)
    result = scores(judge, grey)
    assert result["magnitude_score"].value == 1.0
    assert result["magnitude_score"].raw["clipped_fraction"] == 0.0
    assert result["magnitude_score"].raw["largest_blown_fraction"] == 0.0
    assert result["spectral_score"].value == 1.0  # no structure at all


def test_all_white_known_answer(judge):
    result = scores(judge, np.full((64, 64, 3), 255, dtype=np.uint8))["magnitude_score"]
    assert result.raw["clipped_fraction"] == 1.0
    assert result.raw["largest_blown_fraction"] == 1.0
    assert result.value < 0.01


def test_oversaturated_colours_known_answer():
    """Half the image pure red (saturation 1, value 255), half a muted colour."""
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    image[:, :20] = (255, 0, 0)
    image[:, 20:] = (120, 100, 90)
    stats = ist.magnitude_stats(image)
    assert stats["oversaturated_fraction"] == 0.5
    assert stats["clipped_fraction"] == 0.5
    assert stats["largest_blown_fraction"] == 0.0


def test_saturation_boost_drops_magnitude_score(judge, astronaut):
    hsv = np.asarray(Image.fromarray(astronaut).convert("HSV")).astype(np.float64)
    hsv[..., 1] = np.clip(hsv[..., 1] * 2.5, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * 1.3, 0, 255)
    burnt = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"))
    clean = scores(judge, astronaut)["magnitude_score"]
    damaged = scores(judge, burnt)["magnitude_score"]
    assert clean.value - damaged.value >= 0.4
    assert damaged.raw["oversaturated_fraction"] > 0.1 > clean.raw["oversaturated_fraction"]


# --- odd inputs, serialisation, protocol -------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(4).integers(0, 256, (8, 8, 3), dtype=np.uint8),
        np.random.default_rng(5).integers(0, 256, (37, 91, 3), dtype=np.uint8),
        np.zeros((64, 64, 3), dtype=np.uint8),
        np.full((1, 1, 3), 200, dtype=np.uint8),
        np.random.default_rng(6).integers(0, 256, (3, 300, 3), dtype=np.uint8),
        np.random.default_rng(7).integers(0, 256, (700, 45, 3), dtype=np.uint8),
    ],
    ids=["8x8", "37x91", "all-black", "1x1", "3x300", "700x45"],
)
def test_odd_inputs_give_valid_serialisable_scores(judge, image):
    result = judge.judge(CASE, image, CONTEXT)
    assert [score.metric for score in result] == judge.metrics
    for score in result:
        assert score.error is None
        assert isinstance(score.value, float) and 0.0 <= score.value <= 1.0
        encoded = json.dumps(score.raw, allow_nan=False)  # strict JSON: no NaN/inf, no numpy types
        assert json.loads(encoded) == score.raw


def test_all_black_is_crushed(judge):
    result = scores(judge, np.zeros((64, 64, 3), dtype=np.uint8))["magnitude_score"]
    assert result.raw["clipped_fraction"] == 1.0
    assert result.raw["largest_blown_fraction"] == 0.0  # black is clipped, not blown out
    assert result.value < 0.25


def test_raw_values_are_plain_python_numbers(judge, astronaut):
    for score in judge.judge(CASE, astronaut, CONTEXT):
        for key, value in score.raw.items():
            assert value is None or type(value) in (int, float), (score.metric, key, type(value))


def test_wrong_array_is_an_error_score_not_an_exception(judge):
    result = judge.judge(CASE, np.zeros((16, 16), dtype=np.float32), CONTEXT)
    assert [score.metric for score in result] == judge.metrics
    assert all(score.value is None and "RGB uint8" in score.error for score in result)


def test_registered_and_follows_protocol():
    built = create_judge("image_stats", {})
    assert isinstance(built, ist.ImageStatsJudge)
    assert isinstance(built, Judge)
    assert built.name == "image_stats" and built.version
    assert list(built.metrics) == ["spectral_score", "magnitude_score"]
    tuned = create_judge("image_stats", {"max_side": 128, "region_half": 0.5})
    stats = tuned.judge(CASE, skimage_data.astronaut(), CONTEXT)[0].raw
    assert (stats["height"], stats["width"]) == (128, 128)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_side": 0}, "max_side"),
        ({"max_side": 512.5}, "max_side"),
        ({"hf_cutoff": 0.7}, "hf_cutoff"),
        ({"peak_half": -0.1}, "peak_half"),
        ({"region_half": float("nan")}, "region_half"),
        ({"saturation": "high"}, "saturation"),
        ({"high": 300}, "high"),
        ({"low": 200, "high": 100}, "low"),
        ({"maxside": 512}, "maxside"),
    ],
)
def test_bad_option_raises_value_error_naming_it(options, named):
    with pytest.raises(ValueError, match=named) as info:
        create_judge("image_stats", options)
    assert "image_stats" in str(info.value)


# --- small pieces ------------------------------------------------------------------------------------------


def test_smooth_score_reference_points():
    assert ist.smooth_score(0.0, 0.1) == 1.0
    assert ist.smooth_score(0.1, 0.1) == pytest.approx(0.5)
    assert ist.smooth_score(0.025, 0.1) == pytest.approx(16 / 17)
    assert ist.smooth_score(math.inf, 0.1) == 0.0
    values = [ist.smooth_score(x, 0.1) for x in np.linspace(0, 1, 50)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_grouped_median_matches_numpy():
    rng = np.random.default_rng(9)
    groups = rng.integers(0, 40, 5000)
    groups[groups == 7] = 8  # an empty group
    values = rng.standard_cauchy(5000)  # heavy tails: a mean would be far off, a median is not
    medians = ist._grouped_median(values, groups, 41)
    for g in range(41):
        members = np.sort(values[groups == g])
        if len(members):
            assert medians[g] == pytest.approx(members[len(members) // 2], abs=1e-9)  # (upper) median


def test_rings_are_populated_and_ordered():
    h, w = 100, 171
    radius = np.hypot(np.fft.rfftfreq(w)[None, :], np.fft.fftfreq(h)[:, None])
    rings = ist._rings(radius, 1 / h)
    counts = np.bincount(rings.ravel())
    assert counts.min() >= 24  # even in the corners beyond radius 0.5
    order = np.argsort(radius.ravel(), kind="stable")
    assert np.all(np.diff(rings.ravel()[order]) >= 0)  # ring index never decreases with radius


def test_to_grey_downscales_longer_side():
    rgb = np.zeros((600, 1200, 3), dtype=np.uint8)
    rgb[:, :, 1] = 100
    grey = ist.to_grey(rgb, max_side=512)
    assert grey.shape == (256, 512)
    assert np.allclose(grey, 0.587 * 100, atol=1e-3)
    assert ist.to_grey(rgb[:100, :100], max_side=512).shape == (100, 100)


def test_1024_image_is_judged_fast(judge, astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024)))
    judge.judge(CASE, big, CONTEXT)  # warm-up (FFT plans, imports)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        judge.judge(CASE, big, CONTEXT)
        best = min(best, time.perf_counter() - start)
    assert best < 0.2
