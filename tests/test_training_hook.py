"""The training hook: `lora-harness eval-checkpoint` (SimpleTuner) end to end on the tiny pipeline, and the
watcher's file detection (`lora-harness watch`, kohya) as bounded units."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from lora_harness.config import ConfigError
from lora_harness.training_hook import (
    FolderWatch, checkpoint_file, checkpoint_sources, parse_set_option, pytest_command, watch,
)

REPO = Path(__file__).resolve().parents[1]


def write_config(root: Path, extra: str = "", model: str = "/models/none") -> Path:
    (root / "prompts.txt").write_text("a photo of <phigep> --w 32 --h 32 --s 2 --d 11\n")
    config = root / "lora_eval.toml"
    config.write_text(f"""[run]
name = "training"
report_dir = "reports"

[pipeline]
model = "{model}"
device = "cpu"

[[sources]]
path = "samples"

[[sources]]
kind = "generate"
lora = "out"
prompts = "prompts.txt"
baseline = "none"
{extra}
[[judges]]
name = "pixel_similarity"
""")
    return config


def test_parse_set_option() -> None:
    assert parse_set_option('sources=[{"a": 1}]') == ("sources", [{"a": 1}])
    assert parse_set_option("run.name=plain") == ("run.name", "plain")
    with pytest.raises(ConfigError, match="expected KEY=JSON"):
        parse_set_option("novalue")


def test_checkpoint_file_and_sources(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-500"
    folder.mkdir()
    (folder / "optimizer.safetensors").write_bytes(b"x")
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    assert checkpoint_file(folder).name == "pytorch_lora_weights.safetensors"
    (folder / "pytorch_lora_weights.safetensors").unlink()
    (folder / "ema.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError, match="expected one LoRA .safetensors.*ema.safetensors, optimizer.safetensors"):
        checkpoint_file(folder)
    with pytest.raises(ConfigError, match="no such file or folder"):
        checkpoint_file(tmp_path / "missing")

    config = write_config(tmp_path, 'loraname = "me"\n')
    (sources,) = checkpoint_sources(config, folder / "ema.safetensors", 500, None)
    assert sources["lora"] == [str((folder / "ema.safetensors").resolve())]
    assert sources["prompts"] == str((tmp_path / "prompts.txt").resolve()) and sources["baseline"] == "none"
    assert (sources["final_step"], sources["loraname"]) == (500, "me")
    command = pytest_command(Path("evals"), config, [sources])
    assert json.loads(command[command.index("--lora-set") + 1].removeprefix("sources=")) == [sources]
    config.write_text('[[sources]]\npath = "samples"\n')
    with pytest.raises(ConfigError, match='no \\[\\[sources\\]\\] with kind = "generate"'):
        checkpoint_sources(config, folder, 1, None)


def test_folder_watch_waits_until_a_file_stops_changing_and_remembers(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "run" / "watch.json"
    out.mkdir()
    tracker = FolderWatch(out, state)
    first = out / "me-000001.safetensors"
    first.write_bytes(b"12")
    assert tracker.poll() == []  # just appeared: maybe still being written
    (out / "notes.txt").write_text("not a checkpoint")
    growing = out / "me-000002.safetensors"
    growing.write_bytes(b"1")
    assert tracker.poll() == [first]  # unchanged since the last poll
    tracker.mark_done(first)
    growing.write_bytes(b"123")  # the trainer is still writing it
    assert tracker.poll() == []
    assert tracker.poll() == [growing]
    assert FolderWatch(out, state).done == {str(first)}  # a restarted watcher skips what was evaluated


def test_watch_evaluates_each_new_checkpoint_once_within_max_polls(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "me-000001.safetensors").write_bytes(b"1")
    evaluated: list[str] = []
    sleeps: list[float] = []

    def evaluate(path: Path) -> int:
        evaluated.append(path.name)
        if path.name == "me-000001.safetensors":  # the trainer saves the next checkpoint meanwhile
            (out / "me-000002.safetensors").write_bytes(b"2")
        return 1  # a failing gate is a result: the file is not evaluated again

    count = watch(out, config=tmp_path / "c.toml", suite=tmp_path, state_file=tmp_path / "w.json", interval=7,
                  max_polls=4, evaluate=evaluate, log=lambda _: None, sleep=sleeps.append)
    assert (count, evaluated, sleeps) == (2, ["me-000001.safetensors", "me-000002.safetensors"], [7, 7, 7])
    with pytest.raises(ConfigError, match="not a folder"):
        watch(tmp_path / "nope", config=tmp_path, suite=tmp_path, state_file=tmp_path / "w.json", max_polls=1)


@pytest.mark.slow
def test_eval_checkpoint_appends_each_simpletuner_checkpoint_to_one_run(
    tmp_path: Path, monkeypatch, pytester: pytest.Pytester
) -> None:
    """Two SimpleTuner checkpoints (folders with pytorch_lora_weights.safetensors) through the real CLI: one
    run folder, both steps (and the leakage check's rows) in its scores.csv. The pytest command the CLI builds
    runs in process (pytester) instead of a fresh interpreter, which saves re-importing torch twice."""
    pytest.importorskip("diffusers")
    import tiny_flux
    from PIL import Image
    from skimage import data

    from lora_harness.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_flux.save_tiny_flux(tmp_path / "tiny")
    out = tmp_path / "simpletuner-out"
    for step, seed in ((10, 1), (20, 2)):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        tiny_flux.write_diffusers_lora(out / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors", seed=seed)
    (tmp_path / "refs").mkdir()
    Image.fromarray(data.astronaut()).resize((64, 64)).save(tmp_path / "refs" / "person.png")
    leakage = '[person]\nreferences = ["refs"]\n\n[leakage]\nprompts = ["a man in a park"]\nmetric = "pixel_similarity_max"\nmax_identity = 0.99\n'
    config = write_config(tmp_path, model=str(model))
    config.write_text(config.read_text().replace('[[sources]]\npath = "samples"\n\n', "").replace('baseline = "none"\n', "") + leakage)
    suite = tmp_path / "suite"
    suite.mkdir()
    for name in ("test_lora.py", "test_lora_checks.py"):  # renamed: this process imported tests/test_lora_checks.py
        shutil.copy(REPO / "evals" / name, suite / name.replace("test_", "test_suite_"))
    commands: list[list[str]] = []
    outputs: list[str] = []

    def run_in_process(command: list[str]) -> int:
        commands.append(command)
        assert command[:3] == [sys.executable, "-m", "pytest"]
        result = pytester.runpytest_inprocess(*command[3:])
        outputs.append(result.stdout.str())
        return int(result.ret)

    monkeypatch.setattr("lora_harness.training_hook.subprocess.call", run_in_process)
    for step in (10, 20):
        status = main(["eval-checkpoint", "--checkpoint", str(out / f"checkpoint-{step}"), "--step", str(step),
                       "--config", str(config), "--suite", str(suite), "--", "-q", "-W", "ignore::UserWarning"])
        assert status == 0
    assert len(commands) == 2 and all("--lora-set" in c and "--lora-gate" in c for c in commands)
    # the terminal table marks the evaluated checkpoint as gated, never the leakage images' own LoRA name
    assert re.search(r"\* simpletuner-out 000020", outputs[1]) and "* simpletuner-out-leakage" not in outputs[1]
    wide = pd.read_csv(tmp_path / "reports" / "training" / "scores.csv", dtype=str)
    assert sorted(set(zip(wide["loraname"], wide["training_step"]))) == [
        ("simpletuner-out", "000010"), ("simpletuner-out", "000020"),
        ("simpletuner-out-leakage", "000010"), ("simpletuner-out-leakage", "000020"),
    ]
    assert wide["pixel_similarity_max"].notna().all() and wide["run_id"].nunique() == 2
    assert (tmp_path / "reports" / "training" / "report.html").is_file()


def test_cli_hook_commands_report_bad_input(tmp_path: Path, capsys) -> None:
    from lora_harness.cli import main

    config = write_config(tmp_path)
    assert main(["watch", str(tmp_path / "nowhere"), "--config", str(config), "--once"]) == 2
    assert "is not a folder; give the trainer's output folder" in capsys.readouterr().err
    assert main(["eval-checkpoint", "--checkpoint", str(tmp_path / "missing.safetensors"), "--config", str(config)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
