"""Model loading (local folder or hub id, offline, devices, one copy per process) and how the harness turns
a missing model into skipped tests while a wrong one fails them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_harness.verdicts.outcome import Policy
from skimage import data

from lora_harness.core.config import load_config
from lora_harness.verdicts.enforce import Gate
from lora_harness.run.harness import Harness
from lora_harness.judges.model_loading import (
    UNAVAILABLE_KEY,
    ModelError,
    ModelUnavailable,
    cached,
    cached_snapshot,
    check_device_spec,
    hub_offline,
    require,
    resolve_device,
    resolve_source,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"


# --- where a model comes from ------------------------------------------------------------------------------


def test_an_existing_folder_is_local_and_a_bare_name_is_a_hub_id(tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_source(str(folder), judge="j").local == folder.resolve()
    hub = resolve_source("openai/clip-vit-base-patch16", judge="j")
    assert hub.local is None and hub.hub_id == "openai/clip-vit-base-patch16"
    assert resolve_source("bert-base-uncased", judge="j").hub_id == "bert-base-uncased"


@pytest.mark.parametrize("spec", ["/nonexistent/models/clip", "./models/clip", "~/no/such/model", "a/b/c"])
def test_a_path_that_does_not_exist_is_unavailable_naming_it(spec: str) -> None:
    with pytest.raises(ModelUnavailable, match=r"model folder .* \(option 'model'\) does not exist; download"):
        resolve_source(spec, judge="clip_score")


def test_a_file_or_a_folder_without_config_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file; point it at the model folder"):
        resolve_source(str(tmp_path / "weights.safetensors"), judge="j")
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_source(str(tmp_path), judge="j")


@pytest.mark.parametrize("value, offline", [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)])
def test_hub_offline_reads_the_environment_each_time(monkeypatch: pytest.MonkeyPatch, value: str, offline: bool) -> None:
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline() is offline


@pytest.mark.slow
def test_a_cached_hub_model_loads_offline_from_its_snapshot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tiny_models import put_in_hub_cache, save_tiny_vit

    from lora_harness.judges import create_judge
    from lora_harness.judges.base import JudgeContext

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = put_in_hub_cache(save_tiny_vit(tmp_path / "vit"), tmp_path / "hub", "tiny-org/tiny-dino")
    assert cached_snapshot("tiny-org/tiny-dino") == snapshot
    assert cached_snapshot("tiny-org/absent") is None
    judge = create_judge("dino", {"model": "tiny-org/tiny-dino"})
    astronaut = data.astronaut()
    context = JudgeContext(reference_images=[astronaut], reference_paths=[Path("astronaut.png")])
    mean, best = judge.judge(None, astronaut, context)  # type: ignore[arg-type]
    assert mean.value == pytest.approx(1.0, abs=1e-5) and best.value == pytest.approx(1.0, abs=1e-5)


# --- packages and devices ----------------------------------------------------------------------------------


def test_a_missing_package_is_unavailable_with_the_install_command() -> None:
    with pytest.raises(ModelUnavailable, match=r"clip_score needs the Python package 'no_such_pkg_x'.*pip install"):
        require("no_such_pkg_x", judge="clip_score")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", 0])
def test_bad_device_names_are_rejected(device) -> None:
    with pytest.raises(ValueError, match="option 'device' .* is invalid: expected 'cpu', 'auto'"):
        check_device_spec(device, judge="dino")


def test_devices_resolve_to_what_this_machine_has() -> None:
    torch = pytest.importorskip("torch")
    assert resolve_device("cpu", judge="dino") == "cpu"
    assert resolve_device("auto", judge="dino") == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda", judge="dino") == "cuda"
        with pytest.raises(ModelUnavailable, match="cuda:99"):
            resolve_device("cuda:99", judge="dino")
    else:
        with pytest.raises(ModelUnavailable, match="torch sees no CUDA GPU.*device = 'auto' or 'cpu'"):
            resolve_device("cuda", judge="dino")


def test_cached_builds_once_per_key() -> None:
    built: list[int] = []

    def build() -> object:
        built.append(1)
        return object()

    first = cached(("test-models", "k1"), build)
    assert cached(("test-models", "k1"), build) is first
    assert cached(("test-models", "k2"), build) is not first
    assert len(built) == 2


@pytest.mark.slow
def test_importing_the_package_imports_no_model_library() -> None:
    code = (
        "import sys, lora_harness, lora_harness.judges, lora_harness.run.harness, lora_harness.plugin;"
        "print(sorted(m for m in ('torch', 'transformers', 'torchmetrics', 'dlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# --- the harness: missing model -> skip, wrong model -> fail, other judges keep their scores ------------------


def write_config(root: Path, judges: str, thresholds: str = "") -> Path:
    """A config over the demo's clean step-800 images of one LoRA (3 cases)."""
    samples = root / "samples"
    samples.mkdir(parents=True)
    source = DEMO / "samples" / "personal-lora-demo-r4"
    shutil.copy(source / "sample_prompts.txt", samples)
    for image in source.glob("*_000800_*.png"):
        shutil.copy(image, samples)
    path = root / "lora_eval.toml"
    path.write_text(
        f"""[run]
name = "models"
report_dir = "reports"

[[sources]]
path = "samples"

[person]
references = ["{DEMO / 'reference'}"]
trigger = "<phigep>"
description = "a woman astronaut"

[[judges]]
name = "image_stats"
{judges}
[thresholds.spectral_score]
image = 0.5
{thresholds}
[gate]
checkpoints = "all"
"""
    )
    return path


def harness_for(path: Path) -> Harness:
    return Harness(load_config(path), run_id="test-run", worker="main")


def test_an_unavailable_model_is_recorded_as_missing_and_its_gated_tests_are_incomplete(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    path = write_config(
        tmp_path,
        f'\n[[judges]]\nname = "clip_score"\noptions = {{ model = "{missing}" }}\n',
        "\n[thresholds.clip_score]\nimage = 20.0\ncheckpoint = 25.0\n",
    )
    harness = harness_for(path)
    case = harness.cases[0]
    scores = harness.score(case)
    assert scores["spectral_score"].value is not None  # the other judge was not held up
    clip = scores["clip_score"]
    assert clip.value is None and clip.error is None
    assert "no-such-model" in clip.raw[UNAVAILABLE_KEY] and "does not exist" in clip.raw[UNAVAILABLE_KEY]
    gate = Gate(harness, harness.policy)  # the sample checkpoint is gated (latest): incomplete fails it
    with pytest.raises(AssertionError, match="(?s)INCOMPLETE.*clip_score: not judged .*no-such-model.*--allow-incomplete"):
        gate.check_image(case)
    checkpoint = harness.checkpoints[0]
    with pytest.raises(AssertionError, match="(?s)INCOMPLETE.*no-such-model"):
        gate.check_checkpoint(checkpoint)  # never a pass on metrics that were not judged
    accepting = Gate(harness, Policy(allow_incomplete=True))
    with pytest.raises(pytest.skip.Exception, match="accepted by --allow-incomplete.*no-such-model"):
        accepting.check_checkpoint(checkpoint)
    rows = [r for r in harness.store.rows(run_id="test-run") if r.metric == "clip_score"]
    assert len(rows) == 3 and all(r.value is None and r.error is None and UNAVAILABLE_KEY in r.raw for r in rows)


def test_an_available_judge_failing_a_threshold_still_fails_before_any_skip(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f'\n[[judges]]\nname = "clip_score"\noptions = {{ model = "{tmp_path / "absent"}" }}\n',
        "\n[thresholds.magnitude_score]\nimage = 1.01\n",
    )
    harness = harness_for(path)
    with pytest.raises(AssertionError, match="magnitude_score = .* < 1.0100"):
        Gate(harness).check_image(harness.cases[0])


@pytest.mark.slow
def test_a_model_of_the_wrong_kind_fails_the_cases_with_its_message(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tiny_models import save_tiny_bert

    bert = save_tiny_bert(tmp_path / "bert")
    path = write_config(tmp_path / "suite", f'\n[[judges]]\nname = "dino"\noptions = {{ model = "{bert}" }}\n')
    harness = harness_for(path)
    scores = harness.score(harness.cases[0])
    assert scores["spectral_score"].value is not None
    assert scores["dino_mean"].value is None
    assert "holds a BertModel" in scores["dino_mean"].error and "does not take images" in scores["dino_mean"].error
    with pytest.raises(AssertionError, match="dino_mean: no score .*BertModel"):
        Gate(harness).check_image(harness.cases[0])


@pytest.mark.slow
def test_face_identity_scores_the_demo_and_a_faceless_image_is_missing_not_zero(tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    path = write_config(tmp_path, '\n[[judges]]\nname = "face_identity"\n', "\n[thresholds.face_match]\nimage = 1\n")
    # A cat among the samples: no face, so no identity value, and no failure of the identity threshold.
    from PIL import Image

    cat = next((tmp_path / "samples").glob("*_000800_02_*.png"))
    Image.fromarray(data.chelsea()).save(cat)
    harness = harness_for(path)
    by_prompt = {case.prompt_id: harness.score(case) for case in harness.cases}
    for prompt in ("00", "01"):
        assert by_prompt[prompt]["face_detected"].value == 1.0
        assert by_prompt[prompt]["face_identity_max"].value > 0.95  # crops of the reference astronaut
        assert by_prompt[prompt]["face_match"].value == 1.0 and by_prompt[prompt]["face_distance"].value < 0.3
    faceless = by_prompt["02"]
    assert faceless["face_detected"].value == 0.0
    assert faceless["face_identity_mean"].value is None and faceless["face_identity_mean"].error is None
    assert faceless["face_identity_mean"].raw["missing"] == "no face detected"
    assert faceless["face_match"].value is None and faceless["face_match"].raw["missing"] == "no face detected"
    for case in harness.cases:
        Gate(harness).check_image(case)  # passes: the missing identity is not scored, not a failure


def test_cpu_threads_are_shared_among_xdist_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from lora_harness.judges.model_loading import apply_cpu_threads, check_threads_spec

    before = torch.get_num_threads()
    try:
        assert apply_cpu_threads("auto", worker_count=1, judge="dino") is None  # alone: torch's default stays
        assert torch.get_num_threads() == before
        assert apply_cpu_threads(0, worker_count=8, judge="dino") is None
        monkeypatch.setattr("os.cpu_count", lambda: 8)
        assert apply_cpu_threads("auto", worker_count=4, judge="dino") == 2
        assert torch.get_num_threads() == 2
        assert apply_cpu_threads("auto", worker_count=16, judge="dino") == 1
        assert apply_cpu_threads(3, worker_count=1, judge="dino") == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="option 'threads' = -1 is invalid"):
        check_threads_spec(-1, judge="dino")


def test_a_relative_folder_that_is_missing_is_named_in_the_hub_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lora_harness.judges.model_loading import load_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    source = resolve_source("models/clip", judge="clip_score")
    assert source.hub_id == "models/clip"

    def never(*args, **kwargs):
        raise AssertionError("offline and not cached: the loader must not be called")

    with pytest.raises(ModelUnavailable, match=r"not in the Hugging Face cache .*no folder .*models/clip exists"):
        load_pretrained(never, source, judge="clip_score", what="a model")


def test_a_per_image_judge_without_its_model_raises_unavailable_through_judge_many():
    """Only judges with judge_batch used to reach the harness's skip path; plain judges must too."""
    import numpy as np

    from lora_harness.core.cases import EvalCase, Prompt
    from lora_harness.judges.base import JudgeContext, judge_many
    from lora_harness.judges.model_loading import ModelUnavailable

    class NoModel:
        name, version, metrics = "no_model", "1", ["m"]

        def judge(self, case, image, context):
            raise ModelUnavailable("install the weights: see the README")

    case = EvalCase("lora", 1, Prompt("00", "p"), Path("x.png"))
    with pytest.raises(ModelUnavailable, match="install the weights"):
        judge_many(NoModel(), [(case, np.zeros((4, 4, 3), np.uint8))], JudgeContext())
