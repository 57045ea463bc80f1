"""The run manifest `reports/<run>/run.json`: what a run folder's scores were made with.

Scores alone do not say which thresholds and gate they were judged against, nor whether two folders from two
machines came from the same config. The controller writes this file when a pytest session ends (after a
failure or Ctrl-C too); it lets `lora-harness report RUN_DIR` rebuild pass/fail without the config and lets
`lora-harness merge` refuse to mix runs of different configs. A session killed outright leaves no record;
its scores are still in `scores/` and merging it then needs `--force`.

The config hash covers what decides the scores and the verdicts (sources, person, judges and their options,
thresholds, gate, image limits), with paths taken relative to the config file, so the same checkout on two
machines hashes alike. It leaves out the run name, the report folder and `[report]` (how results are shown).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lora_harness.checks.memorization import memorization_ceilings
from lora_harness.core.config import BestConfig, EvalConfig, GateSpec, ReportConfig, StatsConfig, Threshold
from lora_harness.core.redact import Redactor
from lora_harness.verdicts.sequential import decision_stats

MANIFEST_NAME = "run.json"
SCHEMA = 1
# Libraries whose versions change scores or reports; only the installed ones are recorded.
LIBRARIES = (
    "lora-harness", "pytest", "pytest-xdist", "numpy", "scipy", "pillow", "pandas", "pydantic", "torch",
    "diffusers", "transformers", "peft", "torchmetrics", "open_clip_torch", "openai", "opencv-python-headless",
    "jinja2", "allure-pytest",
)


class ManifestError(ValueError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SessionRecord(_Model):
    """One pytest session that wrote into the run folder (a machine of a sharded run, or a rerun)."""

    run_id: str
    config_hash: str
    started_at: str
    finished_at: str | None = None
    host: str = ""
    shard: str | None = None  # "i/N" when the session evaluated a shard
    exit_status: int | None = None
    scores: int = 0  # score rows this session recorded
    # The gated checkpoints among all the session collected (before --shard): a shard's own scores cannot
    # tell which checkpoint is the latest. None with gate "best" (chosen from scores) or when unknown.
    gated: list[str] | None = None
    # What the session's gate tests decided (test id, decision, gated), baseline and snapshot tests included:
    # the report's badge counts them with the verdicts it derives from scores.
    verdicts: list[dict[str, Any]] = []


class RunManifest(_Model):
    schema_version: int = SCHEMA
    run_name: str
    config_hash: str
    config_path: str | None = None
    thresholds: dict[str, Threshold] = {}
    ceilings: dict[str, float] = {}  # metric -> maximum (memorization near-copies)
    gate: GateSpec = "latest"
    best: BestConfig | None = None
    stats: StatsConfig = StatsConfig()
    report: ReportConfig = ReportConfig()
    judges: dict[str, list[str]] = {}  # judge name -> versions seen in the scores
    libraries: dict[str, str] = {}
    sessions: list[SessionRecord] = []
    merged_from: list[str] = []  # run folders a `lora-harness merge` combined

    def latest_verdicts(self) -> list[dict[str, Any]]:
        """The gate-test verdicts of the newest session of each shard (a rerun replaces the one before)."""
        newest: dict[str | None, SessionRecord] = {}
        for session in self.sessions:
            newest[session.shard] = session
        return [v for session in newest.values() for v in session.verdicts]

    @property
    def gated(self) -> set[str] | None:
        """Gated checkpoint keys as the most recent session that knew them saw them (shards agree)."""
        known = [s for s in self.sessions if s.gated is not None]
        return set(max(known, key=lambda s: (s.started_at, s.run_id)).gated or ()) if known else None

    @property
    def config_hashes(self) -> set[str]:
        """Every config hash that contributed scores: more than one means the folder mixes configs."""
        return {self.config_hash} | {s.config_hash for s in self.sessions}


def config_hash(config: EvalConfig) -> str:
    """A short, machine-independent fingerprint of what decides the scores and verdicts."""
    data = config.model_dump(mode="json", exclude={"path", "report"})
    data["run"].pop("report_dir", None)
    data["run"].pop("name", None)
    for threshold in data.get("thresholds", {}).values():  # unset maxima: the hash of a config without them is unchanged
        for key in ("image_max", "checkpoint_max"):
            if threshold.get(key) is None:
                threshold.pop(key, None)
    base = Path(config.path).resolve().parent if config.path else None
    canonical = json.dumps(_relative_paths(data, base), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _relative_paths(value: Any, base: Path | None) -> Any:
    if isinstance(value, dict):
        return {k: _relative_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_paths(v, base) for v in value]
    if isinstance(value, str) and base is not None and os.path.isabs(value):
        return Path(os.path.relpath(value, base)).as_posix()
    return value


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_session(run_id: str, config: EvalConfig, *, started_at: str, shard: str | None = None) -> SessionRecord:
    return SessionRecord(
        run_id=run_id, config_hash=config_hash(config), started_at=started_at, host=socket.gethostname(), shard=shard
    )


def read_manifest(run_dir: Path) -> RunManifest | None:
    """The run folder's manifest, or None when it has none; a damaged file is an error that says so."""
    path = Path(run_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return RunManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as exc:
        raise ManifestError(
            f"{path}: not a valid run manifest ({str(exc).splitlines()[0]}); delete it to rebuild the report "
            "without thresholds, or restore it from the machine that ran the evaluation"
        ) from None


def write_manifest(run_dir: Path, manifest: RunManifest) -> Path:
    """Atomic write (a reader never sees half a file); secrets in judge options never reach it."""
    path = Path(run_dir) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(Redactor().value(manifest.model_dump(mode="json")), indent=2, sort_keys=False)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def record_session(
    run_dir: Path, config: EvalConfig, session: SessionRecord, judges: dict[str, list[str]]
) -> RunManifest:
    """Add (or update) this session in the run folder's manifest; earlier sessions are kept."""
    try:
        previous = read_manifest(run_dir)
    except ManifestError:
        previous = None  # a damaged manifest must not stop a run from recording its own session
    sessions = [s for s in (previous.sessions if previous else []) if s.run_id != session.run_id]
    merged_judges: dict[str, set[str]] = {k: set(v) for k, v in (previous.judges if previous else {}).items()}
    for name, versions in judges.items():
        merged_judges.setdefault(name, set()).update(versions)
    manifest = RunManifest(
        run_name=config.run.name,
        config_hash=session.config_hash,
        config_path=str(config.path) if config.path else None,
        thresholds=dict(config.thresholds),
        ceilings=memorization_ceilings(config),
        gate=config.gate.checkpoints,
        best=config.best,
        stats=decision_stats(config.gate, config.stats),  # what verdicts were decided with
        report=config.report,
        judges={k: sorted(v) for k, v in sorted(merged_judges.items())},
        libraries=library_versions(),
        sessions=[*sessions, session],
        merged_from=previous.merged_from if previous else [],
    )
    write_manifest(run_dir, manifest)
    return manifest
