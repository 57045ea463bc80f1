"""Config sections `[leakage]`, `[strength]`, `[memorization]` (validated with the rest of the config)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_empty_prompts(value: list[str] | None) -> list[str] | None:
    if value is not None and not any(text.strip() for text in value):
        raise ValueError("no prompts: give at least one prompt text")
    return value


class LeakageConfig(_Model):
    """Prompts without the trigger token, generated with the LoRA loaded: the person must not appear."""

    prompts: list[str] = Field(min_length=1)  # kohya inline options allowed (--w --h --s --d ...)
    metric: str = "face_identity_max"  # similarity to the reference photos
    max_identity: float  # ceiling: every leakage image must score below it
    seeds: list[int] | None = None  # default: the first seed of the checkpoint's cases
    checkpoints: Literal["all", "latest"] = "all"  # "all": leakage is tracked over training steps
    # Base-model drift (lora_harness.checks.drift): each leakage image vs the base model's image of the same
    # prompt and seed; `max_drift` is a ceiling on drift_pixel (one number) or per metric (drift_pixel,
    # drift_clip_i, drift_dino). Costs one base image per prompt and seed.
    drift: bool = False
    max_drift: float | dict[str, float] | None = None

    _prompts = field_validator("prompts")(_no_empty_prompts)

    @model_validator(mode="after")
    def _drift(self) -> "LeakageConfig":
        if self.max_drift is not None and not self.drift:
            raise ValueError("max_drift is set but drift = false: add drift = true to measure it")
        if isinstance(self.max_drift, dict):
            unknown = sorted(set(self.max_drift) - {"drift_pixel", "drift_clip_i", "drift_dino"})
            if unknown:
                raise ValueError(f"max_drift names unknown metric(s) {', '.join(unknown)}; use drift_pixel, drift_clip_i, drift_dino")
        return self


# The LoRA must move the metric by at least this much between `low` and `high` (in the metric's units; for
# face_identity cosines 0.05 is a clearly visible identity gain). 0 would pass a LoRA that changes nothing.
DEFAULT_STRENGTH_MARGIN = 0.05
StrengthDirection = Literal["auto", "rise", "fall", "any"]


class StrengthConfig(_Model):
    """The same prompt and seed at several LoRA scales; scale 0 is the base model control."""

    scales: list[float] = Field([0.0, 0.5, 0.8, 1.0, 1.2], min_length=2)
    prompts: list[str] | None = None  # default: the first prompt of the source
    seeds: list[int] | None = None  # default: the first seed of the checkpoint's cases
    metric: str = "face_identity_max"
    margin: float = Field(DEFAULT_STRENGTH_MARGIN, gt=0)  # gate: the metric moves at least this much from low to high
    # rise: high - low >= margin; fall: low - high >= margin; any: |high - low| >= margin. auto: rise for
    # identity/similarity metrics (the person must appear), any for artifact/quality scores (they may fall).
    direction: StrengthDirection = "auto"
    low: float = 0.0
    high: float = 1.0
    checkpoints: Literal["all", "latest"] = "latest"  # a sweep x scales is costly: latest by default

    _prompts = field_validator("prompts")(_no_empty_prompts)

    @model_validator(mode="after")
    def _scales(self) -> "StrengthConfig":
        if len(set(self.scales)) != len(self.scales) or any(s < 0 for s in self.scales):
            raise ValueError(f"scales must be distinct and >= 0 (got {self.scales})")
        missing = [s for s in (self.low, self.high) if s not in self.scales]
        if missing:
            raise ValueError(f"low/high scale(s) {missing} are not in scales {self.scales}; add them to `scales`")
        return self


class MemorizationConfig(_Model):
    """Each generated image vs each training image: near-copies above the ceiling are flagged."""

    training_dir: Path  # the training images (searched recursively, e.g. kohya's img/10_name/)
    judges: list[str] = ["pixel_similarity", "face_identity"]  # similarity judges run against the training set
    # Ceiling on each judge's `<name>_max`: one number for all, or per metric (unnamed ones are recorded, not
    # gated). Default: 0.95 for whole-image judges; face_identity is recorded only, since a good person LoRA
    # has the training photos' face by design: what makes a near-copy is the whole image.
    max_similarity: float | dict[str, float] | None = None

    @field_validator("judges")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError("judges must be a non-empty list of distinct judge names, e.g. [\"pixel_similarity\", \"face_identity\"]")
        return value


# Whole-image diversity (1 - Pearson of 64 px grey thumbnails) below this: the images are near-copies of each
# other. Measured: the demo checkpoints' 3 prompts 0.84-0.92, re-framed crops of one photo >= 0.3, one
# 256 px picture four times with 4 px shifts and +-6 noise 0.04 (tests/test_diversity.py).
DEFAULT_MIN_IMAGE_DIVERSITY = 0.1


class DiversityConfig(_Model):
    """Per checkpoint: the images must differ from each other (a collapsed LoRA draws one picture)."""

    # metric -> minimum, among diversity_image, vendi_image, diversity_identity, vendi_identity
    min: dict[str, float] = {"diversity_image": DEFAULT_MIN_IMAGE_DIVERSITY}
    identity: bool = True  # also the face descriptors' spread (needs the face extra; missing models: recorded as such)
    checkpoints: Literal["all", "latest"] = "all"  # "all": diversity is tracked over training steps

    @field_validator("min")
    @classmethod
    def _known(cls, value: dict[str, float]) -> dict[str, float]:
        from lora_harness.analyses.diversity_metrics import DIVERSITY_METRICS

        unknown = sorted(set(value) - set(DIVERSITY_METRICS))
        if unknown:
            raise ValueError(f"unknown diversity metric(s) {', '.join(unknown)}; use {', '.join(DIVERSITY_METRICS)}")
        return value
