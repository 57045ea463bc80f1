"""Identity views of a run as self-contained HTML fragments: the reference audit (thumbnails inline).

Why a fragment builder of its own: the report template is shared with other views; these sections are
built from plain data (`ReferenceAudit`) and inserted as one block, so the page stays one offline file.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from lora_harness.audit import ReferenceAudit
from lora_harness.images import ImageError, load_rgb

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
