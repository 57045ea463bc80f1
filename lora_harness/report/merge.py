"""`lora-harness merge RUN_DIR... --out DIR`: one run folder from the shards (or reruns) of several machines.

Score files are copied, never rewritten: each is named `<run id>.<worker>.jsonl` and run ids are unique per
session, so files of different machines do not collide, and the merged folder is an ordinary run folder
(`lora-harness report` works on it, a later merge can take it as input). Thumbnails are copied too (`.jpg`
files and the packs the eval processes wrote, named by run id like the score files), so the merged report
shows images whose originals live on the other machines.

Runs are combined only when their manifests carry the same config hash: scores judged against other
prompts, judges or thresholds would mix silently otherwise. `force=True` merges anyway and the report then
lists every config hash it mixes.
"""

from __future__ import annotations

import filecmp
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lora_harness.report.build import ReportFiles, report_run
from lora_harness.report.html import ReportOptions
from lora_harness.report.manifest import ManifestError, RunManifest, read_manifest, write_manifest
from lora_harness.report.identity import AUDIT_FILE
from lora_harness.report.thumb_pack import PACK_SUFFIX
from lora_harness.report.thumbs import THUMBS_DIRNAME
from lora_harness.run.store import SCORES_DIRNAME, latest_rows, read_rows


class MergeError(ValueError):
    pass


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    score_files: int
    manifest: RunManifest
    report: ReportFiles


def merge_runs(
    run_dirs: Sequence[Path], out_dir: Path, *, force: bool = False, options: ReportOptions | None = None
) -> MergeResult:
    run_dirs = [Path(d) for d in run_dirs]
    out_dir = Path(out_dir)
    if not run_dirs:
        raise MergeError("nothing to merge: name at least one run folder")
    manifests = _check_inputs(run_dirs, out_dir, force)
    copied = 0
    for run_dir in run_dirs:
        if run_dir.resolve() == out_dir.resolve():
            continue
        copied += _copy_tree(run_dir / SCORES_DIRNAME, out_dir / SCORES_DIRNAME, "*.jsonl", strict=True)
        if (run_dir / THUMBS_DIRNAME).is_dir():
            for pattern in ("*/*.jpg", f"*/*{PACK_SUFFIX}"):  # files a report made; packs made while judging
                _copy_tree(run_dir / THUMBS_DIRNAME, out_dir / THUMBS_DIRNAME, pattern, strict=False)
    _carry_audit(run_dirs, out_dir)
    manifest = _merged_manifest(run_dirs, manifests)
    write_manifest(out_dir, manifest)
    rows = latest_rows(read_rows(out_dir))
    report = report_run(out_dir, rows=rows, options=options)
    return MergeResult(out_dir, copied, manifest, report)


def _check_inputs(run_dirs: list[Path], out_dir: Path, force: bool) -> list[RunManifest | None]:
    for run_dir in run_dirs:
        if not any((run_dir / SCORES_DIRNAME).glob("*.jsonl")):
            raise MergeError(f"{run_dir}: no scores under {run_dir / SCORES_DIRNAME}; is this a run folder?")
    inputs = {d.resolve() for d in run_dirs}
    if out_dir.resolve() not in inputs and any((out_dir / SCORES_DIRNAME).glob("*.jsonl")):
        raise MergeError(
            f"{out_dir} already holds scores of another run; merge into an empty folder, or list {out_dir} "
            "as one of the inputs to add to it"
        )
    manifests = []
    for run_dir in run_dirs:
        try:
            manifests.append(read_manifest(run_dir))
        except ManifestError as exc:
            if not force:
                raise MergeError(f"{exc}; or pass --force to merge without checking configs") from None
            manifests.append(None)
    missing = [str(d) for d, m in zip(run_dirs, manifests) if m is None]
    if missing and not force:
        raise MergeError(
            f"no run manifest (run.json) in {', '.join(missing)}, so its config cannot be checked (a session "
            "killed before it ended writes none); pass --force to merge anyway"
        )
    hashes = {h for m in manifests if m is not None for h in m.config_hashes}
    if len(hashes) > 1 and not force:
        listing = "; ".join(
            f"{d}: {', '.join(sorted(m.config_hashes))}" for d, m in zip(run_dirs, manifests) if m is not None
        )
        raise MergeError(
            f"refusing to merge runs made with different configs ({listing}); evaluate all shards with the same "
            "config, or pass --force to merge anyway (the report then lists the mixed config hashes)"
        )
    return manifests


def _carry_audit(run_dirs: list[Path], out_dir: Path) -> None:
    """The reference audit (`reference_audit.json`, one per run folder) of the newest input that has one: every
    shard audits the same references (one config), so the report's "Reference audit" section survives a merge."""
    audits = [d / AUDIT_FILE for d in run_dirs if (d / AUDIT_FILE).is_file() and d.resolve() != out_dir.resolve()]
    if not audits:
        return
    newest = max(audits, key=lambda path: path.stat().st_mtime)
    target = out_dir / AUDIT_FILE
    if not target.is_file() or newest.stat().st_mtime > target.stat().st_mtime:
        shutil.copy2(newest, target)


def _copy_tree(source: Path, target: Path, pattern: str, *, strict: bool) -> int:
    """Copy files matching `pattern`; an existing identical file is skipped, a different one is an error."""
    copied = 0
    for path in sorted(source.glob(pattern)):
        destination = target / path.relative_to(source)
        if destination.exists():
            if filecmp.cmp(path, destination, shallow=False) or not strict:
                continue
            raise MergeError(
                f"{destination} already exists with other content than {path}; two sessions share a run id. "
                "Merge into an empty folder"
            )
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
        copied += 1
    return copied


def _merged_manifest(run_dirs: list[Path], manifests: list[RunManifest | None]) -> RunManifest:
    present = [m for m in manifests if m is not None]
    if not present:
        return RunManifest(run_name=run_dirs[0].name, config_hash="unknown", merged_from=[str(d) for d in run_dirs])
    first = present[0]
    sessions = {}
    judges: dict[str, set[str]] = {}
    for manifest in present:
        for session in manifest.sessions:
            sessions.setdefault(session.run_id, session)
        for name, versions in manifest.judges.items():
            judges.setdefault(name, set()).update(versions)
    merged_from = [m for manifest in present for m in manifest.merged_from] + [str(d) for d in run_dirs]
    return first.model_copy(
        update={
            "sessions": sorted(sessions.values(), key=lambda s: (s.started_at, s.run_id)),
            "judges": {k: sorted(v) for k, v in sorted(judges.items())},
            "merged_from": list(dict.fromkeys(merged_from)),
        }
    )
