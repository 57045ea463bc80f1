"""The report's "each criterion over training steps" view (the study's rank comparison), tooltips, legend
toggles, sortable and filterable tables and relative links; in a real browser where Chromium is installed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("jinja2")

from lora_harness.core.config import Threshold  # noqa: E402
from lora_harness.report.build import report_csvs  # noqa: E402
from lora_harness.report.from_csv import rows_from_csv  # noqa: E402
from lora_harness.report.html import build_html_report  # noqa: E402
from lora_harness.report.manifest import RunManifest  # noqa: E402
from lora_harness.report.plots import ALL_PROMPTS, criterion_plots  # noqa: E402
from report_rows import sweep_rows  # noqa: E402

STUDY_CSVS = sorted(Path("/work/shared/reference/seed_results").glob("res_*.csv"))


def panels(svg: str) -> list[str]:
    return svg.split('<g class="panel">')[1:]


def series_names(panel: str) -> list[str]:
    return re.findall(r'<g class="series" data-metric="[^"]*" data-series="([^"]*)"', panel)


@pytest.mark.skipif(len(STUDY_CSVS) != 5, reason="the study's five CSVs are not available")
def test_study_csvs_give_one_panel_per_criterion_with_the_five_variants_as_lines(tmp_path: Path) -> None:
    rows = [row for path in STUDY_CSVS for row in rows_from_csv(path)]
    metrics = sorted({row.metric for row in rows if row.value is not None})
    variants = sorted({row.loraname for row in rows})
    assert len(variants) == 5
    plots = criterion_plots(rows, metrics)
    assert plots[0].prompt_id == ALL_PROMPTS
    figure = panels(plots[0].svg)
    assert len(figure) == len(metrics)
    titles = [re.search(r'class="panel-title"[^>]*>([^<]*)<', p)[1] for p in figure]
    assert titles == metrics
    having = {m: sorted({r.loraname for r in rows if r.metric == m and r.value is not None}) for m in metrics}
    assert sum(len(v) == 5 for v in having.values()) >= 7  # the simpler-prompt question was not asked in one run
    for metric, panel in zip(metrics, figure):
        assert sorted(series_names(panel)) == having[metric]  # each variant that has the criterion is a line
        assert panel.count("<polyline") == len(having[metric])
    # the same view in the report built from the five CSVs, beside the per-LoRA trends
    html = report_csvs(STUDY_CSVS, tmp_path / "out").html.read_text()
    assert html.count('<figure class="plot criterion-plot"') == len(plots)
    assert 'id="criteria"' in html and 'id="trends"' in html


def test_every_point_has_a_tooltip_with_value_and_case(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    plots = criterion_plots(rows, ["eval_person_llm"])
    per_prompt = plots[1].svg
    circles = re.findall(r"<circle [^>]*>(.*?)</circle>", per_prompt)
    assert circles and all(c.startswith("<title>eval_person_llm = ") for c in circles)
    row = next(r for r in rows if r.prompt_id == "00" and r.metric == "eval_person_llm")
    assert f"<title>eval_person_llm = {row.value:.4g} · {row.case_key}</title>" in per_prompt
    assert "mean of 2 image(s) · lora-r4 step 200" in plots[0].svg  # all prompts: the mean per step
    legend = re.findall(r'<g class="legend-item" data-series="([^"]*)"', plots[0].svg)
    assert legend == ["lora-r32", "lora-r4"]


def test_image_link_is_relative_and_shows_the_relative_path(tmp_path: Path) -> None:
    rows = sweep_rows(tmp_path)
    html = build_html_report(rows, tmp_path / "out", title="t", source="s").read_text()
    links = re.findall(r'<dt>image</dt><dd><a href="([^"]+)" title="[^"]*">([^<]+)</a>', html)
    assert links and all(not href.startswith(("/", "file:")) and href.startswith("..") for href, _ in links)
    assert all(text == href.replace("%20", " ") or "%" not in href for href, text in links)


# --- in the browser -------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install 'lora-harness[dev]'")
    if not CHROMIUM or not shutil.which("chromedriver"):
        pytest.skip("headless Chromium not found (chromium and chromedriver on PATH); make test installs them")
    import test_report_browser

    tmp = tmp_path_factory.mktemp("criteria")
    manifest = RunManifest(run_name="browser", config_hash="c0ffee0123456789",
                           thresholds={"eval_person_llm": Threshold(image=0.5, checkpoint=0.5)})
    report = build_html_report(sweep_rows(tmp), tmp / "out", title="browser", source="test", manifest=manifest)
    driver_gen = test_report_browser.browser.__wrapped__()
    driver = next(driver_gen)
    driver.get(report.as_uri())
    yield driver
    driver_gen.close()


@pytest.mark.slow
def test_browser_legend_toggles_a_lora_and_points_carry_tooltips(page) -> None:
    from selenium.webdriver.common.by import By

    figure = page.find_element(By.CSS_SELECTOR, "#criteria figure.criterion-plot svg")
    assert figure.is_displayed()
    series = figure.find_elements(By.CSS_SELECTOR, ".series[data-series='lora-r4']")
    assert series and all(s.is_displayed() for s in series)
    item = figure.find_element(By.CSS_SELECTOR, ".legend-item[data-series='lora-r4']")
    page.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", item)
    assert not any(s.is_displayed() for s in series)
    assert all(s.is_displayed() for s in figure.find_elements(By.CSS_SELECTOR, ".series[data-series='lora-r32']"))
    page.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", item)
    assert all(s.is_displayed() for s in series)
    titles = page.execute_script(
        "return Array.from(document.querySelectorAll('#criteria circle')).map(c => c.querySelector('title') && c.querySelector('title').textContent)"
    )
    assert titles and all(t and re.match(r"^\w+ = -?[\d.e+-]+ · ", t) for t in titles)


@pytest.mark.slow
def test_browser_tables_sort_and_filter(page) -> None:
    from selenium.webdriver.common.by import By

    table = page.find_element(By.ID, "metric-table")
    header = table.find_elements(By.CSS_SELECTOR, "thead th")[2]  # the first metric column

    def column() -> list[float]:
        cells = page.execute_script(
            "return Array.from(arguments[0].querySelectorAll('tbody')[0].rows).filter(r => !r.classList.contains('lora-row'))"
            ".map(r => r.children[2].textContent.trim())", table)
        return [float(re.match(r"[!?]?([\d.]+)", c)[1]) for c in cells]

    header.click()
    assert header.get_attribute("aria-sort") == "ascending" and column() == sorted(column())
    header.click()
    assert header.get_attribute("aria-sort") == "descending" and column() == sorted(column(), reverse=True)
    box = page.find_element(By.CSS_SELECTOR, "input.table-filter[data-table='metric-table']")
    box.send_keys("lora-r4 400")
    visible = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
    assert [r.find_element(By.TAG_NAME, "th").text for r in visible] == ["lora-r4", "000400"]
    box.clear()
    box.send_keys(" ")  # an empty filter shows everything again
    assert len([r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]) == 8
