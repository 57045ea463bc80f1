"""Diversity check: per checkpoint, do the images differ from each other, or has the LoRA collapsed?

The checkpoint's own images (trigger prompts; no leakage/strength/baseline images) are decoded from the
run (sample folders or generated images: no GPU needed), their whole-image embeddings and, when the
`face_identity` judge's models are installed, their face descriptors are computed once, and the set
metrics of `lora_harness.analyses.diversity_metrics` are stored as checkpoint-level rows (judge ``diversity``, on the
checkpoint's first case, so the CSV and the trend plots show them over training steps). A metric below
its `[diversity] min` fails the checkpoint with "all images look alike".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lora_harness.checks.base import Check
from lora_harness.checks.result import CheckResult
from lora_harness.core.cases import Checkpoint, EvalCase, latest_per_lora
from lora_harness.analyses.diversity_metrics import (
    image_embeddings,
    mean_pairwise_cosine_distance,
    mean_pairwise_distance,
    vendi_score,
)
from lora_harness.core.images import ImageError
from lora_harness.judges import Score
from lora_harness.judges.faces import primary_index
from lora_harness.judges.model_loading import ModelUnavailable
from lora_harness.run.store import ScoreRow

if TYPE_CHECKING:
    from lora_harness.checks.settings import DiversityConfig
    from lora_harness.run.harness import Harness

SOURCE = "diversity"
VERSION = "1"


def diversity_cases(harness: "Harness", checkpoint: Checkpoint) -> list[EvalCase]:
    return [c for c in harness.cases_of(checkpoint) if c.role == "lora"]


def diversity_targets(harness: "Harness") -> list[Checkpoint]:
    config = harness.config.diversity
    if config is None:
        return []
    found = [c for c in harness.checkpoints if len(diversity_cases(harness, c)) >= 2]
    if config.checkpoints == "latest":
        found = list(latest_per_lora(found).values())
    return found


def set_scores(images: list[np.ndarray], descriptors: list[np.ndarray] | None, faceless: int) -> list[Score]:
    """The diversity metrics of one set; identity ones are missing (not 0) when fewer than two faces."""
    embeddings = image_embeddings(images)
    raw: dict[str, Any] = {"images": len(images)}
    scores = [
        Score("diversity_image", mean_pairwise_cosine_distance(embeddings), raw),
        Score("vendi_image", vendi_score(embeddings), raw),
    ]
    if descriptors is None:
        return scores
    face_raw = {**raw, "faces": len(descriptors), "images_without_face": faceless}
    if len(descriptors) < 2:
        missing = {**face_raw, "missing": f"{len(descriptors)} image(s) with a face; identity diversity needs two"}
        return scores + [Score("diversity_identity", None, missing), Score("vendi_identity", None, missing)]
    stacked = np.stack(descriptors)
    return scores + [
        Score("diversity_identity", mean_pairwise_distance(stacked), face_raw),
        Score("vendi_identity", vendi_score(stacked), face_raw),
    ]


class DiversityCheck(Check):
    """The face backend (when identity metrics are asked for) is loaded on first use, once per harness (so once
    per worker)."""

    name = SOURCE
    skip_reason = (
        "no diversity check configured: add a [diversity] section (e.g. min = { diversity_image = 0.1 }) to the "
        "eval config"
    )
    fixture_doc = "A checkpoint's images as a set: diversity below `[diversity] min` fails (\"all images look alike\")."

    def __init__(self) -> None:
        self._judge: Any = None
        self._unavailable: str | None = None

    def targets(self, harness: "Harness") -> list[Checkpoint]:
        return diversity_targets(harness)

    def _faces(self, harness: "Harness") -> Any:
        if self._judge is None and self._unavailable is None:
            from lora_harness.judges.face_identity import FaceIdentityJudge

            options = next((dict(j.options) for j in harness.config.judges if j.name == "face_identity"), {})
            judge = FaceIdentityJudge(**options)
            try:
                self._judge = (judge, judge.backend_models())
            except ModelUnavailable as exc:
                self._unavailable = str(exc)
        return self._judge

    def stored_descriptors(self, harness: "Harness", cases: list[EvalCase]) -> tuple[list[np.ndarray], int] | None:
        """The chosen faces' descriptors the configured `face_identity` judge keeps on its `face_detected` rows
        (judged now if this process has no scores yet): no second detection. None: not usable here."""
        found, faceless = [], 0
        for case in cases:
            score = harness.score(case).get("face_detected")
            if score is None or score.error is not None or score.value is None:
                return None  # model unavailable or a judge error: detect here instead (and report that)
            if score.value == 0.0:
                faceless += 1
            elif isinstance(score.raw.get("descriptor"), list):
                found.append(np.asarray(score.raw["descriptor"], dtype=np.float64))
            else:
                return None  # scores of an older judge version without descriptors
        return found, faceless

    def descriptors(self, harness: "Harness", images: list[np.ndarray], cases: list[EvalCase],
                    result: CheckResult) -> tuple[list[np.ndarray], int] | None:
        config = _config(harness)
        if not config.identity:
            return None
        if any(j.name == "face_identity" for j in harness.config.judges):
            stored = self.stored_descriptors(harness, cases)
            if stored is not None:
                return stored
        loaded = self._faces(harness)
        if loaded is None:
            gated = any(m in config.min for m in ("diversity_identity", "vendi_identity"))
            (result.unavailable if gated else result.lines).append(f"identity diversity: {self._unavailable}")
            return None
        judge, backend = loaded
        found, faceless = [], 0
        for image in images:
            faces, _ = judge.detect(backend, image)
            if faces:
                found.append(faces[primary_index(faces)].descriptor)
            else:
                faceless += 1
        return found, faceless

    def evaluate(self, harness: "Harness", checkpoint: Checkpoint) -> CheckResult:
        config = _config(harness)
        result = CheckResult(self.name, checkpoint)
        cases, images = [], []
        for case in diversity_cases(harness, checkpoint):
            try:
                images.append(harness.image(case))
                cases.append(case)
            except ImageError as exc:
                result.errors.append(f"{case.key}: {exc}")
        if len(images) < 2:
            result.errors.append(f"{len(images)} readable image(s); diversity needs at least two per checkpoint")
            return result
        faces = self.descriptors(harness, images, cases, result)
        scores = set_scores(images, *(faces or (None, 0)))
        harness.store.append([
            ScoreRow.of(cases[0], s, judge=SOURCE, judge_version=VERSION, run_id=harness.run_id, worker=harness.worker)
            for s in scores
        ])
        for score in scores:
            limit = config.min.get(score.metric)
            if score.value is None:
                line = f"{score.metric} missing ({score.raw.get('missing')})"
                (result.errors if limit is not None else result.lines).append(line)
            elif limit is not None and score.value < limit:
                result.failures.append(
                    f"{score.metric} = {score.value:.4f} < minimum {limit:g} over {len(images)} images: "
                    f"all images look alike (the LoRA may have collapsed onto one picture)"
                )
            else:
                result.lines.append(f"{score.metric} = {score.value:.4f}" + (f" (minimum {limit:g})" if limit is not None else ""))
        return result


def _config(harness: "Harness") -> "DiversityConfig":
    config = harness.config.diversity
    assert config is not None, "the diversity check needs a [diversity] section"
    return config
