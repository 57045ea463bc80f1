"""`lora-harness` command line: work with stored scores and configs without running pytest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lora_harness.config import ConfigError, load_config
from lora_harness.report.commands import add_report_commands


def _validate(args: argparse.Namespace) -> int:
    from lora_harness.harness import Harness

    try:
        harness = Harness(load_config(Path(args.config)), run_id="validate")
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if harness.config.gate.checkpoints == "best":  # chosen from scores: validating must not judge anything
        gated = "the best checkpoint of each LoRA, chosen from scores when the run executes"
    else:
        gated = ", ".join(c.key for c in harness.checkpoints if harness.is_gated(c))
    print(f"{args.config}: OK — {len(harness.cases)} cases, {len(harness.checkpoints)} checkpoints, "
          f"metrics: {', '.join(harness.metrics)}; gated: {gated}")
    return 0


def _agreement(args: argparse.Namespace) -> int:
    import json

    from lora_harness.agreement import AgreementError, agreement_from_files

    try:
        report = agreement_from_files(
            Path(args.human), Path(args.scores), metrics=args.metric, binary_threshold=args.binary_threshold
        )
    except AgreementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"-> {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-harness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_report_commands(commands)  # `report` and `merge` (lora_harness/report/commands.py)
    validate = commands.add_parser("validate", help="check a config and list what it would evaluate")
    validate.add_argument("config", help="path to lora_eval.toml")
    validate.set_defaults(func=_validate)
    agree = commands.add_parser(
        "agreement", help="agreement of judges with human labels: Spearman/Kendall per metric, accuracy for 0/1 labels"
    )
    agree.add_argument("--human", required=True, help="labels CSV: loraname, training_step, prompt_id[, seed], one column per metric")
    agree.add_argument("--scores", required=True, help="the judges' scores: a scores.csv (ours or the study's) or a run folder")
    agree.add_argument("--metric", action="append", help="only this metric (repeatable; default: every metric in both files)")
    agree.add_argument("--binary-threshold", type=float, default=0.5, help="judge value counted as 'yes' for 0/1 labels (default 0.5)")
    agree.add_argument("--json", help="also write the result as JSON here")
    agree.set_defaults(func=_agreement)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
