"""Evaluate checkpoints while a LoRA trains, appending to one run so the trend grows with every save.

Two entry points (`lora-harness eval-checkpoint`, `lora-harness watch`), one mechanism: the eval suite runs
in a pytest subprocess (the same tests, gates and report as `pytest evals`) with the config's generate
sources pointed at one checkpoint file (`--lora-set sources=...`). Every call uses the same run folder
(`reports/<run.name>`), whose score store is append-only, so each call adds a checkpoint and rewrites
scores.csv and report.html from everything stored so far.

- SimpleTuner: `--validation_external_script "lora-harness eval-checkpoint --checkpoint {local_checkpoint_path}
  --step {global_step} --config evals/lora_eval.toml"`. `{local_checkpoint_path}` may be a checkpoint folder
  (`checkpoint-500/` holding `pytorch_lora_weights.safetensors`) or the file itself.
- kohya sd-scripts / fluxgym: `lora-harness watch OUTPUT_DIR --config ...` polls the output folder and
  evaluates each new `*.safetensors` once it has stopped growing (size and mtime unchanged over one poll,
  so a file still being written is never read). Evaluated files are remembered in `<run>/watch.json`, so a
  restarted watcher does not evaluate them again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from lora_harness.core.config import ConfigError

WATCH_STATE = "watch.json"


def parse_set_option(item: str) -> tuple[str, Any]:
    """`KEY=JSON` of `--lora-set`: a dotted config key and a JSON value (a bare word is taken as a string)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--lora-set {item!r}: expected KEY=JSON, e.g. run.name='\"my-run\"' or sources='[...]'")
    try:
        return key.strip(), json.loads(text)
    except json.JSONDecodeError:
        return key.strip(), text


def checkpoint_file(path: Path) -> Path:
    """The LoRA file of a checkpoint path: the file itself, or the one `.safetensors` in a checkpoint folder."""
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        preferred = [p for p in files if p.name == "pytorch_lora_weights.safetensors"]  # SimpleTuner / diffusers
        if preferred or len(files) == 1:
            return (preferred or files)[0]
        raise ConfigError(
            f"{path}: expected one LoRA .safetensors in the checkpoint folder, found "
            f"{', '.join(p.name for p in files) or 'none'}; pass the file with --checkpoint"
        )
    raise ConfigError(f"--checkpoint {path}: no such file or folder")


def checkpoint_sources(config_path: Path, checkpoint: Path, step: int | None, loraname: str | None,
                       step_kind: str | None = None) -> list[dict[str, Any]]:
    """The config's generate sources, each pointed at this one checkpoint (absolute paths; sample sources dropped)."""
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{config_path}: cannot read the config: {exc}") from None
    base = config_path.resolve().parent
    sources = [s for s in data.get("sources", []) if isinstance(s, dict) and s.get("kind") == "generate"]
    if not sources:
        raise ConfigError(
            f"{config_path}: no [[sources]] with kind = \"generate\"; the training hook generates the checkpoint's "
            "images from a generate source's prompts and seeds (see the README's Generation mode)"
        )
    out = []
    for source in sources:
        updated = dict(source, lora=[str(checkpoint.resolve())])
        if isinstance(source.get("prompts"), str):
            updated["prompts"] = str((base / source["prompts"]).resolve())
        if isinstance(source.get("baseline"), str) and source["baseline"] != "none":
            updated["baseline"] = str((base / source["baseline"]).resolve())
        if step is not None:
            updated["final_step"] = step  # an unnumbered file (SimpleTuner) gets the trainer's global step
            if step_kind is not None:
                updated["final_kind"] = step_kind  # --step / --epoch: the label kind too
        if loraname or "loraname" in source:
            updated["loraname"] = loraname or source["loraname"]
        out.append(updated)
    return out


def pytest_command(suite: Path, config: Path, sources: list[dict[str, Any]], *, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable, "-m", "pytest", str(suite), "--lora-config", str(config), "-p", "no:cacheprovider",
        "--lora-set", "sources=" + json.dumps(sources), "--lora-gate", "latest", *extra,
    ]


def evaluate_checkpoint(
    checkpoint: Path, *, config: Path, step: int | None, suite: Path, loraname: str | None = None,
    extra: Sequence[str] = (), runner: Callable[[list[str]], int] | None = None, step_kind: str | None = None,
) -> int:
    """Run the eval suite on one checkpoint; returns pytest's exit status (1: a gated check failed).

    A kohya final file evaluated alone is labelled like its siblings in the same folder (see
    `sources.generate.find_checkpoints`); `step`/`step_kind` (`--step`, `--epoch`) override its label."""
    sources = checkpoint_sources(config, checkpoint_file(checkpoint), step, loraname, step_kind)
    command = pytest_command(suite, config, sources, extra=extra)
    return (runner or (lambda cmd: subprocess.call(cmd)))(command)


@dataclass
class FolderWatch:
    """Which `*.safetensors` files in a folder are new and finished writing (stable across one poll)."""

    folder: Path
    state_file: Path
    seen: dict[str, tuple[int, float]] = field(default_factory=dict)  # last poll's size and mtime per file
    done: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.state_file.is_file():
            self.done = set(json.loads(self.state_file.read_text(encoding="utf-8")).get("evaluated", []))

    def poll(self) -> list[Path]:
        """Files that have not changed since the previous poll and were not evaluated yet, oldest first."""
        ready, now = [], {}
        for path in sorted(self.folder.glob("*.safetensors")):
            try:
                stat = path.stat()
            except OSError:  # deleted between glob and stat (a trainer replacing a file)
                continue
            now[str(path)] = (stat.st_size, stat.st_mtime)
            if str(path) not in self.done and self.seen.get(str(path)) == now[str(path)] and stat.st_size > 0:
                ready.append(path)
        self.seen = now
        return sorted(ready, key=lambda p: (p.stat().st_mtime, p.name))

    def mark_done(self, path: Path) -> None:
        self.done.add(str(path))
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"evaluated": sorted(self.done)}, indent=1), encoding="utf-8")
        tmp.replace(self.state_file)


def watch(
    folder: Path, *, config: Path, suite: Path, state_file: Path, interval: float = 30.0, max_polls: int | None = None,
    evaluate: Callable[[Path], int] | None = None, log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll `folder` until interrupted (or `max_polls`); evaluate each finished checkpoint once. Returns how many."""
    if not folder.is_dir():
        raise ConfigError(f"watch: {folder} is not a folder; give the trainer's output folder (kohya --output_dir)")
    tracker = FolderWatch(folder, state_file)
    run = evaluate or (lambda path: evaluate_checkpoint(path, config=config, step=None, suite=suite))
    polls = evaluated = 0
    while max_polls is None or polls < max_polls:
        if polls:
            sleep(interval)
        polls += 1
        for path in tracker.poll():
            log(f"lora-harness watch: evaluating {path.name}")
            status = run(path)
            log(f"lora-harness watch: {path.name} done (pytest exit status {status})")
            tracker.mark_done(path)  # a failing gate is a result, not a reason to evaluate again
            evaluated += 1
    return evaluated


def run_dir_of(config: Path, run_name: str | None) -> Path:
    """Where the run's files live (for the watcher's state), from the config's [run] section."""
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    run = data.get("run", {}) if isinstance(data.get("run"), dict) else {}
    report_dir = Path(run.get("report_dir", "reports"))
    report_dir = report_dir if report_dir.is_absolute() else config.resolve().parent / report_dir
    return report_dir / (run_name or run.get("name", "lora-eval"))
