"""Command-line options and configuration: `--lora-*` options (old spellings as hidden aliases), checked
before collection, and the per-process plugin state (see state.py)."""

from __future__ import annotations

import argparse

import pytest

from lora_harness.plugin.reporting import ControllerReports
from lora_harness.plugin.state import STATE, PluginState, is_worker, shard_of


# Old, unprefixed spellings: accepted (hidden from --help) for one release, with a deprecation note.
LEGACY_OPTIONS = {"--report-dir": "report_dir", "--run-name": "run_name", "--gate": "gate", "--samples": "samples", "--shard": "shard"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lora-harness", "LoRA evaluation (lora-harness)")
    group.addoption("--lora-config", metavar="PATH", help="eval config TOML (default: ini lora_config, evals/lora_eval.toml)")
    group.addoption("--lora-report-dir", dest="report_dir", metavar="DIR", help="override run.report_dir: where reports/<run>/ is written")
    group.addoption("--lora-run-name", dest="run_name", metavar="NAME", help="override run.name")
    group.addoption(
        "--lora-gate", dest="gate", metavar="SPEC",
        help="override gate.checkpoints: latest, all, best, or steps such as 800,1000",
    )
    group.addoption(
        "--lora-samples", dest="samples", metavar="DIR", action="append", default=None,
        help="evaluate this kohya sample folder instead of the config's sources (repeatable); config sections "
        "naming LoRAs of the replaced sources are skipped with a note",
    )
    group.addoption(
        "--lora-shard", dest="shard", metavar="I/N|auto",
        help="evaluate only shard I of N (split by checkpoint, the same on every machine); auto: from a Slurm "
        "array or Kubernetes Indexed Job (own run folder <run>-shard<i>of<N>); merge with `lora-harness merge`",
    )
    group.addoption(
        "--lora-shard-count", dest="shard_count", metavar="N", type=int,
        help="number of shards for --lora-shard auto in a Kubernetes Indexed Job",
    )
    group.addoption(
        "--lora-progress", metavar="SECONDS", default="10",
        help="a judging progress line (checkpoints done, ETA) at most every SECONDS; 0: every checkpoint; off: none",
    )
    group.addoption(
        "--lora-set", metavar="KEY=JSON", action="append", default=None,
        help="override a config key with a JSON value, e.g. sources='[...]' (repeatable; used by `lora-harness eval-checkpoint`)",
    )
    group.addoption(
        "--allow-incomplete", action="store_true", default=False,
        help="accept gated metrics that could not be judged here (a judge's model or package absent): skip instead of fail",
    )
    group.addoption(
        "--lora-summary-md", metavar="PATH",
        help="append a short Markdown verdict (badge word, gated checkpoints, failing metrics, report link) to "
        "PATH, e.g. \"$GITHUB_STEP_SUMMARY\" or a file for a merge-request comment",
    )
    group.addoption(
        "--lora-report-url", metavar="URL",
        help="link the Markdown summary to this URL (e.g. the CI artifact) instead of the report's relative path",
    )
    group.addoption(
        "--lora-allure-full-images", action="store_true", default=False,
        help="with --alluredir: attach each full-size image instead of a JPEG thumbnail",
    )
    for flag, dest in LEGACY_OPTIONS.items():
        group.addoption(
            flag, dest=f"legacy_{dest}", action="append" if dest == "samples" else "store", default=None,
            help=argparse.SUPPRESS,
        )
    parser.addini("lora_config", "default eval config path, relative to the rootdir", default="evals/lora_eval.toml")


def _apply_legacy_options(config: pytest.Config) -> None:
    """`--gate` etc. still work, as the `--lora-` spelling, saying so once."""
    for flag, dest in LEGACY_OPTIONS.items():
        value = getattr(config.option, f"legacy_{dest}", None)
        if value is None:
            continue
        if dest == "samples":
            setattr(config.option, dest, [*(getattr(config.option, dest) or []), *value])
        elif getattr(config.option, dest, None) is None:
            setattr(config.option, dest, value)
        if not is_worker(config):
            config.issue_config_time_warning(
                pytest.PytestDeprecationWarning(f"{flag} is now --lora-{flag[2:]}; the old spelling goes in the next release"),
                stacklevel=2,
            )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[STATE] = PluginState.of(config)
    if config.pluginmanager.hasplugin("xdist"):  # xdist's hooks exist only where xdist is installed
        from lora_harness.plugin.xdist_hooks import XdistHooks

        config.pluginmanager.register(XdistHooks(config.stash[STATE]), "lora_harness_xdist")
    _apply_legacy_options(config)
    _check_options(config)
    if config.option.collectonly and hasattr(config.option, "warn_unused_snapshots"):
        # syrupy counts every stored snapshot as unused when nothing runs, and fails a mere --collect-only
        config.option.warn_unused_snapshots = True
    config.pluginmanager.register(ControllerReports(config), "lora_harness_reports")


def _check_options(config: pytest.Config) -> None:
    """Bad --shard / --lora-progress values stop the run before collection, saying what is expected."""
    if config.getoption("shard", None) or config.getoption("shard_count", None) is not None:
        shard_of(config)
    value = str(config.getoption("lora_progress", "10"))
    try:
        if value.lower() != "off" and float(value) < 0:
            raise ValueError
    except ValueError:
        raise pytest.UsageError(f"--lora-progress {value!r}: give seconds between lines (e.g. 10, 0 for every checkpoint) or off") from None

