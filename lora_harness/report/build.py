"""Building a run's reports (CSV, manifest, HTML) from stored scores or from CSV files.

One place that the plugin (end of a session), `lora-harness report` and `lora-harness merge` all call, so
the three produce the same files from the same rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from lora_harness.core.cases import Checkpoint
from lora_harness.verdicts.thresholds import gated_checkpoints
from lora_harness.sources import baseline_names

from lora_harness.core.config import EvalConfig
from lora_harness.report.csv import write_score_csvs
from lora_harness.report.from_csv import rows_from_csvs
from lora_harness.report.html import BuildTimings, ReportOptions, build_html_report, start_report_thumbnails
from lora_harness.report.view import Rules
from lora_harness.report.manifest import new_session, now_iso, read_manifest, record_session
from lora_harness.run.store import ScoreRow, latest_rows, read_rows


class ReportError(ValueError):
    pass


@dataclass(frozen=True)
class ReportFiles:
    rows: int
    html: Path
    csv_wide: Path | None = None
    csv_long: Path | None = None


def gated_keys(config: EvalConfig, checkpoints: Iterable[Checkpoint]) -> list[str] | None:
    checkpoints = list(checkpoints)
    if config.gate.checkpoints == "best" or not checkpoints:
        return None
    return sorted(c.key for c in gated_checkpoints(checkpoints, config.gate.checkpoints, baselines=baseline_names(config.sources)))


def report_run(
    run_dir: Path,
    *,
    out_dir: Path | None = None,
    options: ReportOptions | None = None,
    rules: Rules | None = None,
    rows: Sequence[ScoreRow] | None = None,
    write_csv: bool = True,
    timings: BuildTimings | None = None,
) -> ReportFiles:
    """CSV and HTML of a run folder from its stored scores (newest row per case and metric), no re-judging."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir
    if rows is None:
        rows = latest_rows(read_rows(run_dir))
    if not rows:
        raise ReportError(f"no scores under {run_dir / 'scores'}; is this a run folder (reports/<run name>)?")
    manifest = read_manifest(run_dir)
    if options is None:
        options = ReportOptions.of(manifest.report) if manifest else ReportOptions()
    thumbnails = start_report_thumbnails(rows, out_dir, options)  # decoded meanwhile, in other processes
    wide = long = None
    if write_csv:
        wide, long = write_score_csvs(list(rows), out_dir)
    html = build_html_report(
        rows,
        out_dir,
        title=manifest.run_name if manifest else run_dir.name,
        source=str(run_dir),
        manifest=manifest,
        rules=rules,
        options=options,
        timings=timings,
        thumbnails=thumbnails,
        run_dir=run_dir,
    )
    return ReportFiles(len(rows), html, wide, long)


def report_csvs(
    paths: Sequence[Path],
    out_dir: Path,
    *,
    options: ReportOptions | None = None,
    rules: Rules | None = None,
) -> ReportFiles:
    """The same report from CSV files (the study's `res_*.csv`, or ours); several files sit side by side."""
    rows = latest_rows(rows_from_csvs([Path(p) for p in paths]))
    if not rows:
        raise ReportError(f"no scores in {', '.join(str(p) for p in paths)}")
    html = build_html_report(
        rows,
        out_dir,
        title=" + ".join(Path(p).stem for p in paths),
        source=", ".join(str(p) for p in paths),
        rules=rules or Rules(),
        options=options,
    )
    return ReportFiles(len(rows), html)


def finish_session(
    run_dir: Path,
    config: EvalConfig,
    *,
    run_id: str,
    started_at: str,
    shard: str | None,
    exit_status: int,
    checkpoints: Iterable[Checkpoint] = (),
    verdicts: Sequence[dict] = (),
) -> ReportFiles | None:
    """At the end of a pytest session: record it in `run.json`, then rebuild `report.html` for the run.

    A session that recorded no score (`--collect-only`, everything deselected) changes nothing.
    """
    all_rows = list(read_rows(run_dir))
    if not any(row.run_id == run_id for row in all_rows):
        return None
    judges: dict[str, set[str]] = defaultdict(set)
    for row in all_rows:
        if row.run_id == run_id:
            judges[row.judge].add(row.judge_version)
    session = new_session(run_id, config, started_at=started_at, shard=shard).model_copy(
        update={
            "finished_at": now_iso(),
            "exit_status": int(exit_status),
            "scores": sum(1 for row in all_rows if row.run_id == run_id),
            "gated": gated_keys(config, checkpoints),
            "verdicts": list(verdicts),
        }
    )
    record_session(run_dir, config, session, {k: sorted(v) for k, v in judges.items()})
    options = ReportOptions.of(config.report, config.run.image_pixel_limit)
    return report_run(run_dir, rows=latest_rows(all_rows), options=options, write_csv=False)
