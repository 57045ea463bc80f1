"""The LoRA check fixtures (leakage, strength, memorization, diversity): one generic body over the checks
registry (lora_harness.checks); each name is its own fixture so `pytest --fixtures` documents it."""

from __future__ import annotations

from typing import Any

import pytest

from lora_harness.checks import registry as lora_checks
from lora_harness.run.harness import Harness


def _lora_check(request: pytest.FixtureRequest, harness: Harness) -> Any:
    """A LoRA check of one checkpoint (lora_harness.checks); `.check()` asserts with the usual gating."""
    fixture = request.fixturename
    if request.param is None:
        pytest.skip(lora_checks.SKIP_REASONS[fixture])
    memorization = request.getfixturevalue("_lora_memorization") if fixture == "lora_memorization_check" else None
    diversity = request.getfixturevalue("_lora_diversity") if fixture == "lora_diversity_check" else None
    return lora_checks.run_check(harness, fixture, request.param, memorization, diversity)


@pytest.fixture(scope="session")
def _lora_memorization(lora_harness: Harness) -> Any:
    from lora_harness.checks.memorization import MemorizationCheck

    return MemorizationCheck(lora_harness.config)  # training images and judges load once per worker


@pytest.fixture(scope="session")
def _lora_diversity(lora_harness: Harness) -> Any:
    from lora_harness.checks.diversity import DiversityCheck

    return DiversityCheck(lora_harness)  # the face backend loads once per worker


@pytest.fixture
def lora_diversity_check(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """A checkpoint's images as a set: diversity below `[diversity] min` fails ("all images look alike")."""
    return _lora_check(request, lora_harness)


@pytest.fixture
def lora_leakage_check(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """Prompts without the trigger, LoRA loaded: identity to the references must stay below `[leakage] max_identity`."""
    return _lora_check(request, lora_harness)


@pytest.fixture
def lora_strength_check(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """One prompt/seed at `[strength] scales`: metric(high) - metric(low) must reach `margin`."""
    return _lora_check(request, lora_harness)


@pytest.fixture
def lora_memorization_check(request: pytest.FixtureRequest, lora_harness: Harness) -> Any:
    """Each image vs the training images: near-copies above `[memorization] max_similarity` fail."""
    return _lora_check(request, lora_harness)

