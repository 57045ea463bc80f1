"""Reading the generation log back (`images/generation.<worker>.jsonl`): only tests need it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_log(folder: Path) -> list[dict[str, Any]]:
    """Every worker's generation events of a run's images folder, oldest first."""
    events: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob("generation.*.jsonl")):
        events += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(events, key=lambda e: e.get("time", 0))
