"""`face_identity`: is there a face, and is it the person of the reference photos? Offline, with dlib.

Pipeline per image: dlib's HOG frontal-face detector (on a copy downscaled to ``detect_max_side``, with
``upsample`` pyramid up-steps so faces down to ~40 px are found), the largest detection (HOG sometimes adds
small false boxes), dlib's 5-point landmarks, an aligned 150 px face chip, and dlib's ResNet face
descriptor (128-d, the model behind `face_recognition`). The weights ship inside the PyPI package
`face_recognition_models` (extra `face`), so the judge runs offline by default; ``model_dir`` points at
another folder holding the same three `.dat` files. The 68-point landmark model is not used: its training
data carries non-commercial terms.

Metrics:
* ``face_detected``: 1 when a face was found, else 0 (an offline counterpart of the study's "person
  present" criterion).
* ``face_identity_mean`` / ``face_identity_max``: cosine similarity of the sample's face descriptor to
  each reference face's, mean and max over the reference faces. Cosine (not dlib's Euclidean distance) so
  the metric reads like the ArcFace-style numbers in the literature: higher is more alike. dlib's
  descriptors are not unit length and their cosines are compressed near 1: the astronaut vs her own crops
  and mirror image scores 0.98-1.0, vs the cameraman 0.82 (distance 0.85, where dlib's same-person rule
  is distance < 0.6). The distances and that rule's votes are kept in ``raw``; thresholds belong around 0.9.

No face in the sample: ``face_detected = 0`` and both identity metrics are recorded as missing (value
None, ``raw["missing"]`` says why), never as similarity 0. Reference photos without a face are left out
(listed in ``raw``); if none has a face, every case gets an error naming the photos.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from lora_harness.cases import EvalCase
from lora_harness.judges.base import JudgeContext, Score, check_choice, check_int, check_text, register, reject_unknown
from lora_harness.judges.embedding import (
    ImageInputError,
    Lazy,
    ReferencePhotoError,
    cosine_matrix,
    mean_max,
    prepare_image,
)
from lora_harness.models import ModelError, ModelUnavailable, cached, require

FACE_EXTRA = "pip install 'lora-harness[face]'  (dlib-bin, face_recognition_models)"
MODEL_FILES = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}
DLIB_SAME_PERSON_DISTANCE = 0.6  # dlib's documented threshold for its face descriptors
METRICS = ("face_detected", "face_identity_mean", "face_identity_max")


@dataclass(frozen=True)
class Face:
    """The largest face in an image: its box (left, top, right, bottom, in input pixels) and descriptor."""

    box: tuple[int, int, int, int]
    detector_score: float
    faces_found: int
    descriptor: np.ndarray

    @property
    def size(self) -> int:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


class DlibFaces:
    """dlib's detector, 5-point landmarks and ResNet descriptor; one instance per process and model folder."""

    def __init__(self, model_dir: Path) -> None:
        dlib = require("dlib", judge="face_identity", install=FACE_EXTRA)
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = _load_dat(dlib.shape_predictor, model_dir / MODEL_FILES["landmarks"])
        self.recognizer = _load_dat(dlib.face_recognition_model_v1, model_dir / MODEL_FILES["recognition"])

    def largest_face(self, rgb: np.ndarray, *, upsample: int, detect_max_side: int, num_jitters: int) -> Face | None:
        """Detect on a bounded-size copy, then describe the largest face at the input's own resolution."""
        height, width = rgb.shape[:2]
        scale = min(1.0, detect_max_side / max(height, width))
        small = rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
        boxes, scores, _ = self.detector.run(np.ascontiguousarray(small), upsample, 0.0)
        if len(boxes) == 0:
            return None
        best = max(range(len(boxes)), key=lambda i: boxes[i].area())
        box = boxes[best]
        left, top = max(0, round(box.left() / scale)), max(0, round(box.top() / scale))
        right, bottom = min(width - 1, round(box.right() / scale)), min(height - 1, round(box.bottom() / scale))
        rect = self.dlib.rectangle(left, top, right, bottom)
        shape = self.landmarks(rgb, rect)
        descriptor = np.asarray(self.recognizer.compute_face_descriptor(rgb, shape, num_jitters, 0.25))
        return Face((left, top, right, bottom), float(scores[best]), len(boxes), descriptor)


def _load_dat(loader: Any, path: Path) -> Any:
    try:
        return loader(str(path))
    except RuntimeError as exc:  # dlib's deserialization error for a wrong or corrupt file
        raise ModelError(f"face_identity: {path} is not a usable dlib model file ({exc}); "
                         f"use the files from the face_recognition_models package") from None


def default_model_dir() -> Path:
    """The `models/` folder of the installed `face_recognition_models` package, found without importing it.

    Importing the package would import `pkg_resources`, which setuptools >= 81 no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"face_identity needs the dlib face models; install them: {FACE_EXTRA}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@register("face_identity")
class FaceIdentityJudge:
    """Face presence and identity similarity to the reference photos' faces (dlib, offline)."""

    name = "face_identity"
    version = "1"

    def __init__(
        self,
        *,
        backend: str = "dlib",
        model_dir: str | None = None,
        upsample: int = 1,
        detect_max_side: int = 640,
        num_jitters: int = 0,
        min_side: int = 32,
        max_side: int = 2048,
        **unknown: Any,
    ) -> None:
        reject_unknown(self.name, unknown, _OPTIONS)
        self.backend = check_choice(self.name, "backend", backend, ("dlib",))
        self.model_dir = check_text(self.name, "model_dir", model_dir)
        self.upsample = check_int(self.name, "upsample", upsample, 0, 3)
        self.detect_max_side = check_int(self.name, "detect_max_side", detect_max_side, 64)
        self.num_jitters = check_int(self.name, "num_jitters", num_jitters, 0, 100)
        self.min_side = check_int(self.name, "min_side", min_side, 1)
        self.max_side = check_int(self.name, "max_side", max_side, 64)
        self._faces: Lazy[DlibFaces] = Lazy(self._load)
        self._references: tuple[Any, np.ndarray, tuple[str, ...], dict[str, str]] | None = None

    @property
    def metrics(self) -> list[str]:
        return list(METRICS)

    def judge(self, case: EvalCase, image: np.ndarray, context: JudgeContext) -> list[Score]:
        return self.judge_batch([(case, image)], context)[0]

    def judge_batch(self, items: Sequence[tuple[EvalCase, np.ndarray]], context: JudgeContext) -> list[list[Score]]:
        """dlib has no batched CPU path, so this is a loop; it exists to load models and references once and
        to keep one bad image from costing the others their scores."""
        faces = self._faces.get()  # ModelUnavailable: the harness skips the gated tests
        ref_descriptors, ref_names, ref_skipped = self.references(faces, context)
        results = []
        for _, image in items:
            try:
                results.append(self._judge_one(faces, image, ref_descriptors, ref_names, ref_skipped))
            except ImageInputError as exc:
                results.append(self._errors(str(exc)))
            except Exception as exc:  # a dlib failure on one image must not cost the others their scores
                results.append(self._errors(f"{type(exc).__name__}: {exc}"))
        return results

    def _judge_one(
        self,
        faces: DlibFaces,
        image: np.ndarray,
        ref_descriptors: np.ndarray,
        ref_names: tuple[str, ...],
        ref_skipped: dict[str, str],
    ) -> list[Score]:
        prepared = prepare_image(image, min_side=self.min_side, max_side=self.max_side)
        face = self._face(faces, prepared.array)
        raw: dict[str, Any] = {"backend": self.backend}
        if prepared.notes:
            raw["input"] = "; ".join(prepared.notes)
        if ref_skipped:
            raw["references_without_face"] = dict(ref_skipped)
        if face is None:
            missing = {**raw, "missing": "no face detected"}
            return [
                Score("face_detected", 0.0, raw),
                Score("face_identity_mean", None, missing),
                Score("face_identity_max", None, missing),
            ]
        cosines = cosine_matrix(face.descriptor[None, :], ref_descriptors)
        mean, best = mean_max(cosines)
        distances = np.linalg.norm(ref_descriptors - face.descriptor[None, :], axis=1)
        raw.update(
            box=list(face.box),
            face_px=face.size,
            faces_found=face.faces_found,
            detector_score=face.detector_score,
            per_reference=dict(zip(ref_names, map(float, cosines[0]))),
            distances=dict(zip(ref_names, map(float, distances))),
            same_person_votes=int((distances < DLIB_SAME_PERSON_DISTANCE).sum()),
        )
        return [
            Score("face_detected", 1.0, raw),
            Score("face_identity_mean", float(mean[0]), raw),
            Score("face_identity_max", float(best[0]), raw),
        ]

    def _face(self, faces: DlibFaces, rgb: np.ndarray) -> Face | None:
        return faces.largest_face(
            rgb, upsample=self.upsample, detect_max_side=self.detect_max_side, num_jitters=self.num_jitters
        )

    def _errors(self, message: str) -> list[Score]:
        return [Score(metric, None, error=f"{self.name}: {message}") for metric in METRICS]

    def references(
        self, faces: DlibFaces, context: JudgeContext
    ) -> tuple[np.ndarray, tuple[str, ...], dict[str, str]]:
        """Descriptors of the reference faces (once per reference set), their names, and the photos left out."""
        cached_refs = self._references
        if cached_refs is not None and cached_refs[0] is context.reference_images:
            return cached_refs[1], cached_refs[2], cached_refs[3]
        images = list(context.reference_images)
        if not images:
            raise ReferencePhotoError(
                f"{self.name} compares faces with reference photos, but none are configured; "
                f"list photos of the person under [person] references"
            )
        paths = list(context.reference_paths)
        names = [p.name for p in paths] if len(paths) == len(images) else [f"reference {i}" for i in range(len(images))]
        descriptors, kept, skipped = [], [], {}
        for name, image in zip(names, images):
            try:
                face = self._face(faces, prepare_image(image, min_side=self.min_side, max_side=self.max_side).array)
            except ImageInputError as exc:
                skipped[name] = str(exc)
                continue
            if face is None:
                skipped[name] = "no face detected"
                continue
            descriptors.append(face.descriptor)
            kept.append(name)
        if not descriptors:
            listing = "; ".join(f"{name}: {why}" for name, why in skipped.items())
            raise ReferencePhotoError(
                f"{self.name}: none of the {len(images)} reference photo(s) has a usable face ({listing}); "
                f"add photos where the face is frontal, unobstructed and at least ~80 px tall to [person] references"
            )
        result = (np.stack(descriptors), tuple(kept), skipped)
        self._references = (context.reference_images, *result)
        return result

    def _load(self) -> DlibFaces:
        require("dlib", judge=self.name, install=FACE_EXTRA)
        folder = Path(self.model_dir).expanduser() if self.model_dir else default_model_dir()
        missing = [name for name in MODEL_FILES.values() if not (folder / name).is_file()]
        if missing:
            raise ModelUnavailable(
                f"{self.name}: model file(s) {', '.join(missing)} not found in {folder}; "
                + (f"put them there or remove the option model_dir" if self.model_dir else f"reinstall: {FACE_EXTRA}")
            )
        return cached(("dlib-faces", str(folder.resolve())), lambda: DlibFaces(folder))


_OPTIONS = tuple(
    name
    for name, param in inspect.signature(FaceIdentityJudge.__init__).parameters.items()
    if param.kind is param.KEYWORD_ONLY
)
