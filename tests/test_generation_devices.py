"""One pipeline per device (issue 14): which devices a run generates on, and the xdist group per device when
workers outnumber devices (pure functions; the end-to-end check is in test_generation_e2e_robust.py)."""

from __future__ import annotations

from lora_harness.generation.devices import GROUP_PREFIX, device_groups, device_of_group, group_name, mapped, run_devices
from lora_harness.generation.settings import PipelineConfig


def test_run_devices_follow_the_worker_mapping_rules() -> None:
    assert run_devices(PipelineConfig(device="cpu"), cuda_count=4, mps=False) == ["cpu"]
    assert run_devices(PipelineConfig(device="cuda:1"), cuda_count=4, mps=False) == ["cuda:1"]
    assert run_devices(PipelineConfig(), cuda_count=2, mps=False) == ["cuda:0", "cuda:1"]
    assert run_devices(PipelineConfig(devices=["cuda:1", "cuda:1", "cuda"]), cuda_count=2, mps=False) == ["cuda:1", "cuda:0"]
    assert run_devices(PipelineConfig(devices=["cpu"]), cuda_count=0, mps=False) == ["cpu"]
    assert run_devices(PipelineConfig(), cuda_count=0, mps=True) == ["mps"]


def test_device_groups_only_when_workers_outnumber_devices() -> None:
    groups = [f"me-epoch{i:06d}" for i in range(1, 8)]
    assert device_groups(groups, ["cuda:0", "cuda:1"], worker_count=2) == {}  # gwN keeps cuda:N
    one = device_groups(groups, ["cpu"], worker_count=4)
    assert set(one) == set(groups) and set(one.values()) == {"cpu"}
    two = device_groups(groups, ["cuda:0", "cuda:1"], worker_count=4)
    assert sorted(list(two.values()).count(d) for d in ("cuda:0", "cuda:1")) == [3, 4]  # balanced
    assert device_groups(list(reversed(groups)), ["cuda:0", "cuda:1"], worker_count=4) == two  # order-independent
    assert mapped("me-epoch000001", one) == group_name("cpu") == f"{GROUP_PREFIX}cpu"
    assert mapped("sample-folder-step000100", one) == "sample-folder-step000100" and mapped(None, one) is None
    assert device_of_group(group_name("cuda:1")) == "cuda:1" and device_of_group("me-epoch000001") is None
