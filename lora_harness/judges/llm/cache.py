"""A content-addressed answer cache on disk: a rerun asks the API nothing it has already been asked.

The key hashes everything that determines an answer (model, endpoint host, rubric version, a digest of the
wording of only the criteria asked together (`rubrics.group_digest`),
the criteria asked together, image and reference pixel hashes, the prompt, the repeat index and sampling
settings); never the API key. Each entry is one JSON file written to a temporary name, fsynced and then
`os.replace`d into place, so a process killed mid-write leaves either the whole entry or none: readers
never see a torn file. Unreadable entries (from outside tampering) count as misses.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

CACHE_FORMAT = "1"


def cache_key(fields: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `fields` (sorted keys), hex."""
    text = json.dumps({"format": CACHE_FORMAT, **fields}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class AnswerCache:
    """`get`/`put` JSON values by key under `root/<key[:2]>/<key>.json`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self.path(key), encoding="utf-8") as handle:
                value = json.load(handle)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError):
            return None  # unreadable: ask again; the next put replaces it atomically
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(value, allow_nan=False, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
