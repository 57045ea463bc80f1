"""The `report` and `merge` subcommands of `lora-harness` (argument parsing lives in cli/main.py's parser)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from lora_harness.core.config import ConfigError, load_config
from lora_harness.report.csv import ScoresCsvError
from lora_harness.report.manifest import ManifestError, read_manifest

if TYPE_CHECKING:  # jinja2 loads only when a report is built (`lora-harness validate` stays fast)
    from lora_harness.report.html import ReportOptions

USER_ERRORS = (ConfigError, ScoresCsvError, ManifestError, ValueError, OSError)


def add_report_commands(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="rebuild scores.csv, scores_long.csv and report.html from a run's stored scores, or a report from CSVs",
        description="Rebuild a run's CSV and HTML report from its stored scores (no judging), or build the same "
        "report from scores CSVs in the study's layout with --from-csv.",
    )
    report.add_argument("run_dir", nargs="?", help="a run folder, e.g. reports/demo")
    report.add_argument("--from-csv", nargs="+", metavar="FILE", help="build the report from these CSV files instead")
    report.add_argument("--out", help="write here instead of the run folder (default for --from-csv: reports/<first file's name>)")
    report.add_argument("--config", help="take thresholds, gate and [report] settings from this config")
    report.add_argument("--images", choices=["embed", "link"], help="embed thumbnails in the HTML or link them (default: the run's setting)")
    report.add_argument("--thumbnail-px", type=int, help="longest side of a thumbnail in pixels")
    report.set_defaults(func=run_report)
    merge = commands.add_parser(
        "merge",
        help="merge run folders from several machines (e.g. --lora-shard i/N) into one, then report it",
        description="Merge run folders (shards or reruns) into one run folder with CSV and HTML. Runs made with "
        "different configs (config hash in run.json) are refused unless --force.",
    )
    merge.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders to merge")
    merge.add_argument("--out", required=True, help="the merged run folder")
    merge.add_argument("--force", action="store_true", help="merge even when configs differ or a manifest is missing")
    merge.set_defaults(func=run_merge)


def _options(args: argparse.Namespace, base: "ReportOptions | None") -> "ReportOptions | None":
    from lora_harness.report.html import ReportOptions

    if args.images is None and args.thumbnail_px is None:
        return base
    base = base or ReportOptions()
    return ReportOptions(
        images=args.images or base.images,
        thumbnail_px=args.thumbnail_px or base.thumbnail_px,
        pixel_limit=base.pixel_limit,
    )


def run_report(args: argparse.Namespace) -> int:
    from lora_harness.report.build import ReportError, report_csvs, report_run
    from lora_harness.report.html import ReportOptions
    from lora_harness.report.view import Rules

    if bool(args.run_dir) == bool(args.from_csv):
        print("error: give either a run folder (lora-harness report reports/demo) or --from-csv FILE...", file=sys.stderr)
        return 2
    try:
        config = load_config(Path(args.config)) if args.config else None
        base = ReportOptions.of(config.report, config.run.image_pixel_limit) if config else None
        if args.thumbnail_px is not None and not 32 <= args.thumbnail_px <= 2048:
            raise ValueError(f"--thumbnail-px {args.thumbnail_px}: choose a size between 32 and 2048")
        rules = Rules.of(config) if config else None
        if args.from_csv:
            out = Path(args.out) if args.out else Path("reports") / Path(args.from_csv[0]).stem
            files = report_csvs(
                [Path(p) for p in args.from_csv], out, options=_options(args, base), rules=rules
            )
            print(f"{files.rows} scores from {len(args.from_csv)} CSV file(s) -> {files.html}")
            return 0
        run_dir = Path(args.run_dir)
        if base is None:
            manifest = read_manifest(run_dir)
            base = ReportOptions.of(manifest.report) if manifest else None
        files = report_run(
            run_dir, out_dir=Path(args.out) if args.out else None, options=_options(args, base), rules=rules
        )
    except (ReportError, *USER_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{files.rows} scores -> {files.csv_wide}, {files.csv_long}, {files.html}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from lora_harness.report.build import ReportError
    from lora_harness.report.merge import MergeError, merge_runs

    try:
        result = merge_runs([Path(d) for d in args.run_dirs], Path(args.out), force=args.force)
    except (MergeError, ReportError, *USER_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mixed = result.manifest.config_hashes
    note = f" (forced: mixes config hashes {', '.join(sorted(mixed))})" if len(mixed) > 1 else ""
    print(
        f"merged {len(args.run_dirs)} run(s), {result.score_files} score file(s) copied, {result.report.rows} scores "
        f"-> {result.report.csv_wide}, {result.report.html}{note}"
    )
    return 0
