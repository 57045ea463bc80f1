"""Tiny ONNX models with the inputs and outputs of insightface's buffalo_l pack, built with onnx.helper.

They exercise the ArcFace backend's loading, letterboxing, anchor decoding, NMS, 5-point alignment,
normalisation and cosine path without the real (licence-restricted, downloaded) weights:

* `save_tiny_recognizer`: input (N, 3, 112, 112) -> 8x8 average pool -> flatten (588) -> a seeded random
  588x512 matrix -> (N, 512). Linear, so a test can compute the expected embedding in numpy.
* `save_tiny_detector`: input (1, 3, 640, 640) -> the 9 SCRFD outputs (scores, box and landmark distances
  for strides 8/16/32, 2 anchors per cell). The outputs are constants describing the faces the test asks
  for (in detector-input pixels) plus 0 x the input's mean, so the graph consumes its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

STRIDES = (8, 16, 32)
OPSET = 17


@dataclass(frozen=True)
class FakeFace:
    """A face the tiny detector reports: box (x1, y1, x2, y2), 5 landmarks, score; detector-input pixels."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (5, 2)
    score: float
    stride: int = 16
    anchor: int = 0  # which of the cell's two anchors


def recognizer_matrix(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((588, 512)).astype(np.float32)


def expected_embedding(crop: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the tiny recognizer returns for a 112x112 RGB uint8 crop, unit length, computed in numpy."""
    x = (crop.astype(np.float64) - 127.5) / 127.5
    pooled = x.transpose(2, 0, 1).reshape(3, 14, 8, 14, 8).mean(axis=(2, 4)).reshape(-1)
    vector = pooled @ recognizer_matrix(seed).astype(np.float64)
    return vector / np.linalg.norm(vector)


def save_tiny_recognizer(path: Path, seed: int = 0) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])],
        initializer=[numpy_helper.from_array(recognizer_matrix(seed), "W")],
    )
    return _save(graph, path)


def detector_outputs(faces: list[FakeFace], size: int = 640) -> list[np.ndarray]:
    """The 9 SCRFD output arrays (scores x3, boxes x3, landmarks x3) that describe `faces`."""
    scores, boxes, points = [], [], []
    for stride in STRIDES:
        cells = (size // stride) ** 2 * 2
        scores.append(np.zeros((cells, 1), np.float32))
        boxes.append(np.zeros((cells, 4), np.float32))
        points.append(np.zeros((cells, 10), np.float32))
    for face in faces:
        level = STRIDES.index(face.stride)
        x1, y1, x2, y2 = face.box
        col, row = round((x1 + x2) / 2 / face.stride), round((y1 + y2) / 2 / face.stride)
        index = (row * (size // face.stride) + col) * 2 + face.anchor
        cx, cy = col * face.stride, row * face.stride
        scores[level][index, 0] = face.score
        boxes[level][index] = np.array([cx - x1, cy - y1, x2 - cx, y2 - cy]) / face.stride
        points[level][index] = ((np.asarray(face.landmarks, np.float64) - [cx, cy]) / face.stride).reshape(-1)
    return scores + boxes + points


def save_tiny_detector(path: Path, faces: list[FakeFace], size: int = 640, dynamic: bool = False) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    arrays = detector_outputs(faces, size)
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    outputs, initializers = [], [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    for i, array in enumerate(arrays):
        name = f"out{i}"
        initializers.append(numpy_helper.from_array(array, f"const{i}"))
        nodes.append(helper.make_node("Add", [f"const{i}", "nothing"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(array.shape)))
    dims = [1, 3, "h", "w"] if dynamic else [1, 3, size, size]
    graph = helper.make_graph(
        nodes, "tiny_scrfd", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, dims)], outputs,
        initializer=initializers,
    )
    return _save(graph, path)


def _save(graph: "onnx.GraphProto", path: Path) -> Path:
    """A checked model of `graph` at the opset and IR version onnxruntime's CPU build reads."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
