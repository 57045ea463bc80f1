"""Reading a wide scores CSV: ours (`scores.csv`) or the study's (`res_*.csv`), for baselines from a stored
run and for reports rebuilt from a CSV.

Not in `report/`: the verdict layer reads stored runs too (`[baseline] run = ...`), and verdicts must not
import the report package, which reads them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ID_COLUMNS = ["loraname", "training_step", "prompt_id", "timestamp"]
TAIL_COLUMNS = ["seed", "image", "run_id"]


class ScoresCsvError(ValueError):
    pass


def read_scores_csv(path: Path) -> pd.DataFrame:
    """Read a wide scores CSV, ours or the study's (whose first column is a pandas index)."""
    path = Path(path)
    if not path.is_file():
        raise ScoresCsvError(f"scores CSV not found: {path}")
    try:
        frame = pd.read_csv(path, dtype={column: str for column in ID_COLUMNS}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ScoresCsvError(f"{path}: not a readable CSV ({exc})") from None
    frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith("Unnamed: ")])
    missing = [column for column in ID_COLUMNS[:3] if column not in frame.columns]
    if missing:
        raise ScoresCsvError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the research layout "
            f"({', '.join(ID_COLUMNS)}, then one column per metric)"
        )
    return frame


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric metric columns of a wide frame (everything that is not an id or bookkeeping column)."""
    skip = set(ID_COLUMNS) | set(TAIL_COLUMNS)
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
