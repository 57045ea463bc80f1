"""allure results for eval cases: the image, its scores (JSON) and the judges' reasons, plus labels.

Used only when the user passes `--alluredir` (allure-pytest then collects results). CI systems show allure;
with these attachments a reviewer sees in one place the image, what each judge said and why. Labels
(`lora`, `step`, `prompt`, `seed`, `metric`) make cases filterable in the allure UI. Everything attached passes
through the redactor, so a key in an error message never lands in the results folder.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from lora_harness.core.cases import Checkpoint, EvalCase
from lora_harness.judges.base import Score
from lora_harness.core.redact import Redactor
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


def stable_parameters(item: Any, names: Sequence[str]) -> None:
    """Exclude the test's own parametrization (`lora_case=EvalCase(..., image_path=/abs/path, timestamp=...)`)
    from allure's history id, and hide it: the history id must not change when the checkout moves or the
    samples are regenerated, or allure loses history, trends and flaky detection. The case's identity goes
    in as the named parameters instead (`case_parameters`).

    allure's `dynamic.parameter` cannot exclude a parameter pytest already added, so the listener's current
    result is updated; with another allure-pytest layout nothing happens (the ids then stay as before)."""
    listener = item.config.pluginmanager.get_plugin("allure_listener")
    logger = getattr(listener, "allure_logger", None)
    result = logger.get_test(None) if logger is not None else None
    for parameter in getattr(result, "parameters", None) or ():
        if parameter.name in names:
            parameter.excluded = True
            parameter.mode = "hidden"


def case_parameters(loraname: str, step: str, prompt: str | None = None, seed: int | None = None,
                    metrics: Sequence[str] = ()) -> None:
    """lora, step, prompt, seed (and metric) as allure parameters (they make the history id), and the
    suite / behaviour hierarchy LoRA > checkpoint, which allure's Suites and Behaviors views group by."""
    import allure

    allure.dynamic.parameter("lora", loraname)
    allure.dynamic.parameter("step", step)
    if prompt is not None:
        allure.dynamic.parameter("prompt", prompt)
    if seed is not None:
        allure.dynamic.parameter("seed", str(seed))
    if metrics:
        allure.dynamic.parameter("metric", ", ".join(sorted(metrics)), excluded=True)  # a judge added: same test
    allure.dynamic.parent_suite(loraname)
    allure.dynamic.suite(f"step {step}")
    allure.dynamic.epic(loraname)
    allure.dynamic.feature(f"step {step}")


def thumbnail_jpeg(path: Any, max_px: int) -> bytes:
    """A JPEG thumbnail of an image file (longest side `max_px`): full-size PNGs are GBs per run at 1024 px."""
    import io

    from PIL import Image

    with Image.open(path) as img:
        img.draft("RGB", (max_px, max_px))
        img = img.convert("RGB")
        img.thumbnail((max_px, max_px))
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def attach_case(case: EvalCase, scores: Mapping[str, Score] | None, *, thumbnail_px: int = 256,
                full_image: bool = False) -> None:
    """Labels and attachments of one image's test (call while the test runs): a thumbnail, or the image
    itself with `full_image` (`--lora-allure-full-images`)."""
    import allure

    redactor = Redactor()
    _labels(case.loraname, case.step_label, scores.keys() if scores else ())
    allure.dynamic.label("prompt", case.prompt_id)
    if case.seed is not None:
        allure.dynamic.label("seed", str(case.seed))
    case_parameters(case.loraname, case.step_label, case.prompt_id, case.seed, tuple(scores or ()))
    if case.image_path.is_file() and full_image:
        kind = _IMAGE_TYPES.get(case.image_path.suffix.lower())
        allure.attach.file(
            str(case.image_path),
            name=f"image {case.image_path.name}",
            attachment_type=getattr(allure.attachment_type, kind) if kind else None,
        )
    elif case.image_path.is_file():
        try:
            allure.attach(thumbnail_jpeg(case.image_path, thumbnail_px), name=f"thumbnail {case.image_path.name}",
                          attachment_type=allure.attachment_type.JPG)
        except Exception as exc:  # an undecodable image fails its test elsewhere; say why it has no picture
            allure.attach(f"no thumbnail: {exc}", name="thumbnail", attachment_type=allure.attachment_type.TEXT)
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
    case_parameters(checkpoint.loraname, step, metrics=tuple(values))
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
