"""One pipeline per device, not per xdist worker: which worker generates which checkpoints' images.

A FLUX pipeline takes ~24 GB in bfloat16, so `pytest evals -n 4` on one 24 GB GPU cannot hold four (one per
worker, all mapped to `cuda:0`). When a run has more xdist workers than generation devices, every test of a
checkpoint with generated images joins one xdist group per device (`lora-generate@cuda:0`, ...): xdist gives
a group to a single worker, so each device is used by exactly one worker, which loads its pipeline once and
generates and judges those checkpoints; the other workers judge everything else (sample folders, cached
rows). With at least as many workers as devices nothing changes: worker gwN generates on device N.

Checkpoints are dealt to devices by the sharding rule (stable hash, round robin), computed the same way in
every worker from the same collection, so the worker that runs a device group also knows which device
its cases belong to. No torch import here: the visible device count is passed in.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from lora_harness.generation.settings import PipelineConfig
from lora_harness.run.sharding import assign

GROUP_PREFIX = "lora-generate@"


def run_devices(config: PipelineConfig, *, cuda_count: int, mps: bool) -> list[str]:
    """The distinct devices generation uses over all workers (what `select_device` maps workers onto)."""
    spec = config.device
    if spec == "cpu" or spec == "mps" or spec.startswith("cuda:"):
        return [spec]
    if cuda_count > 0:
        if config.devices:
            return list(dict.fromkeys("cuda:0" if d == "cuda" else d for d in config.devices))
        return [f"cuda:{i}" for i in range(cuda_count)]
    if spec == "cuda":
        return ["cuda"]  # select_device reports the missing GPU per case
    return ["mps"] if mps else ["cpu"]


def visible_devices(config: PipelineConfig) -> list[str]:
    """`run_devices` on this machine (imports torch: call only when generate sources exist)."""
    import torch

    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return run_devices(config, cuda_count=torch.cuda.device_count(), mps=mps)


def device_groups(groups: Iterable[str], devices: list[str], worker_count: int) -> dict[str, str]:
    """Checkpoint group -> device of the groups with generated images; empty when every worker can have its
    own device (then gwN keeps devices[N])."""
    names = sorted(set(groups))
    if worker_count <= max(len(devices), 1) or not names or not devices:
        return {}
    dealt = assign(names, len(devices))
    return {name: devices[dealt[name] - 1] for name in names}


def group_name(device: str) -> str:
    return f"{GROUP_PREFIX}{device}"


def device_of_group(name: str | None) -> str | None:
    return name[len(GROUP_PREFIX):] if name and name.startswith(GROUP_PREFIX) else None


def mapped(group: str | None, plan: Mapping[str, str]) -> str | None:
    """The xdist group a test gets: its device's group when its checkpoint group generates, else unchanged."""
    return group_name(plan[group]) if group is not None and group in plan else group
