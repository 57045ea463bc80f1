"""Errors of generation mode; all are ValueErrors so collection and config code report them as user errors."""

from __future__ import annotations

from lora_harness.core.images import ImageError


class GenerationError(ValueError):
    """Something the user can fix made generation impossible; the message says what and how."""


class PipelineLoadError(GenerationError):
    """The base pipeline cannot be built: unknown class, missing folder, hub model not available offline."""


class DeviceError(GenerationError):
    """The requested device does not exist on this machine."""


class LoraFileError(GenerationError):
    """A LoRA file cannot be used at all: wrong format (pickle), missing, empty, truncated, an LFS pointer."""


class LoraMismatchError(GenerationError):
    """A readable LoRA that does not fit the pipeline's model (other architecture, other widths, no match)."""


class LoraNoEffectError(LoraMismatchError):
    """A LoRA whose every module adds zero (all-zero weights, alpha 0): it would silently give base-model images."""


class CaseGenerationError(GenerationError, ImageError):
    """One case's image could not be made (out of GPU memory, a bad LoRA, no pipeline); the run goes on.

    An ImageError too, so the harness records it for the case exactly like an undecodable sample image.
    """
