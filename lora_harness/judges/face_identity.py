"""`face_identity`: is there a face, and is it the person of the reference photos? Offline: dlib or ArcFace.

Pipeline per image: a face backend finds every face above a confidence floor with its 5 landmarks and an
identity descriptor (`lora_harness/judges/faces.py`), one face is chosen by the `face` policy, and that
face is compared with the reference faces. The default backend is dlib (`face_dlib.py`: HOG detector at a
scale that finds 40 px faces, 5-point alignment, ResNet 128-d descriptor); its weights ship inside the PyPI
package `face_recognition_models` (extra `face`), so the judge runs offline; ``model_dir`` points at another
folder with the same `.dat` files. The 68-point landmark model is not used: its training data carries
non-commercial terms. ``backend = "arcface"`` runs insightface-style ONNX models from a folder the user
downloaded (`face_arcface.py`), with the same metrics and options.

Metrics:
* ``face_detected``: 1 when a face above ``min_detector_score`` was found, else 0 (an offline counterpart of
  the study's "person present" criterion).
* ``face_distance``: mean Euclidean distance of the chosen face's descriptor to the reference faces' (dlib's
  own scale: lower is more alike), and ``face_match``: 1 when that distance is below ``match_distance``
  (dlib's published operating point 0.6, 99.38% on LFW), else 0. This is the calibrated metric to gate on:
  "is it the same person" without guessing a cosine.
* ``face_identity_mean`` / ``face_identity_max``: cosine similarity to each reference face, mean and max,
  kept for continuity and because the literature reports ArcFace cosines. dlib's descriptors are not unit
  length and their cosines crowd near 1: different LFW people score 0.77-0.91 against the astronaut, so a
  cosine threshold cannot separate them, while the distance rule does.

Head pose: every face's yaw, pitch and roll (degrees) from its 5 landmarks (`judges/pose.py`: cv2.solvePnP
against a generic 3D face) is kept in ``raw`` (``yaw``/``pitch``/``roll`` of the chosen face, and per face in
``raw["faces"]``), so the report can plot identity against |yaw|. ``pose_bands = true`` adds the metrics
``face_yaw_abs`` and ``face_match_<band>`` / ``face_distance_<band>`` for the bands ``frontal`` (|yaw| below
``frontal_max_yaw``, 20) and ``profile`` (|yaw| from ``profile_min_yaw``, 30): None outside the band, so
``[thresholds.face_match_profile]`` gates the likeness in profile only on the images that show one.

No face in the sample: ``face_detected = 0`` and the other metrics are recorded as missing (value None,
``raw["missing"]`` says why), never as similarity 0. Reference photos without a face are left out (listed in
``raw``); if none has a face, every case gets an error naming the photos. A reference photo contributes its
primary (most confident) face.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lora_harness.core.cases import EvalCase
from lora_harness.judges.base import Direction, JudgeContext, Score, check_choice, check_int, check_text, register, reject_unknown
from lora_harness.judges.embedding import ImageInputError, Lazy, ReferencePhotoError, prepare_image
from lora_harness.judges.face_arcface import (
    ARCFACE_EXTRA,
    ARCFACE_MATCH_DISTANCE,
    ARCFACE_MIN_SCORE,
    DEFAULT_ARCFACE_DIR,
    GET_MODELS,
    ArcFaces,
    ArcFaceSettings,
    onnx_providers,
)
from lora_harness.judges.face_dlib import (
    DLIB_SAME_PERSON_DISTANCE,
    FACE_EXTRA,
    MODEL_FILES,
    DlibFaces,
    DlibSettings,
)
from lora_harness.judges.faces import FACE_POLICIES, Comparison, DetectedFace, FaceBackend, choose_face, compare, primary_index
from lora_harness.judges.pose import HeadPose, head_pose
from lora_harness.judges.model_loading import ModelUnavailable, cached, require

POSE_METHOD = "cv2.solvePnP (SQPnP) of a generic 3D face on the 5 landmarks; degrees, yaw > 0: turned to the image's right"

METRICS = ("face_detected", "face_identity_mean", "face_identity_max", "face_distance", "face_match")
# With `pose_bands = true`: |yaw| of the chosen face, and identity within a pose band (None outside it, so a
# per-image minimum gates only the images of that band and the checkpoint mean is over them).
POSE_METRICS = ("face_yaw_abs", "face_match_frontal", "face_distance_frontal", "face_match_profile", "face_distance_profile")
# Better when lower: descriptor distances to the reference faces. Neither better nor worse: |yaw| describes
# the pose, not the likeness. Every other metric is better when higher (`judges.base.metric_direction`).
DIRECTIONS: dict[str, Direction] = {
    "face_distance": "lower",
    "face_distance_frontal": "lower",
    "face_distance_profile": "lower",
    "face_yaw_abs": "none",
}
BACKENDS = ("dlib", "arcface")
DEFAULT_MATCH_DISTANCE = {"dlib": DLIB_SAME_PERSON_DISTANCE, "arcface": ARCFACE_MATCH_DISTANCE}
# dlib: the detector's trained operating point (adjust_threshold 0); SCRFD: insightface's det_thresh 0.5.
DEFAULT_MIN_DETECTOR_SCORE = {"dlib": 0.0, "arcface": ARCFACE_MIN_SCORE}
DEVICES = ("cpu", "cuda", "auto")
BACKEND_ONLY_OPTIONS = {
    "dlib": ("min_face_px", "detect_min_side", "detect_max_side", "upsample", "num_jitters"),
    "arcface": ("det_size", "device"),
}

__all__ = ["FaceIdentityJudge", "MODEL_FILES", "METRICS", "default_model_dir"]


def check_float(judge: str, key: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """A finite number within [lo, hi]; booleans are refused (TOML `true` is not a threshold)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not np.isfinite(value)
        or (lo is not None and value < lo)
        or (hi is not None and value > hi)
    ):
        bounds = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{judge} option {key!r} = {value!r} is invalid: expected a number{bounds}")
    return float(value)


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
    """Face presence and identity of a chosen face against the reference photos' faces (dlib or ArcFace).

    Options for both backends: model_dir, face, min_detector_score, match_distance, min_side, max_side.
    dlib only: min_face_px, detect_min_side, detect_max_side, upsample, num_jitters.
    arcface only: det_size (detector input side), device (cpu | cuda | auto).
    """

    name = "face_identity"
    directions = DIRECTIONS
    version = "3"  # 2: face policy, confidence floor, face_distance/face_match; 3: head pose in raw, pose bands

    def __init__(
        self,
        *,
        backend: str = "dlib",
        model_dir: str | None = None,
        face: str = "primary",
        min_detector_score: float | None = None,
        match_distance: float | None = None,
        min_face_px: int = 40,
        detect_min_side: int = 1024,
        detect_max_side: int = 2560,
        upsample: int = 0,
        num_jitters: int = 0,
        det_size: int = 640,
        device: str = "cpu",
        pose_bands: bool = False,
        frontal_max_yaw: float = 20.0,
        profile_min_yaw: float = 30.0,
        min_side: int = 32,
        max_side: int = 2048,
        **unknown: Any,
    ) -> None:
        reject_unknown(self.name, unknown, _OPTIONS)
        self.backend = check_choice(self.name, "backend", backend, BACKENDS)
        self.model_dir = check_text(self.name, "model_dir", model_dir)
        self.face_policy = check_choice(self.name, "face", face, FACE_POLICIES)
        self.min_detector_score = (
            DEFAULT_MIN_DETECTOR_SCORE[self.backend]
            if min_detector_score is None
            else check_float(self.name, "min_detector_score", min_detector_score, -1.0, 10.0)
        )
        self.match_distance = (
            DEFAULT_MATCH_DISTANCE[self.backend]
            if match_distance is None
            else check_float(self.name, "match_distance", match_distance, 0.0, 10.0)
        )
        self.min_face_px = check_int(self.name, "min_face_px", min_face_px, 8, 1024)
        self.detect_min_side = check_int(self.name, "detect_min_side", detect_min_side, 64, 8192)
        self.detect_max_side = check_int(self.name, "detect_max_side", detect_max_side, 64, 8192)
        self.upsample = check_int(self.name, "upsample", upsample, 0, 2)
        self.num_jitters = check_int(self.name, "num_jitters", num_jitters, 0, 100)
        self.det_size = check_int(self.name, "det_size", det_size, 64, 4096)
        if self.det_size % 32:
            raise ValueError(f"{self.name} option 'det_size' = {det_size} is invalid: expected a multiple of 32 "
                             f"(the detector's largest stride), e.g. 640")
        self.device = check_choice(self.name, "device", device, DEVICES)
        if not isinstance(pose_bands, bool):
            raise ValueError(f"{self.name} option 'pose_bands' = {pose_bands!r} is invalid: expected true or false")
        self.pose_bands = pose_bands
        self.frontal_max_yaw = check_float(self.name, "frontal_max_yaw", frontal_max_yaw, 0.0, 90.0)
        self.profile_min_yaw = check_float(self.name, "profile_min_yaw", profile_min_yaw, 0.0, 90.0)
        if self.profile_min_yaw < self.frontal_max_yaw:
            raise ValueError(f"{self.name}: profile_min_yaw ({profile_min_yaw}) must be at least frontal_max_yaw "
                             f"({frontal_max_yaw}); the bands cannot overlap")
        self._reject_other_backends_options(locals())
        self.min_side = check_int(self.name, "min_side", min_side, 1)
        self.max_side = check_int(self.name, "max_side", max_side, 64)
        self._faces: Lazy[FaceBackend] = Lazy(self._load)
        self._references: tuple[Any, np.ndarray, tuple[str, ...], dict[str, str]] | None = None

    def _reject_other_backends_options(self, given: dict[str, Any]) -> None:
        """An option of the other backend would be silently ignored: say so instead."""
        defaults = inspect.signature(FaceIdentityJudge.__init__).parameters
        for backend, names in BACKEND_ONLY_OPTIONS.items():
            if backend == self.backend:
                continue
            changed = [name for name in names if given[name] != defaults[name].default]
            if changed:
                raise ValueError(
                    f"{self.name} option(s) {', '.join(changed)} apply to backend {backend!r} only, and backend is "
                    f"{self.backend!r}; remove them or set backend = {backend!r}"
                )

    @property
    def metrics(self) -> list[str]:
        return list(METRICS) + (list(POSE_METRICS) if self.pose_bands else [])

    def judge(self, case: EvalCase, image: np.ndarray, context: JudgeContext) -> list[Score]:
        return self.judge_batch([(case, image)], context)[0]

    def judge_batch(self, items: Sequence[tuple[EvalCase, np.ndarray]], context: JudgeContext) -> list[list[Score]]:
        """dlib has no batched CPU path, so this is a loop; it exists to load models and references once and
        to keep one bad image from costing the others their scores."""
        backend = self._faces.get()  # ModelUnavailable: the harness skips the gated tests
        ref_descriptors, ref_names, ref_skipped = self.references(backend, context)
        results = []
        for _, image in items:
            try:
                results.append(self._judge_one(backend, image, ref_descriptors, ref_names, ref_skipped))
            except ImageInputError as exc:
                results.append(self._errors(str(exc)))
            except Exception as exc:  # a backend failure on one image must not cost the others their scores
                results.append(self._errors(f"{type(exc).__name__}: {exc}"))
        return results

    def backend_models(self) -> FaceBackend:
        """The loaded face backend (raises `ModelUnavailable`): for per-face tools such as the reference audit."""
        return self._faces.get()

    def detect(self, backend: FaceBackend, image: Any) -> tuple[list[DetectedFace], tuple[str, ...]]:
        """Every face above the confidence floor in `image` (any accepted array), and the input notes.

        The one place faces are found: the identity metrics and later per-face judges (pose, reference
        audit) read the same `DetectedFace` records (box, confidence, landmarks, descriptor).
        """
        faces, notes, _ = self.detect_sized(backend, image)
        return faces, notes

    def detect_sized(self, backend: FaceBackend, image: Any) -> tuple[list[DetectedFace], tuple[str, ...], tuple[int, int]]:
        """`detect`, plus the (width, height) of the image the landmarks are in (the pose's camera)."""
        prepared = prepare_image(image, min_side=self.min_side, max_side=self.max_side)
        height, width = prepared.array.shape[:2]
        return backend.faces(prepared.array), prepared.notes, (width, height)

    def _judge_one(
        self,
        backend: FaceBackend,
        image: np.ndarray,
        ref_descriptors: np.ndarray,
        ref_names: tuple[str, ...],
        ref_skipped: dict[str, str],
    ) -> list[Score]:
        faces, notes, (width, height) = self.detect_sized(backend, image)
        raw: dict[str, Any] = {
            "backend": self.backend,
            "face_policy": self.face_policy,
            "min_detector_score": self.min_detector_score,
            "faces_found": len(faces),
        }
        if notes:
            raw["input"] = "; ".join(notes)
        if ref_skipped:
            raw["references_without_face"] = dict(ref_skipped)
        if not faces:
            missing = {**raw, "missing": "no face detected"}
            return [Score("face_detected", 0.0, raw)] + [Score(m, None, missing) for m in self.metrics[1:]]
        comparisons = [compare(face, ref_descriptors) for face in faces]
        chosen = choose_face(faces, comparisons, self.face_policy)
        face, comparison = faces[chosen], comparisons[chosen]
        distance = comparison.mean_distance
        poses = [head_pose(f.landmarks, self.backend, width, height) for f in faces]
        pose = poses[chosen]
        raw.update(
            pose.as_raw() if pose is not None else {"pose": f"no estimate: landmarks unusable or OpenCV missing ({FACE_EXTRA})"},
            pose_method=POSE_METHOD,
        )
        raw.update(
            face.describe(),
            detector_score=face.confidence,
            face_index=chosen,
            faces=[{**_face_entry(f, c), **(p.as_raw() if p is not None else {})} for f, c, p in zip(faces, comparisons, poses)],
            per_reference=dict(zip(ref_names, map(float, comparison.cosines))),
            distances=dict(zip(ref_names, map(float, comparison.distances))),
            match_distance=self.match_distance,
            same_person_votes=int((comparison.distances < self.match_distance).sum()),
        )
        # the chosen face's descriptor, once per image (on this row only): the report's identity map
        detected_raw = {**raw, "descriptor": [round(float(v), 5) for v in face.descriptor]}
        return [
            Score("face_detected", 1.0, detected_raw),
            Score("face_identity_mean", float(comparison.cosines.mean()), raw),
            Score("face_identity_max", float(comparison.cosines.max()), raw),
            Score("face_distance", distance, raw),
            Score("face_match", 1.0 if distance < self.match_distance else 0.0, raw),
        ] + (self._pose_scores(pose, distance, raw) if self.pose_bands else [])

    def _pose_scores(self, pose: HeadPose | None, distance: float, raw: dict[str, Any]) -> list[Score]:
        """|yaw| and identity per pose band: the band the face is in gets values, the other None (not 0)."""
        if pose is None:
            missing = {**raw, "missing": "no pose estimate for this face"}
            return [Score(m, None, missing) for m in POSE_METRICS]
        yaw = abs(pose.yaw)
        band = "frontal" if yaw < self.frontal_max_yaw else "profile" if yaw >= self.profile_min_yaw else None
        banded = {**raw, "pose_band": band or "between bands", "frontal_max_yaw": self.frontal_max_yaw,
                  "profile_min_yaw": self.profile_min_yaw}
        scores = [Score("face_yaw_abs", yaw, banded)]
        for name in ("frontal", "profile"):
            inside = band == name
            out = banded if inside else {**banded, "missing": f"|yaw| {yaw:.1f} is outside the {name} band"}
            scores += [
                Score(f"face_match_{name}", (1.0 if distance < self.match_distance else 0.0) if inside else None, out),
                Score(f"face_distance_{name}", distance if inside else None, out),
            ]
        return scores

    def _errors(self, message: str) -> list[Score]:
        return [Score(metric, None, error=f"{self.name}: {message}") for metric in self.metrics]

    def references(
        self, backend: FaceBackend, context: JudgeContext
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
                faces, _ = self.detect(backend, image)
            except ImageInputError as exc:
                skipped[name] = str(exc)
                continue
            if not faces:
                skipped[name] = "no face detected"
                continue
            descriptors.append(faces[primary_index(faces)].descriptor)
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

    def _load(self) -> FaceBackend:
        if self.backend == "arcface":
            return self._load_arcface()
        require("dlib", judge=self.name, install=FACE_EXTRA)
        folder = Path(self.model_dir).expanduser() if self.model_dir else default_model_dir()
        missing = [name for name in MODEL_FILES.values() if not (folder / name).is_file()]
        if missing:
            raise ModelUnavailable(
                f"{self.name}: model file(s) {', '.join(missing)} not found in {folder}; "
                + ("put them there or remove the option model_dir" if self.model_dir else f"reinstall: {FACE_EXTRA}")
            )
        settings = DlibSettings(
            min_detector_score=self.min_detector_score,
            min_face_px=self.min_face_px,
            detect_min_side=self.detect_min_side,
            detect_max_side=self.detect_max_side,
            upsample=self.upsample,
            num_jitters=self.num_jitters,
        )
        return cached(("dlib-faces", str(folder.resolve())), lambda: DlibFaces(folder)).with_settings(settings)

    def _load_arcface(self) -> FaceBackend:
        """ONNX models from `model_dir` (default insightface's own folder); never downloaded (licence)."""
        ort = require("onnxruntime", judge=self.name, install=ARCFACE_EXTRA)
        folder = Path(self.model_dir or DEFAULT_ARCFACE_DIR).expanduser()
        if not folder.is_dir() or not any(folder.glob("*.onnx")):
            state = "does not exist" if not folder.is_dir() else "has no .onnx files"
            raise ModelUnavailable(f"{self.name} (backend arcface): model folder {folder} {state}; {GET_MODELS}")
        providers = onnx_providers(self.device, list(ort.get_available_providers()))
        settings = ArcFaceSettings(min_detector_score=self.min_detector_score, det_size=self.det_size)
        key = ("arcface-faces", str(folder.resolve()), tuple(providers))
        return cached(key, lambda: ArcFaces(folder, providers)).with_settings(settings)


def _face_entry(face: DetectedFace, comparison: Comparison) -> dict[str, Any]:
    """One face of `raw["faces"]`: where it is, how sure the detector was, how close to the references."""
    return {
        **face.describe(),
        "identity_mean": round(float(comparison.cosines.mean()), 4),
        "distance": round(comparison.mean_distance, 4),
    }


_OPTIONS = tuple(
    name
    for name, param in inspect.signature(FaceIdentityJudge.__init__).parameters.items()
    if param.kind is param.KEYWORD_ONLY
)
