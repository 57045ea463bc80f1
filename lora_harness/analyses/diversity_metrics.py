"""Diversity of a set of images: has the LoRA collapsed onto one picture?

Why: a LoRA that always draws the same pose, framing and expression scores well on identity per image and
still failed (the LyCORIS evaluation framework calls it mode collapse). Diversity is a property of the
*set* of a checkpoint's images, so it is computed from all of them at once:

* ``diversity_image``: mean pairwise cosine distance (1 - cosine) of a whole-image embedding. The embedding
  is the standardised 64 px grey thumbnail of `pixel_similarity` (no model, deterministic: the distance is
  1 - Pearson correlation of the thumbnails); near 0 when every image is the same picture.
* ``diversity_identity``: mean pairwise Euclidean distance of the identity descriptors of the faces
  (the `face_identity` backend's scale: dlib's same-person rule is < 0.6). A person LoRA should keep it
  well below the same-person distance, but a value near 0 means one frozen face.
* ``vendi_image`` / ``vendi_identity``: the Vendi score (Friedman & Dieng 2023) of the same embeddings
  with the cosine kernel: exp of the Shannon entropy of the eigenvalues of K/n, i.e. the effective number
  of distinct images, between 1 (all alike) and n (all orthogonal).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lora_harness.judges.pixel_similarity import signature

IMAGE_SIGNATURE_PX = 64
DIVERSITY_METRICS = ("diversity_image", "vendi_image", "diversity_identity", "vendi_identity")


def image_embeddings(images: Sequence[np.ndarray], size: int = IMAGE_SIGNATURE_PX) -> np.ndarray:
    """(n, size*size) unit vectors: the standardised grey thumbnails (see `pixel_similarity.signature`)."""
    return np.stack([signature(image, size) for image in images])


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """Mean of 1 - cosine over the n(n-1)/2 distinct pairs; needs n >= 2."""
    x = _unit(np.asarray(embeddings, dtype=np.float64))
    n = len(x)
    if n < 2:
        raise ValueError("diversity needs at least two images")
    cos = x @ x.T
    return float((1.0 - cos[np.triu_indices(n, 1)]).mean())


def mean_pairwise_distance(embeddings: np.ndarray) -> float:
    """Mean Euclidean distance over the distinct pairs (the identity descriptors' calibrated scale)."""
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(x)
    if n < 2:
        raise ValueError("diversity needs at least two images")
    i, j = np.triu_indices(n, 1)
    return float(np.linalg.norm(x[i] - x[j], axis=1).mean())


def vendi_score(embeddings: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K/n), K the cosine kernel: 1 for identical rows, n for orthogonal."""
    x = _unit(np.asarray(embeddings, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise ValueError("the Vendi score needs at least one image")
    eigenvalues = np.clip(np.linalg.eigvalsh(x @ x.T / n), 0.0, None)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    eigenvalues = eigenvalues / eigenvalues.sum()
    return float(np.exp(-(eigenvalues * np.log(eigenvalues)).sum()))
