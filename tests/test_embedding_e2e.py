"""The embedding judges through the whole plugin in a pytest subprocess: tiny models from folders, the real dlib
face models, the store and CSV; a missing model skips the tests it gates with its reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tiny_models import save_tiny_clip, save_tiny_vit

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"
EVAL_TEST = (REPO / "evals" / "test_lora.py").read_text()


def write_suite(root: Path, judges: str, thresholds: str = "") -> None:
    """One demo LoRA (4 checkpoints x 3 prompts): enough for gating, small enough for model start-up costs."""
    shutil.copytree(DEMO / "samples" / "personal-lora-demo-r4", root / "samples" / "personal-lora-demo-r4")
    (root / "lora_eval.toml").write_text(
        f"""[run]
name = "embed"
report_dir = "reports"

[[sources]]
path = "samples/personal-lora-demo-r4"

[person]
references = ["{DEMO / 'reference'}"]
trigger = "<phigep>"
description = "a woman astronaut"

{judges}
{thresholds}
[gate]
checkpoints = "latest"
"""
    )
    (root / "test_lora.py").write_text(EVAL_TEST)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider", *args)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Built before `pytester` starts: pytester drops modules first imported during its test from sys.modules,
    and torch cannot be imported a second time in one process."""
    pytest.importorskip("transformers")
    pytest.importorskip("torchmetrics")
    root = tmp_path_factory.mktemp("models")
    return save_tiny_clip(root / "clip"), save_tiny_vit(root / "vit")


def test_all_embedding_judges_score_record_and_gate(pytester: pytest.Pytester, tiny_models: tuple[Path, Path]) -> None:
    pytest.importorskip("dlib")
    clip, vit = tiny_models
    judges = f"""
[[judges]]
name = "clip_score"
options = {{ model = "{clip}", batch_size = 4 }}

[[judges]]
name = "clip_i"
options = {{ model = "{clip}" }}

[[judges]]
name = "dino"
options = {{ model = "{vit}" }}

[[judges]]
name = "face_identity"
"""
    thresholds = """
[thresholds.face_detected]
image = 1

[thresholds.face_match]
image = 1

[thresholds.face_identity_max]
checkpoint = 0.95
"""
    write_suite(pytester.path, judges, thresholds)
    result = run(pytester, "-rx")  # serial: each xdist worker would pay the ~10 s torch/transformers import
    # The gated latest checkpoint (step 800) has a face in every image, close to the reference; step 200's
    # checkerboard hides the face in the two wider crops: reported (xfail, not gated), with the reason; its
    # one face left cannot decide the checkpoint minimum (inconclusive, not gated: xfail).
    result.assert_outcomes(passed=13, xfailed=3)
    result.stdout.fnmatch_lines(["*XFAIL*personal-lora-demo-r4-step000200-p01*face_detected = 0.0000 < 1.0000*"])
    wide = pd.read_csv(pytester.path / "reports" / "embed" / "scores.csv", dtype={"training_step": str, "prompt_id": str})
    assert len(wide) == 12
    for column in ("clip_score", "clip_i_mean", "clip_i_max", "dino_mean", "dino_max", "face_detected",
                   "face_identity_mean", "face_identity_max", "face_distance", "face_match"):
        assert column in wide.columns, column
    assert wide["clip_score"].between(0, 100).all()
    assert wide["dino_mean"].between(-1, 1).all() and (wide["dino_max"] >= wide["dino_mean"] - 1e-9).all()
    latest = wide[wide.training_step == "000800"]
    assert (latest["face_detected"] == 1).all() and (latest["face_identity_max"] > 0.95).all()
    assert (latest["face_match"] == 1).all() and (latest["face_distance"] < 0.3).all()
    hidden = wide[(wide.training_step == "000200") & (wide.prompt_id == "01")]
    assert (hidden["face_detected"] == 0).all() and hidden["face_identity_mean"].isna().all()
    long = pd.read_csv(pytester.path / "reports" / "embed" / "scores_long.csv")
    missing = long[(long.metric == "face_identity_mean") & long.value.isna()]
    assert len(missing) == 2 and missing["error"].isna().all()
    assert missing["raw"].str.contains("no face detected").all()


def test_a_missing_model_leaves_the_tests_it_gates_incomplete_with_the_reason(pytester: pytest.Pytester, tmp_path: Path) -> None:
    judges = f"""
[[judges]]
name = "image_stats"

[[judges]]
name = "clip_score"
options = {{ model = "{tmp_path / 'models' / 'clip-vit-base-patch16'}" }}
"""
    thresholds = "[thresholds.clip_score]\nimage = 20\ncheckpoint = 25\n"
    write_suite(pytester.path, judges, thresholds)
    result = run(pytester, "-k", "step000800", "-rs")
    result.assert_outcomes(failed=4)  # gated metrics not judged: incomplete, never a pass
    result.stdout.fnmatch_lines(["E * INCOMPLETE", "E * clip_score: not judged (clip_score: model folder*clip-vit-base-patch16*does not exist; download*"])
    accepted = run(pytester, "-k", "step000800", "-rs", "--allow-incomplete")
    accepted.assert_outcomes(skipped=4)
    accepted.stdout.fnmatch_lines(
        ["SKIPPED*not fully judged (accepted by --allow-incomplete): *clip_score: model folder*clip-vit-base-patch16*does not exist; download*"]
    )
    long = pd.read_csv(pytester.path / "reports" / "embed" / "scores_long.csv")
    clip = long[long.metric == "clip_score"]
    assert len(clip) == 3 and clip.value.isna().all() and clip.error.isna().all()
    assert long[long.metric == "spectral_score"].value.notna().all()  # the available judge kept its scores
