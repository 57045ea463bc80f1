"""ArcFace face backend: insightface-style ONNX models (SCRFD detector + ArcFace recognizer) on onnxruntime.

The field reports identity as the cosine of ArcFace embeddings, usually insightface's `buffalo_l` pack
(`det_10g.onnx`: SCRFD, 5 landmarks per face; `w600k_r50.onnx`: ResNet-50, 512-d). Its licence is
non-commercial research, so the harness never downloads it: the user points `model_dir` at a folder they
downloaded (default `~/.insightface/models/buffalo_l`, where insightface itself unpacks it).

Models in the folder are recognised by their shapes, as insightface's model zoo does: the recognizer takes
a 112x112 image and returns one embedding; the detector returns 9 tensors (scores, box distances and
landmark distances for strides 8, 16, 32, two anchors per cell). Other files of the pack (landmarks, age)
are ignored.

Per image: letterbox to `det_size` (top-left, zero padding), (x - 127.5) / 128, RGB, NCHW; decode the
anchors, keep scores >= `min_detector_score` (insightface's default 0.5), non-maximum suppression at IoU 0.4;
for each face a similarity transform of its 5 landmarks onto the standard ArcFace template gives a 112x112
RGB crop, normalised (x - 127.5) / 127.5, embedded and L2-normalised. The descriptor is unit length, so
`face_distance` is sqrt(2 - 2 cos).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lora_harness.judges.faces import DetectedFace
from lora_harness.judges.model_loading import ModelError, ModelUnavailable, require

ARCFACE_EXTRA = "pip install 'lora-harness[arcface]'  (onnxruntime; onnxruntime-gpu for CUDA)"
DEFAULT_ARCFACE_DIR = "~/.insightface/models/buffalo_l"
GET_MODELS = (
    "download insightface's buffalo_l pack (det_10g.onnx + w600k_r50.onnx; non-commercial research licence) "
    "from https://github.com/deepinsight/insightface/tree/master/python-package (model zoo), unzip it, and set "
    "the face_identity option model_dir to that folder"
)
# Where the 5 landmarks (eyes, nose tip, mouth corners; image-left first) sit in a 112x112 ArcFace crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# Not measured here (no real weights offline): the cosine 0.3 often quoted for buffalo_l, as a distance
# between unit vectors, sqrt(2 - 2 * 0.3). Measure on your own references and set match_distance.
ARCFACE_MATCH_DISTANCE = 1.1832
ARCFACE_MIN_SCORE = 0.5  # insightface's det_thresh default for SCRFD
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


@dataclass(frozen=True)
class ArcFaceSettings:
    """The ArcFace backend's options (validated by the judge)."""

    min_detector_score: float = ARCFACE_MIN_SCORE
    det_size: int = 640
    nms_iou: float = 0.4


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping points `src` onto `dst` (Umeyama 1991),
    as the 2x3 matrix [[a, -b, tx], [b, a, ty]]: what insightface's `norm_crop` estimates with scikit-image."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    if src_c.var(0).sum() < 1e-9:
        raise ValueError(f"the detector's 5 landmarks coincide ({src.tolist()}): no face to align")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def warp_affine(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """`size` x `size` crop where output pixel p samples the input at inverse(matrix) p, bilinear, zero
    outside (cv2.warpAffine's defaults, pixel centres at integer coordinates)."""
    forward = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    height, width = rgb.shape[:2]
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    image = rgb.astype(np.float64)
    out = np.zeros((size, size, rgb.shape[2]))
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        yy, xx = y0 + dy, x0 + dx
        inside = ((yy >= 0) & (yy < height) & (xx >= 0) & (xx < width))[..., None]
        sample = image[np.clip(yy, 0, height - 1), np.clip(xx, 0, width - 1)]
        out += np.where(inside, sample, 0.0) * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def align_face(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace crop of the face with these 5 landmarks (input pixels)."""
    return warp_affine(rgb, similarity_transform(landmarks, ARCFACE_TEMPLATE), 112)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, most confident first."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        best = order.pop(0)
        keep.append(int(best))
        rest = np.array(order, dtype=int)
        if not len(rest):
            break
        w = np.clip(np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None)
        overlap = w * h / (areas[best] + areas[rest] - w * h + 1e-9)
        order = [int(i) for i, o in zip(rest, overlap) if o <= iou]
    return keep


def anchor_centers(height: int, width: int, stride: int) -> np.ndarray:
    """(cells * anchors, 2) x, y centres in detector-input pixels, in SCRFD's output order."""
    ys, xs = np.mgrid[:height, :width]
    centers = (np.stack([xs, ys], axis=-1).astype(np.float64) * stride).reshape(-1, 2)
    return np.repeat(centers, ANCHORS_PER_CELL, axis=0)


def _session_io(session: Any) -> tuple[Any, Any]:
    return session.get_inputs()[0], session.get_outputs()


class ArcFaces:
    """SCRFD detection + ArcFace embedding with onnxruntime; one instance per process, folder and device."""

    name = "arcface"

    def __init__(self, folder: Path, providers: list[str], settings: ArcFaceSettings = ArcFaceSettings()) -> None:
        ort = require("onnxruntime", judge="face_identity", install=ARCFACE_EXTRA)
        self.settings = settings
        self.detector, self.recognizer = None, None
        for path in sorted(folder.glob("*.onnx")):
            try:
                session = ort.InferenceSession(str(path), providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types for bad files
                raise ModelError(f"face_identity: {path} is not a usable ONNX model ({str(exc).splitlines()[0]}); "
                                 f"use the files of insightface's buffalo_l pack") from None
            model_input, outputs = _session_io(session)
            shape = list(model_input.shape)
            if len(outputs) == 1 and shape[-2:] == [112, 112] and self.recognizer is None:
                self.recognizer = session
            elif len(outputs) == 3 * len(STRIDES) and self.detector is None:
                self.detector = session
        missing = [what for what, found in (("detector (SCRFD, 9 outputs, e.g. det_10g.onnx)", self.detector),
                                            ("recognizer (112x112 input, e.g. w600k_r50.onnx)", self.recognizer))
                   if found is None]
        if missing:
            raise ModelUnavailable(f"face_identity (backend arcface): no ONNX {' and no '.join(missing)} in {folder}; {GET_MODELS}")

    def with_settings(self, settings: ArcFaceSettings) -> "ArcFaces":
        clone = object.__new__(ArcFaces)
        clone.__dict__.update(self.__dict__, settings=settings)
        return clone

    def _input_size(self) -> tuple[int, int]:
        """(height, width) of the detector input: the model's own when fixed, else det_size square."""
        shape = list(self.detector.get_inputs()[0].shape)
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            return h, w
        return self.settings.det_size, self.settings.det_size

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (n, 4), scores (n,), landmarks (n, 5, 2) in input pixels, after the floor and NMS."""
        in_h, in_w = self._input_size()
        height, width = rgb.shape[:2]
        if height / width > in_h / in_w:
            new_h, new_w = in_h, max(1, int(in_h * width / height))
        else:
            new_w, new_h = in_w, max(1, int(in_w * height / width))
        scale = new_h / height
        letterbox = np.zeros((in_h, in_w, 3), np.float32)
        letterbox[:new_h, :new_w] = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))
        blob = ((letterbox - 127.5) / 128.0).transpose(2, 0, 1)[None].astype(np.float32)
        model_input, outputs = _session_io(self.detector)
        results = self.detector.run([o.name for o in outputs], {model_input.name: blob})
        n = len(STRIDES)
        boxes, scores, points = [], [], []
        for i, stride in enumerate(STRIDES):
            centers = anchor_centers(in_h // stride, in_w // stride, stride)
            score = np.asarray(results[i], np.float64).reshape(-1)
            dist = np.asarray(results[i + n], np.float64).reshape(-1, 4) * stride
            kps = np.asarray(results[i + 2 * n], np.float64).reshape(-1, 10) * stride
            if not (len(score) == len(dist) == len(kps) == len(centers)):
                raise ModelError(f"face_identity: the detector's stride-{stride} outputs have {len(score)} scores for "
                                 f"{len(centers)} anchors; it is not an SCRFD model with 2 anchors per cell")
            keep = score >= self.settings.min_detector_score
            c = centers[keep]
            boxes.append(np.hstack([c - dist[keep][:, :2], c + dist[keep][:, 2:]]))
            points.append(c[:, None, :] + kps[keep].reshape(-1, 5, 2))
            scores.append(score[keep])
        all_boxes, all_scores, all_points = np.vstack(boxes), np.concatenate(scores), np.vstack(points)
        kept = nms(all_boxes, all_scores, self.settings.nms_iou)
        return all_boxes[kept] / scale, all_scores[kept], all_points[kept] / scale

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """Unit-length embeddings of aligned 112x112 RGB crops, one row each."""
        blob = ((np.stack(crops).astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
        model_input, outputs = _session_io(self.recognizer)
        rows = []
        for one in blob:  # one at a time: buffalo_l's recognizer has a fixed batch of 1 in some exports
            rows.append(np.asarray(self.recognizer.run([outputs[0].name], {model_input.name: one[None]})[0]).reshape(-1))
        vectors = np.stack(rows).astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)

    def faces(self, rgb: np.ndarray) -> list[DetectedFace]:
        boxes, scores, points = self.detect(rgb)
        if not len(boxes):
            return []
        descriptors = self.embed([align_face(rgb, p) for p in points])
        height, width = rgb.shape[:2]
        result = []
        for box, score, p, descriptor in zip(boxes, scores, points, descriptors):
            left, top = max(0, round(box[0])), max(0, round(box[1]))
            right, bottom = min(width - 1, round(box[2])), min(height - 1, round(box[3]))
            landmarks = tuple((float(x), float(y)) for x, y in p)
            result.append(DetectedFace((left, top, right, bottom), float(score), landmarks, descriptor))
        return result


def onnx_providers(device: str, available: list[str]) -> list[str]:
    """onnxruntime execution providers for `device` ("cpu", "cuda", "auto"), given what this install offers."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return ["CPUExecutionProvider"]
    raise ModelUnavailable(
        f"face_identity (backend arcface): device 'cuda' asked for, but onnxruntime offers only "
        f"{', '.join(available)}; install onnxruntime-gpu, or set device = \"auto\" or \"cpu\""
    )
