"""Reference audit: which training / reference photos would poison an identity LoRA, and why.

Why: one photo of another person, a photo without a detectable face, a duplicate or a face a few pixels
tall among the training photos degrades the likeness the LoRA learns, and nothing downstream says which
photo did it. MirrorMetrics' check, restated: every photo's face is compared with the centroid of the
*other* photos' faces (leave-one-out, so a photo never vouches for itself), using the identity judge's own
descriptors and its calibrated "same person" distance (dlib: 0.6, `face_identity`'s `match_distance`).

Reasons a photo is listed (`AuditEntry.reasons`):
* ``no face``: the identity judge finds no face above its confidence floor;
* ``tiny face``: the chosen face is under `min_face_px` pixels (its box's shorter side);
* ``other person``: the leave-one-out distance to the others' centroid is at or above `match_distance`;
* ``duplicate``: its whole-image similarity to another photo (the standardised grey thumbnail of
  `pixel_similarity`; also against the other photo mirrored, since flip augmentation makes a mirrored copy
  redundant too) is at least `duplicate_similarity`. The later photo of a pair is the one listed.

`audit_references` is the one implementation: the `lora-harness audit-references` command, the
`lora_reference_audit` test fixture and the report call it. It needs no GPU (dlib on CPU).
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lora_harness.core.images import ImageError, load_rgb
from lora_harness.judges.embedding import ImageInputError
from lora_harness.judges.faces import DetectedFace, primary_index
from lora_harness.judges.pixel_similarity import signature
from lora_harness.sources.samples import IMAGE_SUFFIXES

NO_FACE, TINY_FACE, OTHER_PERSON, DUPLICATE, UNREADABLE = "no face", "tiny face", "other person", "duplicate", "unreadable"
DEFAULT_MIN_FACE_PX = 80  # dlib's frontal detector is reliable from ~80 px; smaller faces teach the LoRA little
DEFAULT_DUPLICATE_SIMILARITY = 0.95  # Pearson of 64 px grey thumbnails: re-framed shots of one scene stay below
SIGNATURE_PX = 64


class AuditError(ValueError):
    """The photos cannot be audited at all (none given, none readable, fewer than two with a face)."""


@dataclass(frozen=True)
class AuditEntry:
    """One photo: its face, its leave-one-out identity scores and why it is an outlier (empty: it is fine)."""

    path: str
    face_px: int | None = None
    detector_score: float | None = None
    faces_found: int = 0
    loo_distance: float | None = None  # Euclidean distance to the centroid of the other photos' faces
    loo_cosine: float | None = None  # cosine to that centroid (the literature's scale)
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # one sentence per reason, for people

    @property
    def ok(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class DuplicatePair:
    first: str
    second: str
    similarity: float
    mirrored: bool  # the match is against the mirror image


@dataclass(frozen=True)
class ReferenceAudit:
    """The audit of a photo set; `outliers` lists the photos with a reason, the others are fine."""

    entries: list[AuditEntry]
    duplicates: list[DuplicatePair]
    backend: str
    match_distance: float
    min_face_px: int
    duplicate_similarity: float
    descriptors: dict[str, list[float]] = field(default_factory=dict)  # each photo's face (identity map)

    @property
    def outliers(self) -> list[AuditEntry]:
        return [e for e in self.entries if not e.ok]

    @property
    def passed(self) -> bool:
        return not self.outliers

    def assert_clean(self) -> None:
        """The reference test type: fails with the audit table when any photo is an outlier."""
        if not self.passed:
            raise AssertionError(self.format())

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "match_distance": self.match_distance,
            "min_face_px": self.min_face_px,
            "duplicate_similarity": self.duplicate_similarity,
            "passed": self.passed,
            "entries": [asdict(e) for e in self.entries],
            "duplicates": [asdict(d) for d in self.duplicates],
            "descriptors": self.descriptors,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2) + "\n"

    def format(self) -> str:
        """A table people read in a terminal: one line per photo, outliers first-class."""
        lines = [f"reference audit ({self.backend}, same person below distance {self.match_distance:g}): "
                 f"{len(self.entries)} photo(s), {len(self.outliers)} outlier(s)"]
        for e in self.entries:
            dist = "-" if e.loo_distance is None else f"{e.loo_distance:.3f}"
            face = "-" if e.face_px is None else f"{e.face_px}px"
            verdict = "ok" if e.ok else "OUTLIER: " + "; ".join(e.details)
            lines.append(f"  {Path(e.path).name:<32} face {face:>6}  loo distance {dist:>6}  {verdict}")
        for d in self.duplicates:
            lines.append(f"  near-duplicate: {Path(d.first).name} ~ {Path(d.second).name} "
                         f"(similarity {d.similarity:.3f}{', mirrored' if d.mirrored else ''})")
        if sum(e.loo_distance is not None for e in self.entries) == 0 and self.entries:
            lines.append("  (identity not compared: the leave-one-out centroid needs at least two photos with a face)")
        if not self.passed:
            lines.append("fix: remove or replace the listed photos in the training/reference set, then audit again")
        return "\n".join(lines)

    def html(self, thumbnails: dict[str, str] | None = None) -> str:
        """The audit as an HTML fragment (table with optional data-URI thumbnails), for the report."""
        thumbnails = thumbnails or {}
        rows = []
        for e in self.entries:
            thumb = thumbnails.get(e.path)
            img = f'<img src="{html.escape(thumb)}" alt="{html.escape(Path(e.path).name)}" width="64">' if thumb else ""
            dist = "" if e.loo_distance is None else f"{e.loo_distance:.3f}"
            cos = "" if e.loo_cosine is None else f"{e.loo_cosine:.3f}"
            face = "" if e.face_px is None else str(e.face_px)
            status = "ok" if e.ok else html.escape("; ".join(e.details))
            cls = "audit-ok" if e.ok else "audit-outlier"
            rows.append(f'<tr class="{cls}"><td>{img}</td><td>{html.escape(Path(e.path).name)}</td><td>{face}</td>'
                        f"<td>{dist}</td><td>{cos}</td><td>{status}</td></tr>")
        dups = "".join(
            f"<li>{html.escape(Path(d.first).name)} ~ {html.escape(Path(d.second).name)} "
            f"({d.similarity:.3f}{', mirrored' if d.mirrored else ''})</li>" for d in self.duplicates
        )
        return (
            f'<section id="reference-audit"><h2>Reference audit</h2>'
            f"<p>{len(self.entries)} photo(s), {len(self.outliers)} outlier(s); leave-one-out distance to the "
            f"centroid of the other photos' faces ({html.escape(self.backend)}), same person below "
            f"{self.match_distance:g}.</p>"
            '<table class="audit"><thead><tr><th></th><th>photo</th><th>face px</th><th>LOO distance</th>'
            f"<th>LOO cosine</th><th>status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (f"<p>Near-duplicate pairs:</p><ul>{dups}</ul>" if dups else "")
            + "</section>"
        )


def reference_photos(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (kohya: img/<repeats>_<name>/*.png)."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise AuditError(f"{p}: no such file or folder; pass reference photos or a folder holding them")
    if not found:
        raise AuditError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, paths))}")
    return found


def leave_one_out(descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, cosine) of each row to the mean of the other rows: the leave-one-out centroid scores."""
    x = np.asarray(descriptors, dtype=np.float64)
    n = len(x)
    if n < 2:
        raise AuditError("leave-one-out needs at least two faces")
    others = (x.sum(axis=0)[None, :] - x) / (n - 1)
    distance = np.linalg.norm(x - others, axis=1)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(others, axis=1)
    cosine = np.where(norms > 0, (x * others).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    return distance, cosine


def near_duplicates(images: Sequence[np.ndarray], names: Sequence[str], threshold: float) -> list[DuplicatePair]:
    """Pairs whose thumbnails correlate at `threshold` or more, directly or with one of them mirrored."""
    if not images:
        return []
    sig = np.stack([signature(im, SIGNATURE_PX) for im in images])
    mirrored = np.stack([signature(np.ascontiguousarray(im[:, ::-1]), SIGNATURE_PX) for im in images])
    direct, flipped = sig @ sig.T, sig @ mirrored.T
    pairs = []
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            best, is_mirror = (float(direct[i, j]), False) if direct[i, j] >= flipped[i, j] else (float(flipped[i, j]), True)
            if best >= threshold:
                pairs.append(DuplicatePair(names[i], names[j], round(best, 4), is_mirror))
    return pairs


def audit_images(
    images: Sequence[np.ndarray | None],
    names: Sequence[str],
    faces: Sequence[list[DetectedFace] | None],
    *,
    backend: str,
    match_distance: float,
    min_face_px: int = DEFAULT_MIN_FACE_PX,
    duplicate_similarity: float = DEFAULT_DUPLICATE_SIMILARITY,
    problems: dict[str, str] | None = None,
) -> ReferenceAudit:
    """The audit from already-detected faces (pure: no model); `None` image/faces: the photo was unreadable."""
    problems = problems or {}
    entries: dict[str, dict[str, Any]] = {}
    chosen: list[tuple[str, DetectedFace]] = []
    for name, found in zip(names, faces):
        entry: dict[str, Any] = {"path": name, "reasons": [], "details": []}
        entries[name] = entry
        if found is None:
            entry["reasons"].append(UNREADABLE)
            entry["details"].append(f"unreadable: {problems.get(name, 'could not be decoded')}")
            continue
        entry["faces_found"] = len(found)
        if not found:
            entry["reasons"].append(NO_FACE)
            entry["details"].append("no face: the identity judge finds no face; use a photo with a clear, unobstructed face")
            continue
        face = found[primary_index(found)]
        entry.update(face_px=face.size, detector_score=round(float(face.confidence), 4))
        chosen.append((name, face))
        if face.size < min_face_px:
            entry["reasons"].append(TINY_FACE)
            entry["details"].append(f"tiny face: {face.size} px (< {min_face_px} px); crop closer or use a larger photo")
    if len(chosen) >= 2:
        distance, cosine = leave_one_out(np.stack([f.descriptor for _, f in chosen]))
        for (name, _), d, c in zip(chosen, distance, cosine):
            entries[name].update(loo_distance=round(float(d), 4), loo_cosine=round(float(c), 4))
            if d >= match_distance:
                entries[name]["reasons"].append(OTHER_PERSON)
                entries[name]["details"].append(
                    f"other person: distance {d:.3f} to the other photos' face centroid (same person below {match_distance:g})"
                )
    readable = [(n, im) for n, im in zip(names, images) if im is not None]
    duplicates = near_duplicates([im for _, im in readable], [n for n, _ in readable], duplicate_similarity)
    for pair in duplicates:
        entry = entries[pair.second]
        if DUPLICATE not in entry["reasons"]:
            entry["reasons"].append(DUPLICATE)
            entry["details"].append(f"duplicate of {Path(pair.first).name} (similarity {pair.similarity:.3f}"
                                    f"{', mirrored' if pair.mirrored else ''})")
    return ReferenceAudit(
        entries=[AuditEntry(**entries[n]) for n in names],
        duplicates=duplicates,
        backend=backend,
        match_distance=match_distance,
        min_face_px=min_face_px,
        duplicate_similarity=duplicate_similarity,
        descriptors={name: [round(float(v), 5) for v in face.descriptor] for name, face in chosen},
    )


def audit_references(
    paths: Sequence[Path],
    *,
    judge_options: dict[str, Any] | None = None,
    min_face_px: int = DEFAULT_MIN_FACE_PX,
    duplicate_similarity: float = DEFAULT_DUPLICATE_SIMILARITY,
) -> ReferenceAudit:
    """Audit photo files (or folders of them) with the `face_identity` judge built from `judge_options`.

    Raises `ModelUnavailable` when the face models are absent, `AuditError` when nothing can be audited.
    """
    from lora_harness.judges.face_identity import FaceIdentityJudge

    files = reference_photos(list(paths))
    judge = FaceIdentityJudge(**dict(judge_options or {}))
    backend = judge.backend_models()
    images: list[np.ndarray | None] = []
    faces: list[list[DetectedFace] | None] = []
    problems: dict[str, str] = {}
    for path in files:
        try:
            image = load_rgb(path)
            found, _ = judge.detect(backend, image)
        except (ImageError, ImageInputError) as exc:
            images.append(None)
            faces.append(None)
            problems[str(path)] = str(exc)
            continue
        images.append(image)
        faces.append(found)
    if all(f is None for f in faces):
        raise AuditError(f"none of the {len(files)} photo(s) could be read: "
                         + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    return audit_images(
        images, [str(p) for p in files], faces, backend=judge.backend, match_distance=judge.match_distance,
        min_face_px=min_face_px, duplicate_similarity=duplicate_similarity, problems=problems,
    )


def audit_config(config: Any) -> ReferenceAudit:
    """The audit of `[person] references` of an eval config, with the options of its `face_identity` judge.

    Raises `AuditError` when the config lists no references (the test then skips, saying what to add).
    """
    if not config.person.references:
        raise AuditError("no reference photos to audit: list photos of the person under [person] references")
    options = next((dict(j.options) for j in config.judges if j.name == "face_identity"), {})
    return audit_references(list(config.person.references), judge_options=options)
