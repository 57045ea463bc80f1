"""Crash-safe score storage: one append-only JSON-lines file per writer process.

Every score is written (and fsynced) the moment a judge returns it, so a crash, a Ctrl-C or a failing
later case never loses what was already computed.

The store is the one door to `scores/*.jsonl`: `ScoreStore.record` (scores of cases) and `ScoreStore.append`
(ready rows) both redact secrets before anything is written, so no caller (a case judge, a pairwise
comparison, memorization, a test's own score) can put an API key quoted in an error text on disk. Each process (the controller or an xdist worker) owns
its own file, so no locking is needed; readers merge all files. Rows are never rewritten: a rerun appends
newer rows, and `latest_rows` takes the newest row per (case, metric).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from lora_harness.core.cases import EvalCase
from lora_harness.judges.base import Score
from lora_harness.core.redact import Redactor

SCORES_DIRNAME = "scores"


@dataclass(frozen=True)
class ScoreRow:
    """One stored score with everything needed to report it without the original config."""

    case_key: str
    checkpoint_key: str
    loraname: str
    training_step: int
    step_kind: str
    prompt_id: str
    prompt: str
    seed: int | None
    timestamp: str | None
    image: str
    variant: str | None
    metric: str
    value: float | None
    raw: dict[str, Any]
    error: str | None
    judge: str
    judge_version: str
    run_id: str
    worker: str
    recorded_at: float = field(default_factory=time.time)

    @classmethod
    def of(cls, case: EvalCase, score: Score, *, judge: str, judge_version: str, run_id: str, worker: str) -> "ScoreRow":
        value, error = (None if score.value is None else float(score.value)), score.error
        if value is not None and not math.isfinite(value):  # rows are strict JSON: keep the row, flag the value
            value, error = None, error or f"{judge} returned a non-finite value ({value})"
        return cls(
            case_key=case.key,
            checkpoint_key=case.checkpoint_key,
            loraname=case.loraname,
            training_step=case.training_step,
            step_kind=case.step_kind,
            prompt_id=case.prompt_id,
            prompt=case.prompt.text,
            seed=case.seed,
            timestamp=case.timestamp,
            image=str(case.image_path),
            variant=case.variant,
            metric=score.metric,
            value=value,
            raw=_json_safe(dict(score.raw)),
            error=error,
            judge=judge,
            judge_version=judge_version,
            run_id=run_id,
            worker=worker,
        )


def _json_safe(obj: Any) -> Any:
    """NaN and infinities in raw values become None: one odd number must not cost a batch its rows."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _json_safe(item) for key, item in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(item) for item in obj]
    return obj


class ScoreStore:
    """Appends rows for one writer; reads rows of every writer of a run folder.

    `redactor`: the secrets to scrub (default: the current environment's, read once per store)."""

    def __init__(self, run_dir: Path, *, run_id: str, worker: str = "main", redactor: Redactor | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.worker = worker
        self.scores_dir = self.run_dir / SCORES_DIRNAME
        self.path = self.scores_dir / f"{run_id}.{worker}.jsonl"
        self.redactor = Redactor() if redactor is None else redactor

    def record(
        self, results: Iterable[tuple[EvalCase, Iterable[Score]]], *, judge: str, judge_version: str
    ) -> list[tuple[EvalCase, list[Score]]]:
        """Redact, write and fsync one judge's scores of some cases; returns the redacted scores, which are the
        only ones a caller may keep (they reach failure messages, CSV and reports from there)."""
        redacted = [(case, [self.redacted(s) for s in scores]) for case, scores in results]
        self._write(
            ScoreRow.of(case, s, judge=judge, judge_version=judge_version, run_id=self.run_id, worker=self.worker)
            for case, scores in redacted
            for s in scores
        )
        return redacted

    def append(self, rows: Iterable[ScoreRow]) -> None:
        """Write ready rows (redacted first) and fsync before returning: once this returns, they survive a crash."""
        self._write(self._redacted_row(row) for row in rows)

    def redacted(self, score: Score) -> Score:
        """The score with secrets removed from its error text and raw values (the same object when clean)."""
        if not score.raw and not score.error:
            return score
        raw = self.redactor.value(dict(score.raw)) if score.raw else score.raw
        return Score(score.metric, score.value, raw, self.redactor.text(score.error) if score.error else score.error)

    def _redacted_row(self, row: ScoreRow) -> ScoreRow:
        if not row.raw and not row.error:
            return row
        return replace(row, raw=self.redactor.value(row.raw), error=self.redactor.text(row.error) if row.error else row.error)

    def _write(self, rows: Iterable[ScoreRow]) -> None:
        """The only code that writes score files; callers come through `record` or `append`, which redact."""
        # vars(), not asdict(): a row's fields are plain values and asdict's deep copy was most of a write's cost
        lines = "".join(json.dumps(vars(row), allow_nan=False, default=str) + "\n" for row in rows)
        if not lines:
            return
        self.scores_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self, *, run_id: str | None = None) -> list[ScoreRow]:
        return list(read_rows(self.run_dir, run_id=run_id))

    def others_rows(self) -> list[ScoreRow]:
        """This run's rows written by the other processes (xdist workers): what this writer has not seen.
        Its own file is skipped: everything in it came from this process (reading it back per checkpoint
        made a run's cost grow with the square of its size)."""
        return list(read_rows(self.run_dir, run_id=self.run_id, skip=self.path))


def read_rows(run_dir: Path, *, run_id: str | None = None, skip: Path | None = None) -> Iterator[ScoreRow]:
    """All rows of a run folder (optionally one session's), in file then line order.

    A torn last line (a process killed mid-write) is skipped with a warning, not an error: the rows before
    it are intact and must still be reported.
    """
    scores_dir = Path(run_dir) / SCORES_DIRNAME
    pattern = f"{run_id}.*.jsonl" if run_id else "*.jsonl"
    for path in sorted(scores_dir.glob(pattern)):
        if path == skip:
            continue
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield ScoreRow(**json.loads(line))
                except (json.JSONDecodeError, TypeError) as exc:
                    warnings.warn(f"{path}:{number}: skipping an unreadable score row ({exc})", stacklevel=2)


def latest_rows(rows: Iterable[ScoreRow]) -> list[ScoreRow]:
    """The newest row per (case, metric): reruns supersede, history stays on disk."""
    newest: dict[tuple[str, str], ScoreRow] = {}
    for row in rows:
        key = (row.case_key, row.metric)
        if key not in newest or row.recorded_at >= newest[key].recorded_at:
            newest[key] = row
    return list(newest.values())
