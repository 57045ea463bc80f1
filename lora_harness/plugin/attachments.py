"""Per-test files for people: the case's report thumbnail (written while its pixels are at hand) and, with
`--alluredir`, its image, scores and labels as allure attachments. Never changes a test's outcome."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from lora_harness.core.cases import Checkpoint, EvalCase
from lora_harness.plugin.state import param, state_of
from lora_harness.run.harness import Harness

_USES_PIXELS = frozenset({"lora_scores", "lora_gate", "lora_image"})


def thumbnail(item: pytest.Item) -> None:
    """The case's report thumbnail from the pixels its test used, packed in the background (`THUMBNAILS`)."""
    case, harness = param(item, "lora_case"), state_of(item.config).harness_if_built
    if isinstance(case, EvalCase) and harness is not None and _USES_PIXELS & set(getattr(item, "fixturenames", ())):
        try:
            pixels = harness.image(case)  # here, not on the writer's thread: the harness is not thread-safe
            thumbnail_writer(item.config, harness).submit(case.key, case.image_path, pixels)
        except Exception:  # never change a test's outcome: the report build makes what is missing
            pass


THUMBNAILS = pytest.StashKey[Any]()


def thumbnail_writer(config: pytest.Config, harness: Harness) -> Any:
    """This process's thumbnail writer: one pack per process, named like its score file (`report.thumb_pack`)."""
    writer = config.stash.get(THUMBNAILS, None)
    if writer is None:
        from lora_harness.report.thumbs import ThumbnailWriter

        writer = config.stash[THUMBNAILS] = ThumbnailWriter.for_run(
            harness.config.run_dir, harness.config.report.thumbnail_px,
            run_id=harness.store.run_id, worker=harness.store.worker,
        )
    return writer


def attach_allure(item: pytest.Item) -> None:
    from lora_harness.report import allure as lora_allure

    state = state_of(item.config)
    try:
        lora_allure.stable_parameters(item, ("lora_case", "lora_checkpoint"))
        case, checkpoint = param(item, "lora_case"), param(item, "lora_checkpoint")
        if isinstance(case, EvalCase):
            wants_scores = {"lora_scores", "lora_gate"} & set(getattr(item, "fixturenames", ()))
            lora_allure.attach_case(
                case, state.harness().score(case) if wants_scores else None,
                thumbnail_px=state.harness().config.report.thumbnail_px,
                full_image=bool(item.config.getoption("lora_allure_full_images", False)),
            )
        elif isinstance(checkpoint, Checkpoint):
            lora_allure.attach_checkpoint(checkpoint, state.harness().checkpoint_values(checkpoint))
    except Exception as exc:  # an attachment problem must never change a test's outcome
        warnings.warn(f"lora-harness: could not attach allure results for {item.nodeid}: {exc}", stacklevel=1)
