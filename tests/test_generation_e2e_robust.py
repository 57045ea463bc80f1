"""Issue 14 through the full plugin path (pytest subprocess, tiny FLUX on CPU): a checkpoint file that cannot be
read fails its own cases with the reason and never aborts collection; a corrupted cached PNG is regenerated;
a LoRA that changes nothing fails instead of passing."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("diffusers")

import tiny_flux  # noqa: E402
from generation_log import read_log  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVAL_TEST = (REPO / "evals" / "test_lora.py").read_text()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_flux.save_tiny_flux(tmp_path_factory.mktemp("tiny") / "flux")


def write_suite(root: Path, model: Path, sources: str) -> Path:
    (root / "lora_eval.toml").write_text(
        f'[run]\nname = "gen"\nreport_dir = "reports"\n\n[pipeline]\nmodel = "{model}"\ndevice = "cpu"\n\n{sources}\n'
        '[[judges]]\nname = "image_stats"\n\n[thresholds.magnitude_score]\nimage = 0.0\n'
    )
    (root / "test_lora.py").write_text(EVAL_TEST)
    return root / "reports" / "gen"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider", *args)


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_truncated_final_file_and_renamed_pickle_fail_alone(pytester: pytest.Pytester, model) -> None:
    out = pytester.path / "output"
    tiny_flux.write_kohya_sweep(out, name="me", epochs=(1, 2), final=True)
    final = out / "me.safetensors"
    final.write_bytes(final.read_bytes()[:-100])  # kohya's final save, still being written
    (out / "me-000003.safetensors").write_bytes(pickle.dumps({"lora_unet": [0.1] * 8}))  # a pickle renamed
    other = tiny_flux.write_diffusers_lora(pytester.path / "other.safetensors")
    zero = tiny_flux.write_zero_lora(pytester.path / "zero.safetensors")
    faint = tiny_flux.write_diffusers_lora(pytester.path / "faint.safetensors", strength=1e-6)
    prompts = 'prompts = ["a photo of sks --w 32 --h 32 --s 2"]\nseeds = [1]\n\n'
    run_dir = write_suite(pytester.path, model, "".join(
        f'[[sources]]\nkind = "generate"\nlora = "{path}"\n{prompts}' for path in (out, other, zero, faint)
    ))
    result = run(pytester, "test_lora.py", "-k", "test_image")
    # me e1, e2 and `other` are generated and judged; the pickle (e3), the truncated final file (e4), the
    # all-zero LoRA and the one whose images equal the base model's fail, each with its reason.
    result.assert_outcomes(passed=3, failed=4)
    text = result.stdout.str()
    assert "ERROR collecting" not in text
    assert "zero.safetensors: this LoRA changes nothing: all 4 module(s) have a zero delta" in text
    assert "this LoRA does not change the image: faint.safetensors at scale 1 gives the base model's image" in text
    assert "me-000003.safetensors: not a readable safetensors file: a pickle (torch.save) file named .safetensors" in text
    assert "me.safetensors: not a readable safetensors file: truncated: its header promises" in text
    assert "probably still being written" in text
    images = sorted(p.name for p in (run_dir / "images").rglob("*.png") if "_reference" not in p.parts)
    assert images == ["faint_000000_00_1.png", "me_e000001_00_1.png", "me_e000002_00_1.png", "other_000000_00_1.png"]
    wide = pd.read_csv(run_dir / "scores.csv", dtype=str)
    assert wide.set_index("training_step").loc[["e000001", "e000002"], "spectral_score"].notna().all()


def test_more_workers_than_devices_load_one_pipeline_per_device(pytester: pytest.Pytester, model) -> None:
    """Issue 14: `pytest evals -n 4` with one device must not load four pipelines (four FLUX copies do not fit
    one 24 GB GPU): the generating checkpoints go to one worker per device; images equal a -n 0 run."""
    import numpy as np
    from PIL import Image

    out = pytester.path / "output"
    tiny_flux.write_kohya_sweep(out, name="me", epochs=(1, 2, 3), final=False)
    prompts = 'prompts = ["a photo of sks --w 32 --h 32 --s 2", "sks at the beach --w 32 --h 32 --s 2"]\nseeds = [1]\n'
    write_suite(pytester.path, model, f'[[sources]]\nkind = "generate"\nlora = "{out}"\n{prompts}')
    toml = pytester.path / "lora_eval.toml"
    toml.write_text(toml.read_text().replace('device = "cpu"\n', 'devices = ["cpu"]\n'))
    serial = run(pytester, "test_lora.py", "--run-name", "serial", "-n", "0")
    serial.assert_outcomes(passed=9)  # 6 images + 3 checkpoints
    parallel = run(pytester, "test_lora.py", "--run-name", "parallel", "-n", "4")
    parallel.assert_outcomes(passed=9)
    reports = pytester.path / "reports"
    log = read_log(reports / "parallel" / "images")
    loads = [e for e in log if e["event"] == "pipeline"]
    assert len(loads) == 1 and loads[0]["device"] == "cpu"
    generated = [e for e in log if e["event"] == "image" and e["action"] == "generated"]
    assert len(generated) == 6 and len({e["worker"] for e in generated}) == 1  # the device's one worker
    for image in sorted((reports / "serial" / "images" / "me").glob("*.png")):
        twin = reports / "parallel" / "images" / "me" / image.name
        assert np.array_equal(np.asarray(Image.open(image)), np.asarray(Image.open(twin)))
    assert len(list((reports / "parallel" / "images" / "me").glob("*.png"))) == 6


def test_generation_sharded_by_slurm_array_merges_to_the_unsharded_run(pytester: pytest.Pytester, model, monkeypatch) -> None:
    """`--lora-shard auto` on generate sources: two Slurm array tasks (processes with SLURM_ARRAY_* set) each
    generate their checkpoints into their own run folder; `lora-harness merge` equals the unsharded run."""
    pytest.importorskip("jinja2")
    from lora_harness.cli.main import main
    from lora_harness.run.store import latest_rows, read_rows

    out = pytester.path / "output"
    tiny_flux.write_kohya_sweep(out, name="me", epochs=(1, 2, 3), final=False)
    write_suite(pytester.path, model, f'[[sources]]\nkind = "generate"\nlora = "{out}"\nprompts = ["a photo of sks --w 32 --h 32 --s 2"]\nseeds = [1, 2]\n')
    full = run(pytester, "test_lora.py", "--run-name", "full")
    full.assert_outcomes(passed=9)
    for task in (0, 1):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        run(pytester, "test_lora.py", "--lora-shard", "auto")  # the same command in both tasks
    reports = pytester.path / "reports"
    shards = [reports / "gen-shard1of2", reports / "gen-shard2of2"]
    made = [sorted(p.name for p in (d / "images" / "me").glob("*.png")) for d in shards]
    assert made[0] and made[1] and not set(made[0]) & set(made[1])  # each task generated its own checkpoints
    assert main(["merge", *map(str, shards), "--out", str(reports / "merged")]) == 0

    def values(run_dir: Path) -> dict:
        return {(r.case_key, r.metric): r.value for r in latest_rows(read_rows(run_dir))}

    assert values(reports / "merged") == values(reports / "full") and len(values(reports / "full")) == 12
