"""The `[pipeline]` section: which diffusers pipeline generates images, from where, on which device.

Plain pydantic (no torch, no diffusers) so that loading a config stays cheap. One pipeline per run: every
generate source shares it, and each xdist worker loads it once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MODEL = "black-forest-labs/FLUX.1-dev"
DEFAULT_PIPELINE_CLASS = "FluxPipeline"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# A diffusers hub id: "owner/name" made of letters, digits, '-', '_', '.' (a bare name is taken as a folder).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class PipelineConfig(BaseModel):
    """How to build the text-to-image pipeline (diffusers) that generate sources use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = DEFAULT_MODEL  # a diffusers model folder (holding model_index.json) or a hub id
    class_name: str = Field(DEFAULT_PIPELINE_CLASS, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # any diffusers pipeline
    revision: str | None = None  # hub revision (branch, tag or commit)
    variant: str | None = None  # weight file variant, e.g. "fp16"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: bfloat16 on GPUs, float32 on CPU
    offload: Literal["none", "model", "sequential"] = "none"  # enable_model_cpu_offload / sequential offload
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    devices: list[str] = []  # xdist worker gwN uses devices[N % len]; default: every visible GPU in turn
    hotswap: bool = True  # swap LoRA weights in place between checkpoints where diffusers supports it

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[str]) -> list[str]:
        bad = [d for d in value if not _DEVICE.match(d) or d == "auto"]
        if bad:
            raise ValueError(f"{bad} are not devices; list entries such as 'cuda:0', 'cuda:1', 'cpu'")
        return value

    def resolved(self, base: Path) -> "PipelineConfig":
        """`model` as an absolute folder when it names one relative to the config file; hub ids stay as they are.

        An existing folder always wins (a folder may be named like a hub id); a relative path that does not
        exist and does not look like a hub id becomes absolute, so the 'not found' error shows where it looked.
        """
        spec = self.model.strip()
        path = Path(spec).expanduser()
        candidate = path if path.is_absolute() else base / path
        if candidate.exists() or not looks_like_hub_id(spec):
            return self.model_copy(update={"model": str(candidate.resolve())})
        return self


def looks_like_hub_id(spec: str) -> bool:
    """`owner/name`, not a path: no leading `.`, `/`, `~` and exactly one `/`."""
    return bool(HUB_ID.match(spec)) and not spec.startswith((".", "/", "~"))
