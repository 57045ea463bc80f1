"""`--lora-shard i/N` and `lora-harness merge`: split deterministically, merge back to exactly the unsharded run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("jinja2")

from lora_harness.cli.main import main  # noqa: E402
from lora_harness.core.config import load_config  # noqa: E402
from lora_harness.report.manifest import RunManifest, SessionRecord, config_hash, read_manifest, write_manifest  # noqa: E402
from lora_harness.report.merge import MergeError, merge_runs  # noqa: E402
from lora_harness.report.thumbs import thumbnail_name, thumbs_dir  # noqa: E402
from lora_harness.run.sharding import Shard, ShardError, assign, split  # noqa: E402
from lora_harness.run.store import latest_rows, read_rows  # noqa: E402
from report_rows import make_row, write_image, write_store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"


# --- sharding -----------------------------------------------------------------------------------------------


def test_shard_spec_parses_and_rejects_with_the_fix() -> None:
    assert Shard.parse("2/3") == Shard(2, 3) and str(Shard.parse(" 1 / 4 ")) == "1/4"
    for bad, message in (("3", "expected i/N"), ("0/2", "between 1 and N"), ("3/2", "between 1 and N"), ("a/b", "i/N")):
        with pytest.raises(ShardError, match=message):
            Shard.parse(bad)


def test_assignment_is_balanced_stable_and_order_independent() -> None:
    keys = [f"lora-step{step:06d}" for step in range(200, 2200, 200)]
    shards = assign(keys, 3)
    assert sorted(shards.values()).count(1) == 4 and sorted(shards.values()).count(3) == 3
    assert assign(list(reversed(keys)), 3) == shards  # collection order does not matter
    assert assign(keys, 3) == shards  # no salted hash(): the same on every machine and every run


def test_split_keeps_groups_whole_and_covers_everything_once() -> None:
    items = [(f"ck{i % 5}", n) for n, i in enumerate(range(20))] + [(None, "plain test")]
    parts = [split(items, Shard(i, 3), key_of=lambda item: item[0]) for i in (1, 2, 3)]
    selected = [set(sel) for sel, _ in parts]
    assert all((None, "plain test") in s for s in selected)  # a test of no checkpoint runs on every shard
    cases = [s - {(None, "plain test")} for s in selected]
    assert set().union(*cases) == set(items[:-1]) and sum(len(s) for s in cases) == 20
    for chosen in cases:  # every checkpoint's items land on one shard together
        groups = {key for key, _ in chosen}
        assert all((key, n) in chosen for key, n in items[:-1] if key in groups)


# --- config hash --------------------------------------------------------------------------------------------


def _config_tree(root: Path, threshold: float = 0.5, name: str = "demo", images: str = "embed") -> Path:
    shutil.copytree(DEMO / "samples" / "personal-lora-demo-r4", root / "samples" / "r4", dirs_exist_ok=True)
    (root / "lora_eval.toml").write_text(
        f'[run]\nname = "{name}"\nreport_dir = "out-{name}"\n\n[[sources]]\npath = "samples/r4"\n\n'
        f'[[judges]]\nname = "image_stats"\n\n[thresholds.spectral_score]\nimage = {threshold}\n\n'
        f'[report]\nimages = "{images}"\n'
    )
    return root / "lora_eval.toml"


def test_config_hash_is_machine_independent_and_tracks_what_decides_scores(tmp_path: Path) -> None:
    a = config_hash(load_config(_config_tree(tmp_path / "machine-a")))
    b = config_hash(load_config(_config_tree(tmp_path / "elsewhere" / "machine-b", name="other", images="link")))
    assert a == b  # other checkout path, run name, report folder and [report]: same evaluation
    assert config_hash(load_config(_config_tree(tmp_path / "c", threshold=0.6))) != a


# --- merge --------------------------------------------------------------------------------------------------


def _run(root: Path, name: str, keys: list[tuple[int, str]], *, config: str = "hash-a", run_id: str) -> Path:
    run_dir = root / name
    rows = []
    for step, prompt in keys:
        image = write_image(root / "images" / f"{step}-{prompt}.png", step + int(prompt))
        rows += [make_row("lora", step, prompt, "eval_person_llm", step / 1000, image=str(image), run_id=run_id),
                 make_row("lora", step, prompt, "clip_score", 20 + step / 100, image=str(image), run_id=run_id)]
    write_store(run_dir, rows, run_id=run_id)
    write_manifest(run_dir, RunManifest(
        run_name="sweep", config_hash=config, judges={"llm": ["2"]},
        sessions=[SessionRecord(run_id=run_id, config_hash=config, started_at=f"2026-01-01T00:00:0{run_id[-1]}", shard=name)],
    ))
    return run_dir


def values(run_dir: Path) -> dict[tuple[str, str], float | None]:
    return {(r.case_key, r.metric): r.value for r in latest_rows(read_rows(run_dir))}


def test_merge_combines_scores_sessions_and_thumbnails(tmp_path: Path) -> None:
    one = _run(tmp_path, "s1", [(200, "00"), (200, "01")], run_id="run1")
    two = _run(tmp_path, "s2", [(400, "00"), (400, "01")], run_id="run2")
    from lora_harness.report.build import report_run
    from lora_harness.report.html import ReportOptions

    report_run(two, options=ReportOptions(thumbnail_px=64))  # shard 2 made thumbnails on its machine
    shutil.rmtree(tmp_path / "images")  # ... and its originals are not on this one
    result = merge_runs([one, two], tmp_path / "merged", options=ReportOptions(thumbnail_px=64))
    assert values(tmp_path / "merged") == {**values(one), **values(two)}
    assert result.score_files == 2 and {s.run_id for s in result.manifest.sessions} == {"run1", "run2"}
    assert read_manifest(tmp_path / "merged").merged_from == [str(one), str(two)]
    html = result.report.html.read_text()
    assert html.count("data:image/jpeg;base64,") == 2  # shard 2's copied thumbnails; shard 1's images are gone
    assert html.count("image unavailable") == 2
    assert sorted(p.name for p in thumbs_dir(tmp_path / "merged", 64).glob("*.jpg")) == sorted(
        thumbnail_name(f"lora-step000400-p{p}-s42") for p in ("00", "01"))
    assert len(pd.read_csv(tmp_path / "merged" / "scores.csv")) == 4


def test_merge_carries_the_reference_audit(tmp_path: Path) -> None:
    """Only the shard that ran the reference test has the audit; the merged report still shows it."""
    from lora_harness.analyses.reference_audit import AuditEntry, ReferenceAudit
    from lora_harness.report.identity import read_audit, write_audit

    one = _run(tmp_path, "s1", [(200, "00")], run_id="run1")
    two = _run(tmp_path, "s2", [(400, "00")], run_id="run2")
    stranger = AuditEntry("refs/stranger.png", face_px=120, loo_distance=0.81, reasons=["other person"],
                          details=["distance 0.81 to the other photos' mean face"])
    write_audit(two, ReferenceAudit([AuditEntry("refs/a.png", face_px=140, loo_distance=0.2), stranger], [], "dlib", 0.6, 80, 0.97))
    result = merge_runs([one, two], tmp_path / "merged")
    merged = read_audit(tmp_path / "merged")
    assert merged is not None and [e.path for e in merged.outliers] == ["refs/stranger.png"]
    assert "stranger.png" in result.report.html.read_text()


def test_merge_refuses_different_configs_unless_forced(tmp_path: Path) -> None:
    one = _run(tmp_path, "s1", [(200, "00")], run_id="run1")
    two = _run(tmp_path, "s2", [(400, "00")], config="hash-b", run_id="run2")
    with pytest.raises(MergeError, match=r"different configs .*s1: hash-a; .*s2: hash-b.*--force"):
        merge_runs([one, two], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()  # nothing written when refused
    forced = merge_runs([one, two], tmp_path / "merged", force=True)
    assert forced.manifest.config_hashes == {"hash-a", "hash-b"}
    assert "mixed configs: hash-a, hash-b" in forced.report.html.read_text()


def test_merge_errors_name_the_folder_and_the_fix(tmp_path: Path, capsys) -> None:
    one = _run(tmp_path, "s1", [(200, "00")], run_id="run1")
    bare = _run(tmp_path, "bare", [(400, "00")], run_id="run2")
    (bare / "run.json").unlink()
    with pytest.raises(MergeError, match=r"no run manifest \(run.json\) in .*bare.*--force"):
        merge_runs([one, bare], tmp_path / "m1")
    with pytest.raises(MergeError, match="no scores under"):
        merge_runs([one, tmp_path / "empty"], tmp_path / "m2")
    with pytest.raises(MergeError, match="already holds scores of another run"):
        merge_runs([bare], one, force=True)
    assert main(["merge", str(one), str(bare), "--out", str(tmp_path / "m3")]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["merge", str(one), str(bare), "--out", str(tmp_path / "m3"), "--force"]) == 0
    assert "merged 2 run(s), 2 score file(s) copied, 4 scores" in capsys.readouterr().out


def test_merging_into_one_of_the_inputs_adds_to_it(tmp_path: Path) -> None:
    one = _run(tmp_path, "s1", [(200, "00")], run_id="run1")
    two = _run(tmp_path, "s2", [(400, "00")], run_id="run2")
    merge_runs([one, two], one)
    assert values(one) == {**values(tmp_path / "s2"), **{k: v for k, v in values(one).items() if "step000200" in k[0]}}
    assert len(values(one)) == 4


# --- end to end: two shards merged equal the unsharded run --------------------------------------------------

SUITE_TEST = '''
def test_image(lora_case, lora_gate):
    lora_gate.check_image(lora_case)


def test_checkpoint(lora_checkpoint, lora_gate):
    lora_gate.check_checkpoint(lora_checkpoint)
'''


def _suite(root: Path) -> Path:
    config = _config_tree(root, name="unused")
    (root / "test_lora.py").write_text(SUITE_TEST)
    return config


def _pytest(pytester: pytest.Pytester, config: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--lora-config", str(config), "--lora-report-dir", str(pytester.path / "reports"), "-p", "no:cacheprovider", *args
    )


@pytest.mark.slow
def test_two_shards_merged_equal_the_unsharded_run(pytester: pytest.Pytester) -> None:
    config = _suite(pytester.path)
    full = _pytest(pytester, config, "--lora-run-name", "full")
    full.assert_outcomes(passed=10, xfailed=6)  # 12 images + 4 checkpoints; steps 200 and 600 miss the minimum
    first = _pytest(pytester, config, "--lora-run-name", "shard1", "--lora-shard", "1/2")
    second = _pytest(pytester, config, "--lora-run-name", "shard2", "--lora-shard", "2/2", "-n", "2")
    counts = [sum(r.parseoutcomes().get(k, 0) for k in ("passed", "xfailed")) for r in (first, second)]
    assert counts == [8, 8]  # two of the four checkpoints each, images and aggregate together
    assert first.parseoutcomes()["deselected"] == 8
    second.stdout.fnmatch_lines(["2 workers [[]8 items[]]"])  # xdist workers deselect; the controller counts 8

    reports = pytester.path / "reports"
    shard_cases = [{key for key, _ in values(reports / name)} for name in ("shard1", "shard2")]
    assert not shard_cases[0] & shard_cases[1]
    assert read_manifest(reports / "shard1").sessions[0].shard == "1/2"
    for result in (first, second):  # the terminal table marks only the sweep's latest checkpoint as gated
        assert not re.search(r"\* personal-lora-demo-r4 000[246]00", result.stdout.str())
    for name in ("shard1", "shard2"):  # gating knows every checkpoint, not just the shard's own
        assert read_manifest(reports / name).sessions[0].gated == ["personal-lora-demo-r4-step000800"]
        html = (reports / name / "report.html").read_text()
        assert "<th>* 000200" not in html and "<th>* 000400" not in html and "<th>* 000600" not in html
    assert read_manifest(reports / "shard1").config_hash == read_manifest(reports / "full").config_hash

    assert main(["merge", str(reports / "shard1"), str(reports / "shard2"), "--out", str(reports / "merged")]) == 0
    assert values(reports / "merged") == values(reports / "full")  # same case keys, same values
    merged = pd.read_csv(reports / "merged" / "scores.csv").drop(columns=["run_id"])
    unsharded = pd.read_csv(reports / "full" / "scores.csv").drop(columns=["run_id"])
    pd.testing.assert_frame_equal(merged, unsharded)
    html = (reports / "merged" / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 12 and "1/2" in html and "2/2" in html


@pytest.mark.slow
def test_bad_shard_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    config = _suite(pytester.path)
    result = _pytest(pytester, config, "--lora-shard", "3/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lora-shard '3/2': i must be between 1 and N*"])
    assert not (pytester.path / "reports" / "unused" / "scores").exists()


def test_manifest_round_trips(tmp_path: Path) -> None:
    manifest = RunManifest(run_name="x", config_hash="abc", sessions=[SessionRecord(run_id="r", config_hash="abc", started_at="t")])
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert json.loads((tmp_path / "run.json").read_text())["schema_version"] == 1
