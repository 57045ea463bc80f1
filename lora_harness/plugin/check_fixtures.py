"""The LoRA check fixtures (`lora_leakage_check`, `lora_strength_check`, `lora_memorization_check`,
`lora_diversity_check`, ...): one generic body, one fixture per check registered in lora_harness.checks, so
adding a check needs no change here. Each keeps its check's `fixture_doc`, which `pytest --fixtures` shows."""

from __future__ import annotations

from typing import Any

import pytest

from lora_harness.checks import registry as lora_checks
from lora_harness.run.harness import Harness


def _check_fixture(check: Any) -> Any:
    """One checkpoint's result of a registered check, or a skip saying what to configure; `.check()` asserts
    with the usual gating."""

    def fixture(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
        if request.param is None:
            pytest.skip(lora_checks.skip_reason(request.fixturename))
        return lora_checks.run_check(lora_harness, request.fixturename, request.param)

    fixture.__doc__ = check.fixture_doc
    return pytest.fixture(fixture, name=check.fixture)


for _check in lora_checks.CHECKS:
    globals()[_check.fixture] = _check_fixture(_check)
