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

from lora_harness.core.config import ConfigError
from lora_harness.run.training_hook import (
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

    from lora_harness.cli.main import main

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

    monkeypatch.setattr("lora_harness.run.training_hook.subprocess.call", run_in_process)
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
    from lora_harness.cli.main import main

    config = write_config(tmp_path)
    assert main(["watch", str(tmp_path / "nowhere"), "--config", str(config), "--once"]) == 2
    assert "is not a folder; give the trainer's output folder" in capsys.readouterr().err
    assert main(["eval-checkpoint", "--checkpoint", str(tmp_path / "missing.safetensors"), "--config", str(config)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def _readme_command(prefix: str) -> str:
    """A command line exactly as the README documents it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if prefix in line and not line.lstrip().startswith("#"))
    return line[line.index(prefix):].strip().rstrip('"')


def test_readme_hook_command_lines_run_verbatim(tmp_path: Path, monkeypatch) -> None:
    """Issue 14: `lora-harness watch DIR --config X --interval 30 -- -n 2` failed with 'unrecognized arguments'.
    Both documented command lines are parsed as written; the pytest arguments reach the pytest command."""
    import shlex

    import lora_harness.run.training_hook as hook
    from lora_harness.cli.main import main

    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    import numpy as np

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evals").mkdir()
    write_config(tmp_path / "evals")
    out = tmp_path / "output" / "my-person"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tensors = {"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": rng.normal(size=(4, 32)).astype(np.float32)}
    for name, meta in (("my-person-000001", {"ss_epoch": "1", "ss_steps": "10"}), ("my-person", {"ss_epoch": "2", "ss_steps": "20"})):
        safetensors_numpy.save_file(tensors, str(out / f"{name}.safetensors"), metadata=meta)
    commands: list[list[str]] = []
    monkeypatch.setattr(hook.subprocess, "call", lambda command: commands.append(command) or 0)
    real_watch = hook.watch
    monkeypatch.setattr(hook, "watch", lambda *a, **k: real_watch(*a, **{**k, "max_polls": 2, "sleep": lambda s: None, "log": lambda m: None}))

    watch_line = _readme_command("lora-harness watch")
    assert watch_line == "lora-harness watch output/my-person --config evals/lora_eval.toml --interval 30 -- -n 2"
    assert main(shlex.split(watch_line)[1:]) == 0
    assert len(commands) == 2 and all(c[-2:] == ["-n", "2"] for c in commands)
    labels = []
    for command in commands:
        (source,) = json.loads(command[command.index("--lora-set") + 1].removeprefix("sources="))
        from lora_harness.sources.generate import find_checkpoints

        (ckpt,) = find_checkpoints([Path(p) for p in source["lora"]], final_step=source.get("final_step"), final_kind=source.get("final_kind"))
        labels.append((ckpt.step_kind, ckpt.training_step))
    assert sorted(labels) == [("epoch", 1), ("epoch", 2)]  # the final file is epoch 2, not step 20

    commands.clear()
    hook_line = _readme_command("lora-harness eval-checkpoint")
    hook_line = hook_line.replace("{local_checkpoint_path}", str(out / "my-person.safetensors")).replace("{global_step}", "500")
    assert main(shlex.split(hook_line)[1:]) == 0
    (source,) = json.loads(commands[0][commands[0].index("--lora-set") + 1].removeprefix("sources="))
    assert (source["final_step"], source["final_kind"]) == (500, "step")
    commands.clear()
    assert main(["eval-checkpoint", "--checkpoint", str(out / "my-person.safetensors"), "--epoch", "7",
                 "--config", "evals/lora_eval.toml", "--", "-q", "-x"]) == 0
    (source,) = json.loads(commands[0][commands[0].index("--lora-set") + 1].removeprefix("sources="))
    assert (source["final_step"], source["final_kind"]) == (7, "epoch") and commands[0][-2:] == ["-q", "-x"]


@pytest.mark.slow
def test_watch_a_kohya_sweep_file_by_file_keeps_one_label_kind(tmp_path: Path, monkeypatch, pytester: pytest.Pytester) -> None:
    """Issue 14 end to end: `lora-harness watch OUT --once -- -q` on a kohya epoch sweep (two numbered files and
    the final file, each evaluated alone in its own pytest run): every row of the run is labelled by epoch,
    the final file as ss_epoch 3 (not ss_steps 30), so the epoch trend line is one line."""
    pytest.importorskip("diffusers")
    import tiny_flux

    from lora_harness.cli.main import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_flux.save_tiny_flux(tmp_path / "tiny")
    out = tmp_path / "out"
    tiny_flux.write_kohya_sweep(out, name="me", epochs=(1, 2), final=True)  # final: ss_epoch 3, ss_steps 30
    config = write_config(tmp_path, model=str(model))
    config.write_text(config.read_text().replace('[[sources]]\npath = "samples"\n\n', "").replace('baseline = "none"\n', "")
                      .replace('name = "pixel_similarity"', 'name = "image_stats"'))
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(REPO / "evals" / "test_lora.py", suite / "test_suite_lora.py")
    statuses: list[int] = []

    def run_in_process(command: list[str]) -> int:
        assert command[-1] == "-q"  # the arguments after `--`
        result = pytester.runpytest_inprocess(*command[3:])
        statuses.append(int(result.ret))
        return int(result.ret)

    monkeypatch.setattr("lora_harness.run.training_hook.subprocess.call", run_in_process)
    assert main(["watch", str(out), "--config", str(config), "--suite", str(suite), "--once", "--interval", "0.2", "--", "-q"]) == 0
    assert statuses == [0, 0, 0]
    wide = pd.read_csv(tmp_path / "reports" / "training" / "scores.csv", dtype=str)
    assert sorted(set(wide["training_step"])) == ["e000001", "e000002", "e000003"]
