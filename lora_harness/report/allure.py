"""allure results for eval cases: the image, its scores (JSON) and the judges' reasons, plus labels.

Used only when the user passes `--alluredir` (allure-pytest then collects results). CI systems show allure;
with these attachments a reviewer sees in one place the image, what each judge said and why. Labels
(`lora`, `step`, `prompt`, `seed`, `metric`) make cases filterable in the allure UI. Everything attached passes
through the redactor, so a key in an error message never lands in the results folder.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from lora_harness.cases import Checkpoint, EvalCase
from lora_harness.judges.base import Score
from lora_harness.redact import Redactor
from lora_harness.report.view import justification_of

_IMAGE_TYPES = {".png": "PNG", ".jpg": "JPG", ".jpeg": "JPG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP"}


def allure_enabled(config: Any) -> bool:
    """True when allure-pytest is active for this run (`--alluredir` given)."""
    return bool(getattr(config.option, "allure_report_dir", None)) and config.pluginmanager.hasplugin("allure_pytest")


def scores_payload(scores: Mapping[str, Score], redactor: Redactor) -> dict[str, Any]:
    payload = {metric: {"value": s.value, "error": s.error, "raw": dict(s.raw)} for metric, s in sorted(scores.items())}
    return redactor.value(payload)


def justifications_text(scores: Mapping[str, Score], redactor: Redactor) -> str:
    parts = []
    for metric, score in sorted(scores.items()):
        reason = justification_of(redactor.value(dict(score.raw)))
        if reason:
            parts.append(f"{metric} = {score.value}\n{reason}")
    return "\n\n".join(parts)


def attach_case(case: EvalCase, scores: Mapping[str, Score] | None) -> None:
    """Labels and attachments of one image's test (call while the test runs)."""
    import allure

    redactor = Redactor()
    _labels(case.loraname, case.step_label, scores.keys() if scores else ())
    allure.dynamic.label("prompt", case.prompt_id)
    if case.seed is not None:
        allure.dynamic.label("seed", str(case.seed))
    if case.image_path.is_file():
        kind = _IMAGE_TYPES.get(case.image_path.suffix.lower())
        allure.attach.file(
            str(case.image_path),
            name=f"image {case.image_path.name}",
            attachment_type=getattr(allure.attachment_type, kind) if kind else None,
        )
    allure.attach(redactor.text(case.prompt.text), name="prompt", attachment_type=allure.attachment_type.TEXT)
    if scores:
        allure.attach(
            json.dumps(scores_payload(scores, redactor), indent=2, sort_keys=True, default=str),
            name="scores",
            attachment_type=allure.attachment_type.JSON,
        )
        reasons = justifications_text(scores, redactor)
        if reasons:
            allure.attach(reasons, name="justifications", attachment_type=allure.attachment_type.TEXT)


def attach_checkpoint(checkpoint: Checkpoint, values: Mapping[str, Sequence[float | None]]) -> None:
    """Labels and the per-metric values behind a checkpoint's aggregate test."""
    import allure

    step = ("e" if checkpoint.step_kind == "epoch" else "") + f"{checkpoint.training_step:06d}"
    _labels(checkpoint.loraname, step, values.keys())
    allure.attach(
        json.dumps({m: list(v) for m, v in sorted(values.items())}, indent=2),
        name="checkpoint scores",
        attachment_type=allure.attachment_type.JSON,
    )


def _labels(loraname: str, step: str, metrics) -> None:
    import allure

    allure.dynamic.label("lora", loraname)
    allure.dynamic.label("step", step)
    for metric in sorted(metrics):
        allure.dynamic.label("metric", metric)
