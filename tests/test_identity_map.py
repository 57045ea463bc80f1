"""The report's identity plots from synthetic rows with known geometry: PCA (and t-SNE when scikit-learn is
installed) separates two planted identity clusters, references join the map, a missing projection package
falls back to PCA and says so, and identity vs |yaw| has one point per image with a face."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lora_harness.analyses.reference_audit import AuditEntry, ReferenceAudit
from lora_harness.report.identity import identity_html, map_points, pca_2d, project_2d, yaw_points
from report_rows import make_row


def face_row(step: int, prompt_id: str, descriptor: list[float] | None, yaw: float = 0.0, detected: bool = True):
    raw = {"yaw": yaw, "distances": {"ref.png": 0.3 + abs(yaw) / 100}, "per_reference": {"ref.png": 0.9}}
    if descriptor is not None:
        raw["descriptor"] = descriptor
    return make_row(step=step, prompt_id=prompt_id, metric="face_detected", value=1.0 if detected else 0.0, raw=raw,
                    judge="face_identity")


def clusters(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two identities: points around +c and -c in 16-d (the same person's faces scatter a little)."""
    rng = np.random.default_rng(seed)
    centre = np.zeros(16)
    centre[3] = 1.0
    a = centre + rng.normal(0, 0.05, size=(n, 16))
    b = -centre + rng.normal(0, 0.05, size=(n, 16))
    return a, b


def separated(xy: np.ndarray, n: int) -> bool:
    """Both groups' points are nearer their own centroid than the other's."""
    ca, cb = xy[:n].mean(axis=0), xy[n:].mean(axis=0)
    da = np.linalg.norm(xy[:n] - ca, axis=1).max()
    db = np.linalg.norm(xy[n:] - cb, axis=1).max()
    return np.linalg.norm(ca - cb) > 2 * max(da, db)


def test_pca_puts_the_strongest_direction_first() -> None:
    a, b = clusters()
    xy = pca_2d(np.vstack([a, b]))
    assert xy.shape == (16, 2) and separated(xy, 8)
    assert np.sign(xy[:8, 0]).tolist().count(np.sign(xy[0, 0])) == 8  # PC1 splits the clusters
    assert pca_2d(np.ones((1, 4))).shape == (1, 2)


def test_tsne_keeps_the_clusters_when_installed() -> None:
    pytest.importorskip("sklearn")
    a, b = clusters()
    xy, method = project_2d(np.vstack([a, b]), "tsne")
    assert method == "t-SNE" and xy.shape == (16, 2) and separated(xy, 8)


def test_missing_package_falls_back_to_pca_and_says_so(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)
    a, b = clusters()
    xy, method = project_2d(np.vstack([a, b]), "umap")
    assert "PCA" in method and "umap-learn is not installed" in method
    assert np.allclose(xy, pca_2d(np.vstack([a, b])))
    assert project_2d(np.vstack([a, b])[:4], "tsne")[1] == "PCA (tsne needs more than 5 faces)"


def test_map_joins_references_and_images_by_checkpoint() -> None:
    a, b = clusters(4)
    rows = [face_row(200, f"{i:02d}", a[i].tolist()) for i in range(4)] + [face_row(400, f"{i:02d}", b[i].tolist()) for i in range(4)]
    rows.append(face_row(400, "09", None, detected=False))  # no face: not on the map
    audit = ReferenceAudit([AuditEntry("refs/me.png")], [], "dlib", 0.6, 80, 0.95,
                           descriptors={"refs/me.png": a[0].tolist()})
    points, method = map_points(rows, audit, thumbs=False)
    assert method == "PCA" and len(points) == 9
    assert [p.group for p in points].count("references") == 1 and points[-1].reference
    assert {p.group for p in points[:4]} == {"lora-r4-step000200"}
    page = identity_html(rows, None)  # no run folder: no audit section, the map has no references
    assert 'id="identity-map-plot"' in page and page.count('<g class="point"') == 8 + 8  # yaw plot + map
    assert 'id="reference-audit"' not in page


def test_mixed_descriptor_sizes_make_no_map() -> None:
    rows = [face_row(200, "00", [0.1] * 128), face_row(200, "01", [0.1] * 512)]
    assert map_points(rows, None) == ([], "")


def test_yaw_points_are_abs_yaw_and_mean_distance() -> None:
    rows = [face_row(200, "00", None, yaw=-30.0), face_row(200, "01", None, yaw=10.0), face_row(200, "02", None, detected=False)]
    points = yaw_points(rows)
    assert [(p.x, round(p.y, 3)) for p in points] == [(30.0, 0.6), (10.0, 0.4)]
    assert identity_html([], None) == ""
