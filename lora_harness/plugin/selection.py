"""After -k/-m: keep this machine's `--lora-shard`, and tag image tests for the judging progress line."""

from __future__ import annotations

import pytest

from lora_harness.core.cases import EvalCase
from lora_harness.plugin.collection import item_group
from lora_harness.plugin.state import PROGRESS_KEY, param, shard_of
from lora_harness.run import sharding


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = shard_of(config)
    if shard is not None:
        items[:], deselected = sharding.split(items, shard, lambda item: item_group(item.config, item))
        if deselected:
            config.hook.pytest_deselected(items=deselected)
    cases = [(item, param(item, "lora_case")) for item in items if isinstance(param(item, "lora_case"), EvalCase)]
    sizes: dict[str, int] = {}
    for _, case in cases:
        sizes[case.checkpoint_key] = sizes.get(case.checkpoint_key, 0) + 1
    for item, case in cases:
        item.user_properties.append((PROGRESS_KEY, {
            "checkpoint": case.checkpoint_key, "size": sizes[case.checkpoint_key],
            "checkpoints": len(sizes), "images": len(cases),
        }))
