"""A run with references, end to end in a pytest subprocess, then its report.html in headless Chromium:
the reference audit (a planted LFW stranger flagged), identity vs |yaw|, diversity over training steps
(collapsed step 200 fails, varied step 400 passes) and the identity map with hover images, as one offline
file. Real public-domain faces only (scikit-image's astronaut and LFW subset)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_images import astronaut, lfw_face

pytestmark = pytest.mark.slow
pytest.importorskip("dlib", reason="the identity report needs the `face` extra")

REPO = Path(__file__).resolve().parents[1]
LORA = "person-lora"


def resized(rgb: np.ndarray, side: int = 320) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("RGB").resize((side, side)))


def collapsed(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    base = resized(astronaut()[0:400, 100:500], 328)
    out = []
    for _ in range(n):
        dx, dy = rng.integers(0, 5, size=2)
        crop = base[dy:dy + 320, dx:dx + 320].astype(np.int16) + rng.integers(-5, 6, size=(320, 320, 3))
        out.append(np.clip(crop, 0, 255).astype(np.uint8))
    return out


def varied() -> list[np.ndarray]:
    a = astronaut()
    return [resized(a[0:300, 120:420]), resized(a[:, ::-1][0:420, 40:460]), resized(a), resized(lfw_face(74, face_px=140))]


def make_suite(root: Path) -> Path:
    samples = root / "samples" / LORA
    samples.mkdir(parents=True)
    (samples / "sample_prompts.txt").write_text("".join(f"<phigep> portrait {i} --d 42\n" for i in range(4)))
    for step, images in ((200, collapsed(4)), (400, varied())):
        for i, image in enumerate(images):
            Image.fromarray(image).save(samples / f"{LORA}_{step:06d}_{i:02d}_20250106170134.png")
    refs = root / "refs"
    refs.mkdir()
    a = astronaut()
    for i, (t, b, l, r) in enumerate([(0, 400, 100, 500), (20, 340, 150, 470), (0, 512, 0, 512)]):
        Image.fromarray(resized(a[t:b, l:r], 512)).save(refs / f"astronaut_{i}.png")
    Image.fromarray(lfw_face(74, face_px=140)).save(refs / "stranger.png")
    for name in ("test_references.py", "test_lora_checks.py"):
        shutil.copy(REPO / "evals" / name, root / name.replace("test_", "test_suite_"))
    (root / "lora_eval.toml").write_text(
        f'[run]\nname = "identity"\nreport_dir = "reports"\n\n[[sources]]\npath = "{samples}"\n\n'
        f'[person]\nreferences = ["{refs}"]\n\n[[judges]]\nname = "face_identity"\n\n[gate]\ncheckpoints = "all"\n\n'
        "[diversity]\nmin = { diversity_image = 0.1 }\n"
    )
    return root / "reports" / "identity" / "report.html"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("identity")
    path = make_suite(root)
    # the suite's own file, so face_identity scores every image (the per-image test adds the face rows)
    (root / "test_suite_images.py").write_text("def test_image(lora_scores):\n    assert 'face_detected' in lora_scores\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--lora-config", str(root / "lora_eval.toml"), "-p", "no:cacheprovider",
         "-p", "no:xdist", "-q", "-rA", str(root)],
        cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600,
    )
    return path, result.stdout + result.stderr


def test_the_run_fails_the_planted_stranger_and_the_collapsed_checkpoint(report) -> None:
    _, output = report
    assert re.search(r"FAILED .*test_reference_photos", output), output
    assert "stranger.png" in output and "OUTLIER: other person" in output
    assert re.search(r"FAILED .*test_diversity\[person-lora-step000200\]", output), output
    assert re.search(r"PASSED .*test_diversity\[person-lora-step000400\]", output), output


def test_report_holds_audit_yaw_diversity_and_map_offline(report) -> None:
    path, output = report
    page = path.read_text(encoding="utf-8")
    assert 'id="reference-audit"' in page and "stranger.png" in page and 'class="audit-outlier"' in page
    assert 'id="identity-vs-yaw"' in page and 'id="identity-map-plot"' in page
    assert "diversity_image" in page and "vendi_image" in page  # checkpoint rows: in the table and trend plots
    assert not re.search(r"""(src|href)=["']https?://""", page)  # one offline file
    yaw_svg = page[page.index('id="identity-vs-yaw"'):].split("</svg>")[0]
    assert yaw_svg.count("<circle") == 8, yaw_svg.count("<circle")  # every generated image has a face
    map_svg = page[page.index('id="identity-map-plot"'):].split("</svg>")[0]
    assert map_svg.count("<circle") == 8 and map_svg.count('<rect x="') - map_svg.count('class="legend"') == 4  # + 4 refs
    assert map_svg.count('class="hover-image" href="data:image/jpeg;base64,') == 12


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def test_report_in_the_browser_shows_sections_and_hover_images(report) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install 'lora-harness[dev]'")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("headless Chromium not found: apt-get install -y chromium chromium-driver")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    path, _ = report
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--disable-background-networking"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="lora-harness-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(path.as_uri())
        for section in ("reference-audit", "identity-yaw", "identity-map"):
            element = driver.find_element(By.ID, section)
            driver.execute_script("arguments[0].scrollIntoView()", element)
            assert element.is_displayed() and element.size["height"] > 50, section
        outliers = driver.find_elements(By.CSS_SELECTOR, "#reference-audit tr.audit-outlier")
        assert len(outliers) == 1
        outlier = outliers[0]
        assert "stranger.png" in outlier.text and "other person" in outlier.text
        assert driver.execute_script(
            "return [...document.querySelectorAll('#reference-audit img')].every(i => i.complete && i.naturalWidth > 0)")
        point = driver.find_element(By.CSS_SELECTOR, "#identity-map-plot g.point")
        hover = point.find_element(By.CSS_SELECTOR, ".hover-image")
        assert not hover.is_displayed()
        ActionChains(driver).move_to_element(point.find_element(By.CSS_SELECTOR, "circle, rect")).perform()
        assert driver.execute_script("return getComputedStyle(arguments[0]).display", hover) == "inline"
        plots = driver.find_element(By.ID, "trends").text + driver.find_element(By.ID, "criteria").text
        assert "diversity_image" in plots or driver.find_elements(By.XPATH, "//*[contains(text(), 'diversity_image')]")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
