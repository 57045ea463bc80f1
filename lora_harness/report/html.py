"""`report.html`: one self-contained file with the verdict, the tables, trend plots and the image grid.

Built from score rows only (the store, or CSVs), never from judges. Everything a user or a judge wrote (prompt
text, LoRA names, justifications, raw values, error messages) goes through jinja2's autoescape; the only
markup inserted as is are the trend plots, themselves rendered from an autoescaped SVG template. No CDN, no
external JS or CSS: the file opens from disk, offline, years later.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence
from urllib.parse import quote, unquote

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from lora_harness.core.config import ReportConfig
from lora_harness.core.images import DEFAULT_PIXEL_LIMIT
from lora_harness.report.manifest import RunManifest, library_versions
from lora_harness.report.identity import identity_html
from lora_harness.report.plots import ALL_PROMPTS, criterion_plots, trend_plots
from lora_harness.report.scale_plots import scale_plots
from lora_harness.report.training_images import training_matches
from lora_harness.core.redact import Redactor
from lora_harness.report.thumbs import Thumbnail, start_thumbnails
from lora_harness.verdicts.outcome import verdicts_of
from lora_harness.report.view import ReportView, Rules, build_view
from lora_harness.run.store import ScoreRow

REPORT_NAME = "report.html"
TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class ReportOptions:
    images: Literal["embed", "link"] = "embed"
    thumbnail_px: int = 256
    pixel_limit: int = DEFAULT_PIXEL_LIMIT
    identity_map: Literal["pca", "tsne", "umap"] = "pca"

    @classmethod
    def of(cls, config: ReportConfig, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> "ReportOptions":
        return cls(images=config.images, thumbnail_px=config.thumbnail_px, pixel_limit=pixel_limit,
                   identity_map=config.identity_map)


@dataclass(frozen=True)
class ImageRef:
    """How the report shows one case's image: a thumbnail source (data URI or relative link) or why not."""

    src: str | None
    original: str | None  # relative link to the full image, when it exists where the report is built
    problem: str | None


@dataclass(frozen=True)
class BuildTimings:
    """Seconds per phase, for the benchmark and for spotting a slow report."""

    phases: dict[str, float] = field(default_factory=dict)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its suffix
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    env.filters["urldecode"] = unquote  # a relative link shown as the path it is
    return env


def format_number(value: float | None) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"


def build_html_report(
    rows: Sequence[ScoreRow],
    out_dir: Path,
    *,
    title: str,
    source: str,
    manifest: RunManifest | None = None,
    rules: Rules | None = None,
    options: ReportOptions | None = None,
    timings: BuildTimings | None = None,
    thumbnails: "Future[dict[str, Thumbnail]] | None" = None,
    run_dir: Path | None = None,
) -> Path:
    """Write `out_dir/report.html` (and thumbnails under `out_dir/thumbs/`); returns the report's path.

    Rules (thresholds, gate) default to the manifest's, so a rebuilt report gives the verdicts the run gave.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = timings if timings is not None else BuildTimings()
    if options is None:
        options = ReportOptions.of(manifest.report) if manifest else ReportOptions()
    if rules is None:
        rules = Rules.of_manifest(manifest) if manifest is not None else Rules()
    redactor = Redactor()

    # Thumbnails are made in the background (worker processes) while this process builds the view and plots.
    if thumbnails is None:
        thumbnails = start_report_thumbnails(rows, out_dir, options)
    started = time.perf_counter()
    view = build_view(rows, rules, redactor=redactor)
    if manifest is not None:
        view.test_verdicts = verdicts_of(manifest.latest_verdicts())
    timings.phases["view"] = time.perf_counter() - started

    started = time.perf_counter()
    plots = trend_plots(rows, view.metrics)
    criteria = criterion_plots(rows, view.metrics)
    strength_plots = scale_plots(rows, view.metrics)
    timings.phases["plots"] = time.perf_counter() - started

    training = training_matches(
        (
            (case.key, [(c.metric, c.value, c.training_image) for c in case.cells.values() if c.training_image])
            for case in view.cases
        ),
        out_dir, options.thumbnail_px, options.images, _relative_url, pixel_limit=options.pixel_limit,
    )

    started = time.perf_counter()
    images = _image_refs(view, out_dir, options, thumbnails.result())
    timings.phases["waiting for thumbnails"] = time.perf_counter() - started

    started = time.perf_counter()
    prompts = {case.prompt_id: case.prompt for case in view.cases if case.prompt}
    html = _environment().get_template("report.html.j2").render(
        title=redactor.text(title),
        source=redactor.text(source),
        generated_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        view=view,
        plots=plots,
        criteria=criteria,
        strength_plots=strength_plots,
        training=training,
        all_prompts=ALL_PROMPTS,
        prompts=prompts,
        images=images,
        manifest=manifest,
        libraries=manifest.libraries if manifest and manifest.libraries else library_versions(),
        libraries_from_run=bool(manifest and manifest.libraries),
        verdict=_verdict(view),
        options=options,
        identity=identity_html(rows, run_dir, projection=options.identity_map),  # reference audit, identity vs yaw, identity map (report/identity.py)
    )
    path = out_dir / REPORT_NAME
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    timings.phases["render"] = time.perf_counter() - started
    return path


def start_report_thumbnails(
    rows: Sequence[ScoreRow], out_dir: Path, options: ReportOptions
) -> "Future[dict[str, Thumbnail]]":
    """Start making the thumbnails a report of these rows needs (pass the future to build_html_report)."""
    images = {row.case_key: row.image for row in rows}
    return start_thumbnails(images.items(), out_dir, options.thumbnail_px, pixel_limit=options.pixel_limit)


def _verdict(view: ReportView) -> str:
    """The run's badge, by the verdict layer's one rule (never PASS when a gated decision is undecided)."""
    return view.badge


def _image_refs(
    view: ReportView, out_dir: Path, options: ReportOptions, thumbs: dict[str, Thumbnail]
) -> dict[str, ImageRef]:
    refs = {}
    for case in view.cases:
        thumb: Thumbnail = thumbs[case.key]
        original = _relative_url(Path(case.image), out_dir) if case.image and Path(case.image).is_file() else None
        if thumb.path is None:
            refs[case.key] = ImageRef(None, original, thumb.problem)
        elif options.images == "embed":
            refs[case.key] = ImageRef(thumb.data_uri(), original, None)
        else:
            refs[case.key] = ImageRef(_relative_url(thumb.file(), out_dir), original, None)  # a packed one written out
    return refs


def _relative_url(path: Path, start: Path) -> str:
    return quote(Path(os.path.relpath(path.resolve(), start.resolve())).as_posix())
