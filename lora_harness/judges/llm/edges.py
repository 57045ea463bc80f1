"""The Canny edge-map companion image the study showed next to each image for the three quality questions.

An edge map makes structure explicit: malformed fingers, grid patterns and smeared regions stand out as
broken or periodic outlines. Thresholds follow the study: 0.33x and 1.33x the median grey level, so the map
adapts to the image's brightness instead of using one fixed pair of thresholds for dark and bright images.
"""

from __future__ import annotations

import numpy as np

EDGE_VERSION = "canny-0.33-1.33-median-v1"  # part of the cache key: change it when the map changes
LOW_FACTOR = 0.33
HIGH_FACTOR = 1.33


def median_grey(grey: np.ndarray) -> float:
    """Median of a uint8 image from its histogram (one pass; np.median would sort every pixel)."""
    import cv2

    counts = cv2.calcHist([np.ascontiguousarray(grey)], [0], None, [256], [0, 256]).ravel()  # 4x np.bincount
    cumulative = np.cumsum(counts)
    half = grey.size / 2.0
    low = int(np.searchsorted(cumulative, half, side="left"))
    if grey.size % 2 == 0 and cumulative[low] == half:  # even count split exactly between two levels
        high = int(np.searchsorted(cumulative, half + 1, side="left"))
        return (low + high) / 2.0
    return float(low)


def canny_thresholds(grey: np.ndarray) -> tuple[float, float]:
    median = median_grey(grey)
    return max(0.0, LOW_FACTOR * median), min(255.0, HIGH_FACTOR * median)


def edge_map(rgb: np.ndarray) -> np.ndarray:
    """Canny edges (255 on 0) of an RGB uint8 image, thresholds from its median grey level."""
    import cv2  # opencv is an optional dependency (extra `llm`); imported on first use

    rgb = np.ascontiguousarray(rgb)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    low, high = canny_thresholds(grey)
    return cv2.Canny(grey, low, high)
