"""Identity views of a run as self-contained HTML fragments: the reference audit (thumbnails inline),
identity against head yaw, and the identity map (face descriptors projected to 2D).

Why a fragment builder of its own: the report template is shared with other views; these sections are
built from plain data (`ReferenceAudit`) and inserted as one block, so the page stays one offline file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from lora_harness.analyses.reference_audit import AuditEntry, DuplicatePair, ReferenceAudit
from lora_harness.core.images import ImageError, load_rgb
from lora_harness.run.store import ScoreRow

THUMB_PX = 96


def thumbnail_uri(path: Path, max_px: int = THUMB_PX) -> str | None:
    """A small JPEG of `path` as a data URI; None when it cannot be decoded (the table says why elsewhere)."""
    try:
        image = Image.fromarray(load_rgb(path))
    except (ImageError, OSError, ValueError):
        return None
    image.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def audit_section(audit: ReferenceAudit) -> str:
    thumbs = {e.path: uri for e in audit.entries if (uri := thumbnail_uri(Path(e.path))) is not None}
    return audit.html(thumbs)


def audit_page(audit: ReferenceAudit) -> str:
    """`lora-harness audit-references --html`: the audit section as a whole page, with no external resources."""
    style = (
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:left}tr.audit-outlier{background:#fde2e2}"
    )
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Reference audit</title><style>{style}</style>"
            f"</head><body>{audit_section(audit)}</body></html>\n")


# --- identity vs |yaw| and the identity map (SVG, no script: hover shows a <title> and, on the map, the image) ---

AUDIT_FILE = "reference_audit.json"  # written into the run folder by the reference test and read by the report
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WIDTH, HEIGHT, PAD = 560, 340, 44
MAP_THUMB_PX = 64
MAX_MAP_THUMBS = 400  # beyond this the map keeps its points and tooltips, without inline images (file size)


@dataclass(frozen=True)
class IdentityPoint:
    """One image's face: where it is in a plot, which checkpoint (colour), what the tooltip says."""

    x: float
    y: float
    group: str
    label: str
    image: str | None = None
    reference: bool = False


def read_audit(run_dir: Path) -> ReferenceAudit | None:
    path = Path(run_dir) / AUDIT_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = [AuditEntry(**e) for e in data["entries"]]
    pairs = [DuplicatePair(**d) for d in data["duplicates"]]
    return ReferenceAudit(entries, pairs, data["backend"], data["match_distance"], data["min_face_px"],
                          data["duplicate_similarity"], descriptors=data.get("descriptors", {}))


def write_audit(run_dir: Path, audit: ReferenceAudit) -> Path:
    path = Path(run_dir) / AUDIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(audit.to_json(), encoding="utf-8")
    return path


def _face_rows(rows: Sequence[ScoreRow]) -> list[ScoreRow]:
    """The `face_detected` row of each image with a face (its raw holds pose, distance and descriptor)."""
    return [r for r in rows if r.metric == "face_detected" and r.value == 1.0 and r.judge == "face_identity"]


def yaw_points(rows: Sequence[ScoreRow]) -> list[IdentityPoint]:
    """(|yaw|, distance to the references) per image with a face: dlib's calibrated scale, lower = more alike."""
    points = []
    for r in _face_rows(rows):
        yaw, distances = r.raw.get("yaw"), r.raw.get("distances")
        if not isinstance(yaw, (int, float)) or not isinstance(distances, dict) or not distances:
            continue
        distance = float(np.mean(list(distances.values())))
        label = f"{r.case_key}: |yaw| {abs(yaw):.1f} deg, distance {distance:.3f}"
        points.append(IdentityPoint(abs(float(yaw)), distance, r.checkpoint_key, label))
    return points


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (numpy SVD): the default projection of the identity map."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    out = x @ vt[:2].T
    return out if out.shape[1] == 2 else np.hstack([out, np.zeros((len(x), 2 - out.shape[1]))])


def project_2d(vectors: np.ndarray, method: str = "pca") -> tuple[np.ndarray, str]:
    """2D coordinates and the method used: t-SNE (scikit-learn) or UMAP (umap-learn) when asked for and
    installed, else PCA. Both keep neighbours together (clusters of a person) where PCA keeps global spread;
    they need a few points more than their neighbourhood size, so tiny sets fall back to PCA too."""
    x = np.asarray(vectors, dtype=np.float64)
    if method == "tsne" and len(x) > 5:
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            return pca_2d(x), "PCA (t-SNE asked for; scikit-learn is not installed)"
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(x), "t-SNE"
    if method == "umap" and len(x) > 5:
        try:
            import umap
        except ImportError:
            return pca_2d(x), "PCA (UMAP asked for; umap-learn is not installed)"
        return umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=0).fit_transform(x), "UMAP"
    return pca_2d(x), "PCA" if method == "pca" else f"PCA ({method} needs more than 5 faces)"


def map_points(rows: Sequence[ScoreRow], audit: ReferenceAudit | None, *, thumbs: bool = True,
               projection: str = "pca") -> tuple[list[IdentityPoint], str]:
    """Generated faces (by checkpoint) and reference faces projected together to 2D, and the method used."""
    labels, groups, images, vectors, refs = [], [], [], [], []
    for r in _face_rows(rows):
        descriptor = r.raw.get("descriptor")
        if isinstance(descriptor, list) and descriptor:
            vectors.append(descriptor), labels.append(r.case_key), groups.append(r.checkpoint_key)
            images.append(r.image), refs.append(False)
    for path, descriptor in (audit.descriptors.items() if audit is not None else ()):
        vectors.append(descriptor), labels.append(f"reference {Path(path).name}"), groups.append("references")
        images.append(path), refs.append(True)
    sizes = {len(v) for v in vectors}
    if len(vectors) < 2 or len(sizes) != 1:  # descriptors of two backends cannot share one map
        return [], ""
    xy, method = project_2d(np.array(vectors), projection)
    embed = thumbs and len(vectors) <= MAX_MAP_THUMBS
    return [
        IdentityPoint(float(x), float(y), g, label, (thumbnail_uri(Path(img), MAP_THUMB_PX) if embed and img else None), ref)
        for (x, y), g, label, img, ref in zip(xy, groups, labels, images, refs)
    ], method


def scatter_svg(points: Sequence[IdentityPoint], *, x_label: str, y_label: str, css_id: str) -> str:
    """A scatter plot as inline SVG: one colour per group (legend), a tooltip per point; images on hover."""
    if not points:
        return ""
    xs, ys = np.array([p.x for p in points]), np.array([p.y for p in points])
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    x1, y1 = (x1 if x1 > x0 else x0 + 1.0), (y1 if y1 > y0 else y0 + 1.0)
    groups = list(dict.fromkeys(p.group for p in points))
    colour = {g: ("#000000" if g == "references" else PALETTE[i % len(PALETTE)]) for i, g in enumerate(groups)}

    def sx(v: float) -> float:
        return PAD + (v - x0) / (x1 - x0) * (WIDTH - 2 * PAD)

    def sy(v: float) -> float:
        return HEIGHT - PAD - (v - y0) / (y1 - y0) * (HEIGHT - 2 * PAD)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="identity-plot" id="{css_id}" viewBox="0 0 {WIDTH + 190} {HEIGHT}" '
             f'width="{WIDTH + 190}" height="{HEIGHT}" role="img">',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
             f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12">{html.escape(x_label)}</text>',
             f'<text x="12" y="{HEIGHT / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 12 {HEIGHT / 2})">'
             f"{html.escape(y_label)}</text>",
             f'<text x="{PAD}" y="{HEIGHT - PAD + 14}" font-size="10" text-anchor="middle">{x0:.3g}</text>',
             f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 14}" font-size="10" text-anchor="middle">{x1:.3g}</text>',
             f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" font-size="10" text-anchor="end">{y0:.3g}</text>',
             f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">{y1:.3g}</text>']
    for p in points:
        cx, cy = sx(p.x), sy(p.y)
        shape = (f'<rect x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10" fill="{colour[p.group]}"/>' if p.reference
                 else f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" fill="{colour[p.group]}" fill-opacity="0.8"/>')
        hover = ""
        if p.image:
            ix, iy = min(cx + 8, WIDTH + 190 - MAP_THUMB_PX), max(0.0, cy - MAP_THUMB_PX)
            hover = (f'<image class="hover-image" href="{html.escape(p.image)}" x="{ix:.1f}" y="{iy:.1f}" '
                     f'width="{MAP_THUMB_PX}" height="{MAP_THUMB_PX}"/>')
        parts.append(f'<g class="point" data-group="{html.escape(p.group)}"><title>{html.escape(p.label)}</title>{shape}{hover}</g>')
    for i, g in enumerate(groups):
        y = PAD + 16 * i
        parts.append(f'<g class="legend"><rect x="{WIDTH + 4}" y="{y - 9}" width="10" height="10" fill="{colour[g]}"/>'
                     f'<text x="{WIDTH + 20}" y="{y}" font-size="11">{html.escape(g)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


IDENTITY_CSS = (
    "<style>.identity-plot .hover-image{display:none}.identity-plot g.point:hover .hover-image{display:inline}"
    "table.audit td,table.audit th{border:1px solid #ccc;padding:2px 6px}tr.audit-outlier{background:#fde2e2}</style>"
)


def identity_html(rows: Sequence[ScoreRow], run_dir: Path | None, *, projection: str = "pca") -> str:
    """The report's identity section: reference audit, identity vs |yaw|, identity map. Empty without data."""
    audit = read_audit(run_dir) if run_dir is not None else None
    blocks = []
    if audit is not None:
        blocks.append(audit_section(audit))
    yaw = scatter_svg(yaw_points(rows), x_label="|yaw| (degrees)", y_label="distance to references (lower: more alike)",
                      css_id="identity-vs-yaw")
    if yaw:
        blocks.append('<section id="identity-yaw"><h2>Identity vs head yaw</h2><p class="muted">One point per image '
                      "with a face, coloured by checkpoint: does the likeness hold as the head turns? Yaw from the 5 "
                      "landmarks (solvePnP, generic 3D face).</p>" + yaw + "</section>")
    pts, method = map_points(rows, audit, projection=projection)
    if pts:
        axis = "PC" if method.startswith("PCA") else method
        blocks.append('<section id="identity-map"><h2>Identity map</h2><p class="muted">Face descriptors of the '
                      "references (black squares) and of the generated images (by checkpoint), projected to 2D with "
                      f"<span class=\"projection\">{html.escape(method)}</span>; hover a point for its image.</p>"
                      + scatter_svg(pts, x_label=f"{axis} 1", y_label=f"{axis} 2", css_id="identity-map-plot") + "</section>")
    return (IDENTITY_CSS + "".join(blocks)) if blocks else ""
