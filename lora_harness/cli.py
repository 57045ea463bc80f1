"""`lora-harness` command line: work with stored scores and configs without running pytest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lora_harness.config import ConfigError, load_config
from lora_harness.report.csv import write_score_csvs
from lora_harness.store import latest_rows, read_rows


def _report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    rows = latest_rows(read_rows(run_dir))
    if not rows:
        print(f"error: no scores under {run_dir / 'scores'}; is this a run folder (reports/<run name>)?", file=sys.stderr)
        return 2
    wide, long = write_score_csvs(rows, Path(args.out) if args.out else run_dir)
    print(f"{len(rows)} scores -> {wide}, {long}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from lora_harness.harness import Harness

    try:
        harness = Harness(load_config(Path(args.config)), run_id="validate")
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gated = ", ".join(c.key for c in harness.checkpoints if harness.is_gated(c))
    print(f"{args.config}: OK — {len(harness.cases)} cases, {len(harness.checkpoints)} checkpoints, "
          f"metrics: {', '.join(harness.metrics)}; gated: {gated}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-harness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="rebuild scores.csv / scores_long.csv from a run's stored scores")
    report.add_argument("run_dir", help="a run folder, e.g. reports/demo")
    report.add_argument("--out", help="write here instead of the run folder")
    report.set_defaults(func=_report)
    validate = commands.add_parser("validate", help="check a config and list what it would evaluate")
    validate.add_argument("config", help="path to lora_eval.toml")
    validate.set_defaults(func=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
