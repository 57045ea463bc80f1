"""Every config mistake found after the schema (it needs the cases or the judges) names the config file, the
dotted key, the bad value and the fix, with a "did you mean" for misspelt names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lora_harness.core.config import load_config
from lora_harness.run.harness import Harness

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"


def config_file(tmp_path: Path, extra: str = "", source: str | None = None) -> Path:
    if source is None:
        shutil.copytree(DEMO / "samples" / "personal-lora-demo-r4", tmp_path / "r4")
        source = "r4"
    path = tmp_path / "lora_eval.toml"
    path.write_text(
        f'[run]\nname = "t"\nreport_dir = "reports"\n\n[[sources]]\npath = "{source}"\n\n'
        f'[person]\nreferences = ["{DEMO / "reference"}"]\n\n[[judges]]\nname = "image_stats"\n{extra}'
    )
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ValueError) as info:
        Harness(load_config(path), run_id="t")
    return str(info.value)


@pytest.mark.parametrize(
    ("extra", "source", "expected"),
    [
        pytest.param(  # a metric no judge produces
            "\n[thresholds.spectral_scor]\nimage = 0.5\n", None,
            ["[thresholds.spectral_scor]", "did you mean 'spectral_score'", "the judges produce", "rename the table"],
            id="threshold-metric"),
        pytest.param(  # a judge-name typo
            '\n[[judges]]\nname = "image_stat"\n', None,
            ["judges[1].name", "'image_stat'", "did you mean 'image_stats'", "registered judges"], id="judge-name"),
        pytest.param(  # a judge-option typo
            '\n[[judges]]\nname = "pixel_similarity"\noptions = { sise = 64 }\n', None,
            ["judges[1].options", "'sise'", "did you mean 'size'", "allowed options"], id="judge-option"),
        pytest.param(  # a missing source folder
            "", "does-not-exist",
            ["sources[0]", "does-not-exist", "sample folder not found", "check `path`"], id="source-folder"),
        pytest.param(  # a metric name in another section
            "\n[best]\nweights = { magnitude_scor = 1.0 }\n", None,
            ["best.weights.magnitude_scor", "did you mean 'magnitude_score'"], id="best-metric"),
        pytest.param(  # a baseline that is not a LoRA of the run
            '\n[baseline]\nlora = "personal-lora-demo-r5"\n', None,
            ["baseline.lora = 'personal-lora-demo-r5'", "did you mean 'personal-lora-demo-r4'", "remove [baseline]"],
            id="baseline-lora"),
    ],
)
def test_error_names_file_key_value_and_fix(tmp_path: Path, extra: str, source: str | None, expected: list[str]) -> None:
    path = config_file(tmp_path, extra, source)
    message = error_of(path)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, (part, message)


def test_unknown_section_gets_did_you_mean(tmp_path: Path) -> None:
    path = config_file(tmp_path, "\n[tresholds.spectral_score]\nimage = 0.5\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "did you mean 'thresholds'" in str(info.value)
