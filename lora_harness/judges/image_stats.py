"""Offline image-statistics judge: cheap artifact detectors that need no model (numpy/scipy only).

Over-trained or broken LoRAs show up in the pixels before they show up in identity metrics: periodic
grid/checkerboard patterns, high-frequency noise, and burnt-out (clipped, over-saturated) colours. This
judge measures those directly, so it runs on every case in milliseconds and gives an early warning.

Two metrics, each in [0, 1] where 1 means "clean" (every intermediate number is in `Score.raw`):

* ``spectral_score = min(hf_score, peak_score)`` from the Hann-windowed power spectrum of the grey image
  (box-downscaled to ``max_side``):
  ``hf_score = smooth(hf_ratio, hf_half)``, with ``hf_ratio`` the power above ``hf_cutoff`` cycles/px over
  all AC power (photos 0.01-0.08, white noise 0.8); and ``peak_score = smooth(peak_energy, peak_half)``,
  with ``peak_energy`` the power in isolated spectral peaks over all power above ``peak_min_freq``
  (photos 0, a +-20 grey-level grid or checkerboard 0.03-0.3, half bad at 0.01); `spectral_stats` says
  what counts as a peak.
  The spectral slope (log power vs log frequency) is reported in ``raw`` only: it depends too much on
  content (bokeh, studio backgrounds) to be a pass/fail signal on its own.
* ``magnitude_score = min(clip_score, saturation_score, region_score)``: `smooth` of the clipped-pixel
  fraction (``clip_half``; lenient, since black backgrounds and deep shadows are common in real photos),
  the over-saturated-pixel fraction (``saturation_half``) and the area fraction of the largest connected
  blown-out region (``region_half``; strict, a blown face or sky is one big region, specular highlights
  are many tiny ones).

``smooth(x, half) = 1 / (1 + (x / half) ** steepness)``: 1 at x = 0, 0.5 at x = half, ~0.94 at
x = half / 4 (steepness 2), so each ``*_half`` option is the documented "half bad" reference point.
Known blind spots: genuinely periodic scenes (brick walls, printed text) lower ``spectral_score``, and a
pure-white studio background lowers ``magnitude_score``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
from PIL import Image
from scipy import fft as sfft
from scipy import ndimage

from lora_harness.core.cases import EvalCase
from lora_harness.judges.base import JudgeContext, Score, check_int, register, reject_unknown

# ITU-R BT.601 luma weights: the grey image the spectrum is computed on.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def smooth_score(x: float, half: float, steepness: float = 2.0) -> float:
    """Map a badness measure x >= 0 to a score in [0, 1]: 1 at 0, 0.5 at `half`, decreasing smoothly.

    A rational (log-logistic) curve rather than a hard threshold, so small changes in the statistic move
    the score a little instead of flipping it, and the reference point `half` is easy to document.
    """
    if x <= 0.0:
        return 1.0
    if not math.isfinite(x):
        return 0.0
    return float(1.0 / (1.0 + (x / half) ** steepness))


def to_grey(rgb: np.ndarray, max_side: int | None = None) -> np.ndarray:
    """Luma as float32 in [0, 255], box-downscaled so the longer side is at most `max_side`.

    Box (area) averaging keeps periodic patterns down to a period of 2 output pixels and does not invent
    ringing; patterns finer than that at the original resolution are averaged away, so raise `max_side`
    if one-pixel checkerboards at full resolution matter more than speed.
    """
    rgb = np.asarray(rgb)
    grey = rgb.astype(np.float32) @ _LUMA if rgb.ndim == 3 else rgb.astype(np.float32)
    h, w = grey.shape
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BOX))
    return grey


def spectral_stats(
    grey: np.ndarray,
    *,
    hf_cutoff: float = 0.25,
    peak_db: float = 20.0,
    isolation_db: float = 10.0,
    peak_min_freq: float = 0.02,
) -> dict[str, Any]:
    """Statistics of the power spectrum of a grey image (2D array, values ~0..255).

    Frequencies are in cycles per pixel (Nyquist = 0.5 along each axis). The image's mean is removed and a
    2D Hann window applied first, so the image border does not leak a cross of energy into the spectrum.

    A bin counts as a periodic peak when it stands more than `peak_db` above the median of its frequency
    ring (natural spectra are smooth in radius, so the ring median is the expected power there) AND more
    than `isolation_db` above its neighbours 3..6 bins further in and further out along the same direction
    (see `_radial_neighbour_level`; bins within 7 bins of DC have no inward side and are never peaks).
    The second test rejects the radial lines that straight edges (horizons, poles, walls) put through the
    spectrum: a line is as bright just inside as at the bin itself, a grid harmonic is not.

    Returns plain floats/ints:
      ``hf_ratio``: power at radius >= `hf_cutoff` over all AC power. Noise and pixel-level patterns raise it.
      ``peak_energy``: power of the peaks (their 3x3 main lobes) above the ring median, over all power
      above `peak_min_freq`: the share of the image's detail energy that the periodic pattern carries.
      ``peak_max_db``: how far (dB) the strongest judged bin stands above its ring median
      (~12-15 dB for clean photos just from the statistics of a periodogram).
      ``n_peak_bins`` / ``n_peaks``: peak bins, and connected groups of them (one per harmonic, roughly).
      ``peak_freq``: radius (cycles/px) of the strongest peak bin, None without peaks; 1 / peak_freq is
      the pattern's period in (downscaled) pixels along its direction.
      ``slope``: least-squares slope of log10 ring-mean power vs log10 frequency over
      [`peak_min_freq`, 0.45] (about -2 to -3 for photos, 0 for white noise, steeper when blurred);
      None when undefined.
    """
    grey = np.asarray(grey, dtype=np.float64)
    h, w = grey.shape
    out: dict[str, Any] = {
        "height": int(h),
        "width": int(w),
        "hf_ratio": 0.0,
        "peak_energy": 0.0,
        "peak_max_db": 0.0,
        "n_peak_bins": 0,
        "n_peaks": 0,
        "peak_freq": None,
        "slope": None,
    }
    if h < 4 or w < 4 or float(grey.std()) < 1e-3:
        return out  # flat or degenerate: no structure, nothing to measure

    window = np.outer(np.hanning(h), np.hanning(w))
    centred = (grey - np.average(grey, weights=window + 1e-12)) * window
    power = np.abs(sfft.rfft2(centred)) ** 2  # half plane suffices: a real image's spectrum is symmetric
    # Energy sums need Parseval's weights: an interior column of the half plane also stands for its mirror
    # column, the DC column (and the Nyquist column, for even widths) only for itself.
    mirrored = np.full(power.shape[1], 2.0)
    mirrored[0] = 1.0
    if w % 2 == 0:
        mirrored[-1] = 1.0
    energy = power * mirrored
    fy = sfft.fftfreq(h)[:, None]
    fx = sfft.rfftfreq(w)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    total = float(energy[radius > 0].sum())
    if total <= 0.0:
        return out
    out["hf_ratio"] = float(energy[radius >= hf_cutoff].sum() / total)

    log_p = np.log10(power + 1e-12 * total / power.size)
    step = 1.0 / min(h, w)  # one frequency bin of the shorter side
    ring = _rings(radius, step)
    n_rings = int(ring.max()) + 1
    background = _grouped_median(log_p.ravel(), ring.ravel(), n_rings)[ring]

    counts = np.bincount(ring.ravel(), minlength=n_rings)
    ring_mean = np.bincount(ring.ravel(), weights=power.ravel(), minlength=n_rings) / np.maximum(counts, 1)
    ring_freq = np.bincount(ring.ravel(), weights=radius.ravel(), minlength=n_rings) / np.maximum(counts, 1)
    fit = (ring_freq >= peak_min_freq) & (ring_freq <= 0.45) & (ring_mean > 0)
    if fit.sum() >= 3:
        out["slope"] = float(np.polyfit(np.log10(ring_freq[fit]), np.log10(ring_mean[fit]), 1)[0])

    considered = radius >= peak_min_freq
    if not considered.any():
        return out
    excess_db = 10.0 * (log_p - background)
    out["peak_max_db"] = float(max(0.0, excess_db[considered].max()))
    candidates = considered & (excess_db > peak_db)
    if candidates.any():
        neighbours = _radial_neighbour_level(log_p, h, candidates)
        peaks = candidates.copy()
        peaks[candidates] = 10.0 * (log_p[candidates] - neighbours) > isolation_db
        if peaks.any():
            # A peak's energy is its whole Hann main lobe (3x3 bins): the lobe's sides can sit below
            # `peak_db` when the centre is only just above it. Rows wrap (fftfreq order), columns do not.
            lobe = ndimage.maximum_filter1d(peaks, 3, axis=0, mode="wrap")
            lobe = ndimage.maximum_filter1d(lobe, 3, axis=1, mode="constant") & considered
            excess = np.maximum(power - 10.0**background, 0.0) * mirrored
            out["peak_energy"] = float(excess[lobe].sum() / energy[considered].sum())
            out["n_peak_bins"] = int(peaks.sum())
            out["n_peaks"] = int(ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))[1])
            out["peak_freq"] = float(radius[peaks][np.argmax(power[peaks])])
    return out


def _rings(radius: np.ndarray, step: float, min_bins: int = 24) -> np.ndarray:
    """Ring index of each bin: rings one `step` wide, merged outward until each holds >= `min_bins` bins.

    Beyond radius 0.5 only the corners of the spectrum remain, so plain rings there hold a handful of
    bins and their median would be the very peak (a one-pixel checkerboard) it should expose.
    """
    fine = np.floor(radius / step).astype(np.int64)
    counts = np.bincount(fine.ravel())
    merged = np.empty(len(counts), dtype=np.int64)
    group, filled = 0, 0
    for i, count in enumerate(counts):
        merged[i] = group
        filled += int(count)
        if filled >= min_bins:
            group, filled = group + 1, 0
    if filled and group:  # an underfilled last group joins the one before it
        merged[merged == group] = group - 1
    return merged[fine]


def _radial_neighbour_level(log_p: np.ndarray, height: int, mask: np.ndarray) -> np.ndarray:
    """For the bins in `mask`: the brighter of two levels, the median log power of the bins 3..6 indices
    further in, and of those 3..6 further out, along the bin's own direction from DC.

    Offsets count along the dominant axis (Chebyshev distance), so the samples clear the Hann main lobe
    (2 bins each side per axis) in every direction. The outward side may fall off the spectrum (a peak at
    Nyquist); then the inward side alone decides, which is the side that rejects lines (their power falls
    with radius). Bins closer than 7 bins to DC have no inward side and get +inf: never a peak (fewer
    than ~7 periods across the image cannot be told apart from scene content anyway).
    """
    w_half = log_p.shape[1]
    ys, xs = np.nonzero(mask)
    k_y = np.where(ys <= height // 2, ys, ys - height).astype(np.float64)  # signed index (fftfreq order)
    k_x = xs.astype(np.float64)
    reach = np.maximum(np.abs(k_y), k_x)
    sides = []
    for sign in (-1.0, 1.0):  # inward, outward
        samples = []
        valid = np.ones(len(ys), dtype=bool)
        for offset in (3, 4, 5, 6):
            scale = 1.0 + sign * offset / reach
            ky = np.rint(k_y * scale).astype(np.int64)
            kx = np.rint(k_x * scale).astype(np.int64)
            ok = reach >= 7 if sign < 0 else (np.abs(ky) <= height // 2) & (kx < w_half)
            valid &= ok
            samples.append(np.where(ok, log_p[np.where(ok, ky, 0) % height, np.where(ok, kx, 0)], -np.inf))
        sides.append(np.where(valid, np.median(np.stack(samples), axis=0), -np.inf))
    inward, outward = sides
    return np.where(np.isfinite(inward), np.maximum(inward, outward), np.inf)


def _grouped_median(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of `values` within each integer group with a single sort (no Python loop over groups)."""
    lo, hi = float(values.min()), float(values.max())
    span = (hi - lo) or 1.0
    # group + value scaled into [0, 0.5]: sorting this sorts by group, then by value within the group.
    key = groups + (values - lo) / span * 0.5
    sorted_key = np.sort(key)
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    idx = np.minimum(starts + counts // 2, len(sorted_key) - 1)
    medians = (sorted_key[idx] - np.arange(n_groups)) / 0.5 * span + lo
    return np.where(counts > 0, medians, lo)


def magnitude_stats(
    rgb: np.ndarray,
    *,
    low: int = 2,
    high: int = 253,
    saturation: float = 0.95,
    saturation_value: int = 230,
) -> dict[str, Any]:
    """Clipping and saturation statistics of an RGB uint8 image.

    Returns plain floats/ints:
      ``clipped_fraction``: pixels with any channel <= `low` or >= `high` (lost detail in that channel).
      ``oversaturated_fraction``: pixels with HSV saturation >= `saturation` and value >= `saturation_value`
      (the neon, burnt colours of an over-cooked LoRA or too-high guidance).
      ``largest_blown_fraction``: area fraction of the largest 8-connected region whose channels are all
      >= `high`. Specular highlights are small and scattered; a blown-out sky, face or patch is one region.
      ``blown_fraction`` / ``n_blown_regions``: all such pixels, and how many regions they form.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    r, g, b = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
    cmax = np.maximum(np.maximum(r, g), b)  # ~30x faster than rgb.max(axis=2) on uint8
    cmin = np.minimum(np.minimum(r, g), b)
    area = cmax.size
    clipped = (cmin <= low) | (cmax >= high)
    cmax_f = cmax.astype(np.float32)
    sat = np.where(cmax > 0, (cmax_f - cmin) / np.maximum(cmax_f, 1.0), 0.0)
    oversaturated = (sat >= saturation) & (cmax >= saturation_value)
    blown = cmin >= high
    largest = 0
    n_regions = 0
    if blown.any():
        labels, n_regions = ndimage.label(blown, structure=np.ones((3, 3), dtype=bool))
        largest = int(np.bincount(labels.ravel())[1:].max())
    return {
        "clipped_fraction": float(clipped.sum() / area),
        "oversaturated_fraction": float(oversaturated.sum() / area),
        "blown_fraction": float(blown.sum() / area),
        "largest_blown_fraction": float(largest / area),
        "n_blown_regions": int(n_regions),
    }


@register("image_stats")
class ImageStatsJudge:
    """Spectral and magnitude artifact scores from pixel statistics alone (no reference, no model)."""

    name = "image_stats"
    version = "1"  # bump when the math changes

    def __init__(
        self,
        *,
        max_side: int = 512,
        hf_cutoff: float = 0.25,
        hf_half: float = 0.25,
        peak_db: float = 20.0,
        isolation_db: float = 10.0,
        peak_min_freq: float = 0.02,
        peak_half: float = 0.01,
        low: int = 2,
        high: int = 253,
        saturation: float = 0.95,
        saturation_value: int = 230,
        clip_half: float = 0.5,
        saturation_half: float = 0.10,
        region_half: float = 0.03,
        steepness: float = 2.0,
        **unknown: Any,
    ) -> None:
        reject_unknown(self.name, unknown, _OPTIONS)
        check_int(self.name, "max_side", max_side, 16)
        _check_number("hf_cutoff", hf_cutoff, 0.0, 0.5, open_low=True, open_high=True)
        _check_number("peak_db", peak_db, 0.0, None, open_low=True)
        _check_number("isolation_db", isolation_db, 0.0, None)
        _check_number("peak_min_freq", peak_min_freq, 0.0, 0.5, open_low=True, open_high=True)
        check_int(self.name, "low", low, 0, 254)
        check_int(self.name, "high", high, 1, 255)
        if low >= high:
            raise ValueError(f"image_stats option 'low' ({low}) must be less than 'high' ({high})")
        _check_number("saturation", saturation, 0.0, 1.0, open_low=True)
        check_int(self.name, "saturation_value", saturation_value, 0, 255)
        for key, value in (
            ("hf_half", hf_half),
            ("peak_half", peak_half),
            ("clip_half", clip_half),
            ("saturation_half", saturation_half),
            ("region_half", region_half),
            ("steepness", steepness),
        ):
            _check_number(key, value, 0.0, None, open_low=True)
        self.max_side = int(max_side)
        self.spectral_options = {"hf_cutoff": float(hf_cutoff), "peak_db": float(peak_db),
                                 "isolation_db": float(isolation_db),
                                 "peak_min_freq": float(peak_min_freq)}
        self.magnitude_options = {"low": int(low), "high": int(high), "saturation": float(saturation),
                                  "saturation_value": int(saturation_value)}
        self.hf_half = float(hf_half)
        self.peak_half = float(peak_half)
        self.clip_half = float(clip_half)
        self.saturation_half = float(saturation_half)
        self.region_half = float(region_half)
        self.steepness = float(steepness)

    @property
    def metrics(self) -> list[str]:
        return ["spectral_score", "magnitude_score"]

    def judge(self, case: EvalCase, image: np.ndarray, context: JudgeContext) -> list[Score]:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            error = f"expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}"
            return [Score(metric, None, error=error) for metric in self.metrics]
        return [self.spectral(image), self.magnitude(image)]

    def spectral(self, image: np.ndarray) -> Score:
        stats = spectral_stats(to_grey(image, self.max_side), **self.spectral_options)
        hf = smooth_score(stats["hf_ratio"], self.hf_half, self.steepness)
        peak = smooth_score(stats["peak_energy"], self.peak_half, self.steepness)
        raw = {**stats, "hf_score": hf, "peak_score": peak}
        return Score("spectral_score", min(hf, peak), raw)

    def magnitude(self, image: np.ndarray) -> Score:
        stats = magnitude_stats(image, **self.magnitude_options)
        clip = smooth_score(stats["clipped_fraction"], self.clip_half, self.steepness)
        sat = smooth_score(stats["oversaturated_fraction"], self.saturation_half, self.steepness)
        region = smooth_score(stats["largest_blown_fraction"], self.region_half, self.steepness)
        raw = {**stats, "clip_score": clip, "saturation_score": sat, "region_score": region}
        return Score("magnitude_score", min(clip, sat, region), raw)


_OPTIONS = tuple(
    name
    for name, param in inspect.signature(ImageStatsJudge.__init__).parameters.items()
    if param.kind is param.KEYWORD_ONLY
)


def _check_number(
    key: str,
    value: Any,
    lo: float | None,
    hi: float | None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """Raise ValueError naming the option, its bad value and the allowed range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if open_low else value >= lo
    if ok and hi is not None:
        ok = value < hi if open_high else value <= hi
    if not ok:
        left = ("(" if open_low else "[") + ("-inf" if lo is None else f"{lo:g}")
        right = ("inf" if hi is None else f"{hi:g}") + (")" if open_high or hi is None else "]")
        raise ValueError(
            f"image_stats option {key!r} = {value!r} is invalid: expected a number in {left}, {right}"
        )
