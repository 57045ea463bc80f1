"""The LoRA-specific checks in report.html: the strength sweep's metric-vs-scale plot and the training image
a memorization score matched, shown next to the generated image."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import replace
from pathlib import Path

from PIL import Image

from lora_harness.core.config import Threshold
from lora_harness.report.html import ReportOptions, build_html_report
from lora_harness.report.scale_plots import scale_plots, split_scale_name
from lora_harness.report.view import Rules
from lora_harness.run.store import ScoreRow
from report_rows import XSS, make_row, write_image

METRIC = "memorization_clip_i_max"


def strength_rows(lora: str = "my-lora", steps=(200, 400)) -> list[ScoreRow]:
    """Identity rising with scale; two seeds per scale; an older step with other values (must not be plotted)."""
    rows = []
    for step in steps:
        for scale in (0, 0.5, 1.0):
            for seed, jitter in ((1, -0.02), (2, 0.02)):
                identity = (0.1 + 0.6 * scale if step == max(steps) else 0.9) + jitter
                row = make_row(f"{lora}-scale{scale:g}", step, "S00", "face_identity_max", round(identity, 4),
                               seed=seed, judge="face_identity")
                rows.append(replace(row, variant="strength"))
    return rows


def build(tmp_path: Path, rows, **options) -> str:
    path = build_html_report(rows, tmp_path / "out", title="t", source="s", rules=Rules(),
                             options=ReportOptions(**options) if options else None)
    return path.read_text(encoding="utf-8")


def test_scale_names_parse_and_other_names_do_not() -> None:
    assert split_scale_name("personal-lora-x-scale0.8") == ("personal-lora-x", 0.8)
    assert split_scale_name("a-scale0") == ("a", 0.0) and split_scale_name("a-scale1e-05") == ("a", 1e-05)
    assert split_scale_name("a-leakage") is None and split_scale_name("a-scalebig") is None


def test_scale_plot_means_per_scale_at_the_latest_step() -> None:
    rows = strength_rows()
    rows.append(make_row("plain-lora-scale0.5", 400, "00", "face_identity_max", 0.3))  # not a strength variant
    plots = scale_plots(rows, ["face_identity_max"])
    assert [(p.lora, p.metric, p.step) for p in plots] == [("my-lora", "face_identity_max", 400)]
    plot = plots[0]
    assert plot.scales == (0.0, 0.5, 1.0)
    assert [round(m, 4) for m in plot.means] == [0.1, 0.4, 0.7]  # the step-200 values (0.9) are left out
    assert scale_plots([make_row()], ["eval_person_llm"]) == []


def test_report_shows_metric_vs_scale_only_when_strength_rows_exist(tmp_path: Path) -> None:
    html = build(tmp_path, strength_rows(lora=XSS))
    section = html[html.index('<section id="strength"'):html.index('<section id="grid"')]
    svgs = re.findall(r"<svg.*?</svg>", section, re.S)
    assert len(svgs) == 1 and "LoRA scale" in svgs[0]
    ticks = re.findall(r'text-anchor="middle" fill="#333">([^<]+)</text>', svgs[0])
    assert {"0", "0.5", "1"} <= set(ticks)
    assert "face_identity_max vs LoRA scale" in svgs[0] and "step 400" in svgs[0]
    # three mean points on a polyline, rising with scale (SVG y grows downwards)
    points = re.search(r'<polyline points="([^"]+)"', svgs[0])[1].split()
    ys = [float(p.split(",")[1]) for p in points]
    assert len(ys) == 3 and ys[0] > ys[1] > ys[2]
    assert "<script>alert" not in section and "&lt;script&gt;" in section
    assert 'href="#strength"' in html

    plain = build(tmp_path / "plain", [make_row()])
    assert 'id="strength"' not in plain and 'href="#strength"' not in plain


def memorization_rows(tmp_path: Path, training: str) -> list[ScoreRow]:
    generated = write_image(tmp_path / "gen" / "copy.png", seed=1)
    raw = {"training_image": training, "closest_training_images": {training: 0.98}}
    return [make_row("lora-r4", 400, "00", METRIC, 0.98, image=str(generated), raw=raw, judge="memorization")]


def _details(html: str) -> str:
    return re.search(r'<template id="d-c-[^"]+">(.*?)</template>', html, re.S)[1]


def test_memorization_case_shows_its_training_image_next_to_the_generated_one(tmp_path: Path) -> None:
    training = write_image(tmp_path / "train" / "photo <01>.png", seed=7, size=80)
    rows = memorization_rows(tmp_path, str(training))
    # any finding puts the case in the failing-first list; a per-image minimum is the simplest to set up
    rules = Rules(thresholds={METRIC: Threshold(image=0.99)}, gate="all")
    path = build_html_report(rows, tmp_path / "out", title="t", source="s", rules=rules,
                             options=ReportOptions(images="embed", thumbnail_px=40))
    html = path.read_text(encoding="utf-8")
    failing = html[html.index('<table class="failing-cases"'):html.index('<section id="table">')]
    for part in (_details(html), failing):
        pair = re.search(r'<div class="memorization-pair">(.*?)</div>', part, re.S)[1]
        generated, train = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', pair)
        with Image.open(io.BytesIO(base64.b64decode(train))) as thumb:
            assert max(thumb.size) == 40 and thumb.size == (40, 40)
        assert generated != train
        assert "photo &lt;01&gt;.png" in pair and "photo <01>" not in pair  # the path is escaped
        assert f"{METRIC} = 0.980" in pair


def test_memorization_link_mode_links_the_training_thumbnail(tmp_path: Path) -> None:
    training = write_image(tmp_path / "train" / "a.png", seed=7)
    html = build(tmp_path, memorization_rows(tmp_path, str(training)), images="link", thumbnail_px=32)
    src = re.search(r'<figure class="training-image"><img src="([^"]+)"', html)[1]
    assert src.startswith("thumbs/32/") and (tmp_path / "out" / src).is_file()


def test_missing_or_broken_training_image_renders_a_placeholder_with_its_path(tmp_path: Path) -> None:
    gone = str(tmp_path / "train" / "gone<x>.png")
    html = build(tmp_path, memorization_rows(tmp_path, gone))
    details = _details(html)
    assert "training image unavailable: " + gone.replace("<", "&lt;").replace(">", "&gt;") in details
    assert "image not found" in details and 'class="training-image"><img' not in details

    broken = tmp_path / "train" / "broken.png"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"not a png")
    html = build(tmp_path / "b", memorization_rows(tmp_path, str(broken)))
    assert "training image unavailable: " + str(broken) in html and "cannot decode" in html
