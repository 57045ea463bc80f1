"""report.html: verdicts, the checkpoint table, trend plots, images, escaping, CSV input and the CLI."""

from __future__ import annotations

import base64
import io
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("jinja2")

from lora_harness.cli.main import main  # noqa: E402
from lora_harness.core.config import BestConfig, Threshold  # noqa: E402
from lora_harness.report.build import report_csvs, report_run  # noqa: E402
from lora_harness.report.csv import ScoresCsvError, write_score_csvs  # noqa: E402
from lora_harness.report.from_csv import rows_from_csv  # noqa: E402
from lora_harness.report.html import ReportOptions, build_html_report  # noqa: E402
from lora_harness.report.manifest import RunManifest, SessionRecord, write_manifest  # noqa: E402
from lora_harness.report.plots import ALL_PROMPTS, rolling_means, score_frame, trend_plots  # noqa: E402
from lora_harness.core.redact import REDACTED  # noqa: E402
from lora_harness.report.view import Rules, build_view  # noqa: E402
from lora_harness.verdicts.stats import mean_ci  # noqa: E402
from lora_harness.run.store import latest_rows, read_rows  # noqa: E402
from report_rows import XSS, make_row, sweep_rows, write_store  # noqa: E402

STUDY = Path("/work/shared/reference/seed_results")
if not STUDY.is_dir():
    STUDY = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed_results"
STUDY_CSVS = sorted(STUDY.glob("res_*.csv"))
RULES = Rules(thresholds={"eval_person_llm": Threshold(image=0.5, checkpoint=0.5)}, gate="latest")


# --- the view: verdicts and the table ---------------------------------------------------------------------


def test_verdicts_follow_the_gate_rules_and_failures_come_first(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    rows.append(make_row("lora-r4", 600, "02", "eval_person_llm", None, error="llm: timeout"))
    view = build_view(rows, RULES)
    status = {c.key: c.status for c in view.cases}
    # step 200 (0.2) misses the 0.5 minimum but is not gated: xfail; step 600 is the gated latest: pass.
    assert status["lora-r4-step000200-p00-s42"] == "xfail"
    assert status["lora-r4-step000400-p00-s42"] == "pass"  # 0.5 is not below 0.5
    assert status["lora-r32-step000600-p01-s42"] == "pass"
    assert status["lora-r4-step000600-p02-s42"] == "error"
    assert view.failing_cases[0].key == "lora-r4-step000600-p02-s42"  # errors first, then gated, then xfail
    assert {c.status for c in view.failing_cases[1:]} == {"xfail"}
    assert view.case_counts == {"error": 1, "fail": 0, "incomplete": 0, "inconclusive": 0, "xfail": 4, "skipped": 0, "pass": 8}
    checkpoints = {c.key: c for c in view.checkpoints}
    assert checkpoints["lora-r4-step000200"].status == "xfail"
    # two images cannot show a 0.5 minimum is met at 98%: gated and inconclusive, so the run is not a PASS
    assert checkpoints["lora-r4-step000600"].gated and checkpoints["lora-r4-step000600"].status == "inconclusive"
    assert view.badge == "fail"  # the broken image (judge error) fails the run first
    assert view.judges == {"clip": ["2"], "llm": ["2"]}
    assert view.models == ["clip-vit-base-patch16", "gpt-4o"]
    assert view.cost.usd == pytest.approx(0.12)


def test_cost_counts_each_api_call_once_and_says_what_is_unpriced() -> None:
    call = {"id": "c1", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 50, "cost_usd": 0.003, "cached": False}
    rows = [  # one call answered two criteria; a cached answer; a call without a price
        make_row(metric="eval_person_llm", raw={"calls": [call]}),
        make_row(metric="eval_same_person_llm", raw={"calls": [call]}),
        make_row(step=400, raw={"calls": [{**call, "id": "c2", "cached": True}]}),
        make_row(step=600, raw={"calls": [{**call, "id": "c3", "cost_usd": None}]}),
    ]
    cost = build_view(rows).cost
    assert (cost.usd, cost.calls, cost.cached, cost.unpriced) == (pytest.approx(0.003), 2, 1, 1)
    assert (cost.prompt_tokens, cost.completion_tokens) == (2000, 100)
    assert build_view([make_row()]).cost.usd is None


def test_gated_failure_is_fail_and_gate_best_is_resolved_from_scores(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    latest = build_view(rows, Rules(thresholds={"eval_person_llm": Threshold(image=0.9)}, gate="latest"))
    assert {c.status for c in latest.cases if c.step == "000600"} == {"fail"}
    best = build_view(rows, Rules(gate="best", best=BestConfig(weights={"eval_person_llm": 1.0})))
    assert {c.key for c in best.checkpoints if c.gated} == {"lora-r4-step000600", "lora-r32-step000600"}
    assert any("best checkpoint of lora-r4" in line for line in best.best_lines)


def test_table_cells_hold_mean_ci_and_a_colour_scale(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    view = build_view(rows, RULES)
    by_key = {c.key: c for c in view.checkpoints}
    cell = by_key["lora-r4-step000200"].cells["clip_score"]
    expected = mean_ci([20.0, 20.0])
    assert (cell.mean, cell.n) == (expected.mean, 2)
    low, high = by_key["lora-r4-step000200"].cells["eval_person_llm"], by_key["lora-r32-step000600"].cells["eval_person_llm"]
    assert low.mean < high.mean
    # against the checkpoint minimum of 0.5: two images cannot decide either way at 98%
    assert (low.ok, low.undecided) == (True, True) and (high.ok, high.undecided) == (True, True)
    red = int(low.colour[1:3], 16) - int(low.colour[3:5], 16)
    green = int(high.colour[3:5], 16) - int(high.colour[1:3], 16)
    assert red > 0 and green > 0, (low.colour, high.colour)


def test_thumbnail_names_stay_apart_when_keys_differ_only_in_odd_characters() -> None:
    from lora_harness.report.thumbs import thumbnail_name

    names = {thumbnail_name(key) for key in ("my lora-step000200-p00", "my_lora-step000200-p00", "my/lora-step000200-p00")}
    assert len(names) == 3 and all(n.startswith("my_lora-step000200-p00-") and n.endswith(".jpg") for n in names)


def test_rolling_mean_averages_seeds_per_step_then_three_steps() -> None:
    frame = pd.DataFrame({
        "loraname": ["a"] * 5 + ["b"] * 2, "metric": ["m"] * 5 + ["m", "n"],
        "step": [200, 200, 400, 600, 800, 200, 200], "value": [0.0, 0.4, 0.5, 0.8, 1.1, 0.3, 0.9],
    })
    lines = rolling_means(frame)
    assert lines[("a", "m")].round(6).to_dict() == {200: 0.2, 400: 0.35, 600: 0.5, 800: 0.8}
    assert lines[("b", "m")].to_dict() == {200: 0.3} and lines[("b", "n")].to_dict() == {200: 0.9}


def test_trend_plots_one_figure_per_prompt_with_variants_side_by_side(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    plots = trend_plots(rows, ["eval_person_llm", "clip_score"])
    assert [p.prompt_id for p in plots] == [ALL_PROMPTS, "00", "01"]
    for plot in plots:
        assert plot.svg.startswith("<svg") and plot.svg.rstrip().endswith("</svg>")
        for text in ("lora-r4", "lora-r32", "eval_person_llm", "clip_score", "training step"):
            assert text in plot.svg
        # two LoRAs x two rows (0..1 scores, then CLIP score on its own scale) = four panels
        assert plot.svg.count('<g class="panel">') == 4
        assert plot.svg.count("<polyline") == 4  # a rolling-mean line per metric and LoRA
    assert score_frame(rows).shape[0] == len(rows)


# --- the HTML file ------------------------------------------------------------------------------------------


def build(tmp_path: Path, rows, **kwargs) -> str:
    path = build_html_report(rows, tmp_path / "out", title="t", source="s", rules=RULES, **kwargs)
    return path.read_text(encoding="utf-8")


def test_user_strings_are_escaped_everywhere(tmp_path: Path) -> None:
    evil_lora = "lora<img src=x onerror=alert(1)>"
    rows = sweep_rows(tmp_path, loras=(evil_lora,), steps=(200, 400))
    rows.append(make_row(evil_lora, 400, "00", "eval_limb_quality_llm", 0.1, prompt=XSS,
                         raw={"justification": "hands <b>bad</b> & fingers </template><script>alert(2)</script>"}))
    html = build(tmp_path, rows)
    assert html.count("<script") == 1  # the report's own, nothing a user wrote
    assert "alert('x')</script>" not in html and "<img src=x" not in html and "<b>bad</b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "hands &lt;b&gt;bad&lt;/b&gt; &amp; fingers &lt;/template&gt;" in html
    assert "lora&lt;img src=x onerror=alert(1)&gt;" in html  # in the SVG panel titles too


def test_report_is_self_contained_with_embedded_thumbnails(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    html = build(tmp_path, rows, options=ReportOptions(images="embed", thumbnail_px=48))
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html and "@import" not in html
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', html)
    assert len(uris) == 12  # one per image, nowhere duplicated
    with Image.open(io.BytesIO(base64.b64decode(uris[0]))) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 48
    assert html.count('<figure class="plot"') == 3 and html.count("<svg") >= 3
    assert 'id="metric-table"' in html and "face matches (lora-r4 200 00)" in html


def test_link_mode_points_to_thumbnail_files_next_to_the_report(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    html = build(tmp_path, rows, options=ReportOptions(images="link", thumbnail_px=32))
    links = re.findall(r'<img data-case="[^"]+" src="([^"]+)"', html)
    assert len(links) == 12 and "data:" not in "".join(links)
    for link in links:
        assert link.startswith("thumbs/32/") and (tmp_path / "out" / link).is_file()


def test_missing_images_get_a_placeholder_and_secrets_are_redacted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    rows = [make_row(image=str(tmp_path / "gone.png"), error="401 for key sk-test-secret-123", value=None,
                     raw={"justification": "Authorization: Bearer abcdefghijkl"})]
    html = build(tmp_path, rows)
    assert "sk-test-secret-123" not in html and "abcdefghijkl" not in html and REDACTED in html
    assert "image unavailable" in html and "image not found" in html


def test_metadata_lists_config_hash_sessions_judges_and_libraries(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    manifest = RunManifest(
        run_name="demo", config_hash="0123abcd4567ef89", thresholds={"eval_person_llm": Threshold(image=0.5)},
        judges={"llm": ["2"]}, libraries={"python": "3.11", "torch": "2.13.0"},
        sessions=[SessionRecord(run_id="r1", config_hash="0123abcd4567ef89", started_at="2026-01-01T00:00:00", host="ci-1", shard="1/2", scores=24)],
    )
    html = build_html_report(rows, tmp_path / "out", title="demo", source="reports/demo", manifest=manifest).read_text()
    for text in ("0123abcd4567ef89", "ci-1", "1/2", "torch 2.13.0", "llm 2", "clip 2", "gpt-4o", "$0.1200"):
        assert text in html, text


# --- CSV input ----------------------------------------------------------------------------------------------


def test_study_csv_rows_keep_repeated_samples_apart(tmp_path: Path) -> None:
    path = STUDY / "res_florencer16.csv"
    if not path.is_file():
        pytest.skip(f"the study's CSVs are not at {STUDY}")
    rows = rows_from_csv(path)
    frame = pd.read_csv(path)
    metrics = [c for c in frame.columns if c.startswith("eval_") or c == "clip_score"]
    assert len(rows) == int(frame[metrics].notna().sum().sum())
    keys = {r.case_key for r in rows}
    assert len(keys) == len(frame)  # 57 (step, prompt) pairs were sampled twice; each image stays a case
    assert "personal-lora-fluxdev-florence2-r16-step000200-p00-t20250107135323" in keys
    first = next(r for r in rows if r.case_key.endswith("step001400-p01-t20250107084013"))  # the first data line
    assert (first.training_step, first.metric, first.value) == (1400, "eval_person_llm", 1.0)


def test_our_csvs_round_trip_into_the_same_rows(tmp_path: Path) -> None:
    rows = latest_rows(sweep_rows(tmp_path))
    wide, long = write_score_csvs(rows, tmp_path)
    expected = {(r.case_key, r.metric): r.value for r in rows}
    assert {(r.case_key, r.metric): r.value for r in rows_from_csv(wide)} == expected
    from_long = rows_from_csv(long)
    assert {(r.case_key, r.metric): r.value for r in from_long} == expected
    assert {r.raw.get("textual_justification") for r in from_long} >= {"face matches (lora-r4 200 00)"}


def test_bad_csv_names_the_file_line_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("loraname,training_step,prompt_id,timestamp,clip_score\nx,001200,00,1,30.5\nx,step12,00,1,31\n")
    with pytest.raises(ScoresCsvError, match=r"bad\.csv:3: training_step 'step12' is not a step number"):
        rows_from_csv(bad)
    (tmp_path / "ids.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ScoresCsvError, match="missing column"):
        rows_from_csv(tmp_path / "ids.csv")


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDY_CSVS, ids=[p.stem for p in STUDY_CSVS])
def test_every_study_csv_renders_with_trend_plots(path: Path, tmp_path: Path) -> None:
    files = report_csvs([path], tmp_path / path.stem)
    html = files.html.read_text()
    prompts = sorted(pd.read_csv(path, dtype=str)["prompt_id"].unique())
    assert html.count('<figure class="plot"') == 1 + len(prompts)
    assert html.count("<svg") >= 1 + len(prompts)
    assert html.count(">no image<") == len(pd.read_csv(path))  # a placeholder per sample image
    assert 'id="metric-table"' in html and "clip_score" in html


# --- the CLI ------------------------------------------------------------------------------------------------


def test_cli_report_rebuilds_csv_and_html_from_the_store(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "reports" / "demo"
    write_store(run_dir, sweep_rows(tmp_path))
    write_manifest(run_dir, RunManifest(run_name="demo", config_hash="feedface00000000",
                                        thresholds={"eval_person_llm": Threshold(image=0.5, checkpoint=0.5)}))
    assert main(["report", str(run_dir), "--images", "link", "--thumbnail-px", "40"]) == 0
    out = capsys.readouterr().out
    assert "24 scores" in out and "report.html" in out
    html = (run_dir / "report.html").read_text()
    assert "feedface00000000" in html and 'src="thumbs/40/' in html
    assert ">xfail<" in html  # verdicts from the manifest's thresholds, without the config
    assert len(pd.read_csv(run_dir / "scores.csv")) == 12


def test_cli_report_from_csv_writes_to_out(tmp_path: Path, capsys) -> None:
    rows = latest_rows(sweep_rows(tmp_path))
    wide, _ = write_score_csvs(rows, tmp_path / "csv")
    assert main(["report", "--from-csv", str(wide), "--out", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.count('<figure class="plot"') == 3 and "data:image/jpeg;base64," in html  # images from the CSV


def test_cli_report_errors_are_actionable(tmp_path: Path, capsys) -> None:
    assert main(["report"]) == 2
    assert "either a run folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no scores under" in capsys.readouterr().err
    assert main(["report", "--from-csv", str(tmp_path / "nope.csv")]) == 2
    assert "scores CSV not found" in capsys.readouterr().err
    (tmp_path / "run.json").write_text("{not json")
    write_store(tmp_path, [make_row()])
    assert main(["report", str(tmp_path)]) == 2
    assert "not a valid run manifest" in capsys.readouterr().err


def test_rebuilding_reuses_cached_thumbnails(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rows = sweep_rows(tmp_path)
    write_store(run_dir, rows)
    report_run(run_dir, options=ReportOptions(thumbnail_px=32))
    thumbs = sorted((run_dir / "thumbs" / "32").glob("*.jpg"))
    stamps = [p.stat().st_mtime_ns for p in thumbs]
    shutil.rmtree(tmp_path / "images")  # originals gone: the cached thumbnails still show
    html = report_run(run_dir, options=ReportOptions(thumbnail_px=32)).html.read_text()
    assert [p.stat().st_mtime_ns for p in thumbs] == stamps and len(thumbs) == 12
    assert html.count("data:image/jpeg;base64,") == 12
    assert not math.isnan(build_view(rows).checkpoints[0].cells["clip_score"].mean)


# --- end to end: `pytest evals` writes the report -----------------------------------------------------------

SUITE_TEST = '''
def test_image(lora_case, lora_gate):
    lora_gate.check_image(lora_case)


def test_checkpoint(lora_checkpoint, lora_gate):
    lora_gate.check_checkpoint(lora_checkpoint)
'''


@pytest.mark.slow
def test_pytest_run_writes_report_manifest_and_prints_the_path(pytester: pytest.Pytester) -> None:
    from lora_harness.core.config import load_config
    from lora_harness.report.manifest import config_hash, read_manifest

    demo = Path(__file__).resolve().parents[1] / "fixtures" / "demo" / "samples" / "personal-lora-demo-r32"
    shutil.copytree(demo, pytester.path / "samples" / "r32")
    config = pytester.path / "lora_eval.toml"
    config.write_text(
        '[run]\nname = "e2e"\nreport_dir = "reports"\n\n[[sources]]\npath = "samples/r32"\n\n'
        '[[judges]]\nname = "image_stats"\n\n[thresholds.spectral_score]\nimage = 0.5\ncheckpoint = 0.6\n\n'
        '[report]\nimages = "link"\nthumbnail_px = 64\n'
    )
    (pytester.path / "test_lora.py").write_text(SUITE_TEST)
    result = pytester.runpytest_subprocess("--lora-config", str(config), "-p", "no:cacheprovider", "--lora-progress", "0")
    result.assert_outcomes(passed=8, xfailed=8)  # steps 200 and 600 miss the spectral minimum, ungated
    run_dir = pytester.path / "reports" / "e2e"
    result.stdout.fnmatch_lines([
        "lora-harness judging: 1/4 checkpoints (3/12 images), last personal-lora-demo-r32-step000200, *",
        "*lora-harness judging: 4/4 checkpoints (12/12 images), *, done",
        f"report: {run_dir / 'report.html'}",
    ])
    manifest = read_manifest(run_dir)
    assert manifest.config_hash == config_hash(load_config(config))
    assert manifest.judges == {"image_stats": ["1"]} and manifest.sessions[0].exit_status == 0
    assert manifest.sessions[0].scores == 24 and manifest.sessions[0].gated == ["personal-lora-demo-r32-step000800"]

    rows = latest_rows(read_rows(run_dir))
    view = build_view(rows, Rules.of_manifest(manifest))
    passed = view.case_counts["pass"] + view.checkpoint_counts["pass"]
    xfailed = view.case_counts["xfail"] + view.checkpoint_counts["xfail"]
    assert (passed, xfailed) == (8, 8)  # the report's verdicts are pytest's
    html = (run_dir / "report.html").read_text()
    assert html.count('src="thumbs/64/') == 12 and manifest.config_hash in html
    assert len(list((run_dir / "thumbs" / "64").glob("*.jpg"))) == 12


@pytest.mark.slow
def test_many_thumbnails_are_made_in_worker_processes(tmp_path: Path, monkeypatch) -> None:
    from lora_harness.report import thumbs
    from report_rows import write_image

    monkeypatch.setattr(thumbs, "PROCESS_THRESHOLD", 4)  # the real threshold is 64 images

    def in_this_process(*args: object) -> None:
        raise AssertionError("a thumbnail was made in the test's own process, not in a worker")

    # Spawned workers import the module afresh (the real `_make`); only this process sees the tripwire.
    monkeypatch.setattr(thumbs, "_make", in_this_process)
    items = [(f"case-{i}", str(write_image(tmp_path / f"{i}.png", i, size=96))) for i in range(6)]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    items.append(("case-broken", str(tmp_path / "broken.png")))
    made = thumbs.build_thumbnails(items, tmp_path / "run", 48, processes=2)
    for key, _ in items[:-1]:
        with Image.open(made[key].path) as thumb:
            assert thumb.format == "JPEG" and thumb.size == (48, 48)
    assert made["case-broken"].path is None and "cannot decode" in made["case-broken"].problem


def test_report_config_section_is_validated(tmp_path: Path) -> None:
    from lora_harness.core.config import ConfigError, load_config

    (tmp_path / "samples").mkdir()
    config = tmp_path / "lora_eval.toml"
    config.write_text('[[sources]]\npath = "samples"\n\n[[judges]]\nname = "image_stats"\n\n[report]\nimages = "inline"\nthumbnail_px = 8\n')
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert "report.images" in str(error.value) and "'embed' or 'link'" in str(error.value)
    assert "report.thumbnail_px" in str(error.value) and "greater than or equal to 32" in str(error.value)
    config.write_text('[[sources]]\npath = "samples"\n\n[[judges]]\nname = "image_stats"\n\n[report]\nimage = "link"\n')
    with pytest.raises(ConfigError, match="did you mean 'images'"):
        load_config(config)
