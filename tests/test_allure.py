"""allure results: each case carries its image, scores and justifications, with labels; no secret leaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("allure_pytest")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"
SECRET = "sk-test-secret-123"

SUITE = '''
import os


def test_image(lora_case, lora_scores, lora_gate, lora_record):
    # (lora_scores first: the judges run before the test records its own metrics)
    # a judge that quotes its reasons, and one whose error message quotes the API key it was given
    lora_record("eval_person_llm", 0.75, raw={"textual_justification": f"same face as the reference ({lora_case.prompt_id})", "model": "gpt-4o"})
    if os.environ.get("QUOTE_KEY_IN_ERROR"):
        lora_record("eval_limb_quality_llm", None, error=f"401 Unauthorized: key {os.environ['OPENAI_API_KEY']}")
    lora_gate.check_image(lora_case)


def test_checkpoint(lora_checkpoint, lora_gate):
    lora_gate.check_checkpoint(lora_checkpoint)
'''


def write_suite(root: Path) -> Path:
    shutil.copytree(DEMO / "samples" / "personal-lora-demo-r4", root / "samples" / "r4")
    for extra in sorted((root / "samples" / "r4").glob("*_00040[0-9]_*.png")) + sorted((root / "samples" / "r4").glob("*_00060[0-9]_*.png")):
        extra.unlink()  # two checkpoints are enough
    (root / "lora_eval.toml").write_text(
        '[run]\nname = "allure"\nreport_dir = "reports"\n\n[[sources]]\npath = "samples/r4"\n\n'
        '[[judges]]\nname = "image_stats"\n\n[thresholds.spectral_score]\nimage = 0.5\n'
    )
    (root / "test_lora.py").write_text(SUITE)
    return root / "lora_eval.toml"


def results(allure_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(allure_dir.glob("*-result.json"))]


def labels(result: dict, name: str) -> list[str]:
    return [label["value"] for label in result["labels"] if label["name"] == name]


def run_with_allure(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Path]:
    config = write_suite(pytester.path)
    allure_dir = pytester.path / "allure-results"
    result = pytester.runpytest_subprocess(
        "--lora-config", str(config), "-p", "no:cacheprovider", f"--alluredir={allure_dir}", *args
    )
    return result, allure_dir


def attachments_of(result: dict, allure_dir: Path) -> dict[str, Path]:
    return {a["name"]: allure_dir / a["source"] for a in result["attachments"]}


def test_cases_carry_image_scores_justifications_and_labels(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    result, allure_dir = run_with_allure(pytester)
    result.assert_outcomes(xfailed=3, passed=5)  # step 200 misses the spectral minimum and is not gated

    by_name = {r["name"]: r for r in results(allure_dir)}
    image = by_name["test_image[personal-lora-demo-r4-step000200-p01-s42]"]
    assert labels(image, "lora") == ["personal-lora-demo-r4"]
    assert labels(image, "step") == ["000200"] and labels(image, "prompt") == ["01"] and labels(image, "seed") == ["42"]
    assert set(labels(image, "metric")) == {"spectral_score", "magnitude_score", "eval_person_llm"}
    params = {p["name"]: p for p in image["parameters"]}
    assert {n: p["value"] for n, p in params.items() if not p.get("excluded")} == {
        "lora": "'personal-lora-demo-r4'", "step": "'000200'", "prompt": "'01'", "seed": "'42'",
    }
    assert params["lora_case"]["excluded"] and params["lora_case"]["mode"] == "hidden"
    assert labels(image, "parentSuite") == ["personal-lora-demo-r4"] and labels(image, "suite") == ["step 000200"]
    assert labels(image, "epic") == ["personal-lora-demo-r4"] and labels(image, "feature") == ["step 000200"]
    attachments = attachments_of(image, allure_dir)
    name = "personal-lora-demo-r4_000200_01_20250106170138.png"
    assert attachments.keys() == {f"thumbnail {name}", "prompt", "scores", "justifications"}
    with Image.open(attachments[f"thumbnail {name}"]) as thumb:  # a JPEG thumbnail, not the full PNG
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
    scores = json.loads(attachments["scores"].read_text())
    assert scores["eval_person_llm"]["value"] == 0.75 and scores["eval_person_llm"]["raw"]["model"] == "gpt-4o"
    stored = [json.loads(line) for p in (pytester.path / "reports" / "allure" / "scores").glob("*.jsonl")
              for line in p.read_text().splitlines()]
    spectral = next(r for r in stored if r["case_key"] == "personal-lora-demo-r4-step000200-p01-s42" and r["metric"] == "spectral_score")
    assert scores["spectral_score"]["value"] == spectral["value"]
    assert attachments["justifications"].read_text() == "eval_person_llm = 0.75\nsame face as the reference (01)"
    assert attachments["prompt"].read_text() == "<phigep> sitting on a bench in central park wearing a black hoodie"

    checkpoint = by_name["test_checkpoint[personal-lora-demo-r4-step000800]"]
    assert labels(checkpoint, "lora") == ["personal-lora-demo-r4"] and labels(checkpoint, "step") == ["000800"]
    values = json.loads(attachments_of(checkpoint, allure_dir)["checkpoint scores"].read_text())
    assert len(values["spectral_score"]) == 3 and values["eval_person_llm"] == [0.75, 0.75, 0.75]

    # the key is in the environment of the run: it reaches no file of the allure results or the run folder
    outputs = [p for folder in (allure_dir, pytester.path / "reports") for p in folder.rglob("*") if p.is_file()]
    assert len(outputs) > 20
    assert not [p for p in outputs if SECRET.encode() in p.read_bytes()]


def test_a_key_quoted_in_a_judge_error_is_redacted_in_attachments_and_report(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("QUOTE_KEY_IN_ERROR", "1")
    result, allure_dir = run_with_allure(pytester)
    result.assert_outcomes(failed=6, passed=2)  # an errored metric fails its image, gated or not
    for test in results(allure_dir):
        for path in attachments_of(test, allure_dir).values():
            assert SECRET.encode() not in path.read_bytes(), path
    image = next(r for r in results(allure_dir) if r["name"] == "test_image[personal-lora-demo-r4-step000800-p00-s42]")
    scores = json.loads(attachments_of(image, allure_dir)["scores"].read_text())
    assert scores["eval_limb_quality_llm"] == {"value": None, "error": "401 Unauthorized: key [redacted]", "raw": {}}
    html = (pytester.path / "reports" / "allure" / "report.html").read_text()
    assert SECRET not in html and "401 Unauthorized: key [redacted]" in html


def test_without_alluredir_nothing_is_attached(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    config = write_suite(pytester.path)
    result = pytester.runpytest_subprocess("--lora-config", str(config), "-p", "no:cacheprovider", "-k", "step000800")
    result.assert_outcomes(passed=4)
    assert not list(pytester.path.rglob("*-result.json"))


def test_full_images_by_option(pytester: pytest.Pytester) -> None:
    result, allure_dir = run_with_allure(pytester, "--lora-allure-full-images", "-k", "step000800-p00")
    result.assert_outcomes(passed=1)
    [image] = [r for r in results(allure_dir) if r["name"].startswith("test_image")]
    name = "personal-lora-demo-r4_000800_00_20250106170616.png"
    assert attachments_of(image, allure_dir)[f"image {name}"].read_bytes() == (
        pytester.path / "samples" / "r4" / name
    ).read_bytes()


def test_history_ids_are_equal_across_checkout_paths_and_regenerated_samples(tmp_path: Path) -> None:
    """The same suite from two checkout paths, the second with re-made samples (new kohya timestamps)."""
    import os
    import subprocess

    ids = []
    for checkout, stamp in (("checkout-a", None), ("elsewhere/checkout-b", "20990101000000")):
        root = tmp_path / checkout
        root.mkdir(parents=True)
        config = write_suite(root)
        if stamp:
            for image in (root / "samples" / "r4").glob("*.png"):
                image.rename(image.with_name(image.name[:-18] + stamp + ".png"))
        subprocess.run(
            [str(REPO / ".venv" / "bin" / "python"), "-m", "pytest", "--lora-config", str(config), "-p", "no:cacheprovider",
             "--alluredir", "allure", "-q", "--rootdir", str(root), str(root / "test_lora.py")],
            cwd=root, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600,
        )
        found = {r["name"]: r["historyId"] for r in results(root / "allure")}
        assert len(found) == 8
        ids.append(found)
    assert ids[0] == ids[1]
    assert len(set(ids[0].values())) == 8  # and still one history per test
