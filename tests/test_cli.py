"""`lora-harness validate` and `lora-harness report`: exit codes, messages and files, called in-process
(plus one run of the installed console script)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lora_harness.core.cases import EvalCase, Prompt
from lora_harness.cli.main import main
from lora_harness.judges.base import Score
from lora_harness.report.csv import read_scores_csv
from lora_harness.run.store import ScoreRow, ScoreStore

PROMPTS = "<tok> portrait\n<tok> on a bench\n"


def make_project(tmp_path: Path, *, thresholds: str = "", gate: str = '"latest"', judges: str = "image_stats") -> Path:
    """Two kohya sample folders and a config next to them; images are never decoded by `validate`."""
    for lora, steps in (("lora-a", (200, 400)), ("lora-b", (200,))):
        folder = tmp_path / "samples" / lora
        folder.mkdir(parents=True)
        (folder / "sample_prompts.txt").write_text(PROMPTS, encoding="utf-8")
        for step in steps:
            for prompt in ("00", "01"):
                (folder / f"{lora}_{step:06d}_{prompt}_20250106170{step // 100}{prompt}.png").write_bytes(b"")
    config = tmp_path / "lora_eval.toml"
    config.write_text(
        f"""
[run]
name = "cli-test"
report_dir = "reports"

[[sources]]
path = "samples/lora-a"

[[sources]]
path = "samples/lora-b"

[[judges]]
name = "{judges}"

{thresholds}

[gate]
checkpoints = {gate}
""",
        encoding="utf-8",
    )
    return config


def test_validate_good_config(tmp_path, capsys):
    config = make_project(tmp_path, thresholds="[thresholds.spectral_score]\nimage = 0.5\n")
    assert main(["validate", str(config)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"{config}: OK")
    assert "6 cases, 3 checkpoints" in out
    assert "metrics: spectral_score, magnitude_score" in out
    assert "gated: lora-a-step000400, lora-b-step000200" in out
    assert not (tmp_path / "reports").exists()  # validating writes nothing


def test_validate_lists_gated_steps(tmp_path, capsys):
    config = make_project(tmp_path, gate="[200]")
    assert main(["validate", str(config)]) == 0
    assert "gated: lora-a-step000200, lora-b-step000200" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"gate": '"newest"'}, "gate.checkpoints: must be 'latest', 'all'"),
        ({"gate": "[999]"}, "gate.checkpoints lists step(s) [999] that no source has; steps found: [200, 400]"),
        ({"thresholds": "[thresholds.spectral_scor]\nimage = 0.5\n"}, "thresholds for metric(s) spectral_scor"),
        ({"judges": "no_such_judge"}, "unknown judge 'no_such_judge'; registered judges: "),
    ],
    ids=["bad-gate", "unknown-step", "unknown-metric", "unknown-judge"],
)
def test_validate_bad_config(tmp_path, capsys, kwargs, expected):
    config = make_project(tmp_path, **kwargs)
    assert main(["validate", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ")
    assert expected in err
    assert "Traceback" not in err


def test_validate_bad_sample_folder(tmp_path, capsys):
    config = make_project(tmp_path)
    (tmp_path / "samples" / "lora-a" / "cover.png").write_bytes(b"")
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cover.png" in err and "ignore_unmatched = true" in err


def test_validate_missing_config(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: lora-harness" in capsys.readouterr().err


# --- report ----------------------------------------------------------------------------------------------


def store_scores(run_dir: Path) -> None:
    """Two writers (as under xdist) and a rerun whose newer row supersedes an older one."""
    for worker, step in (("gw0", 200), ("gw1", 400)):
        store = ScoreStore(run_dir, run_id="run1", worker=worker)
        rows = []
        for prompt in ("00", "01"):
            case = EvalCase("lora-a", step, Prompt(prompt, "p"), Path(f"/s/lora-a_{step:06d}_{prompt}_20250106170134.png"),
                            timestamp="20250106170134")
            for metric, value in (("spectral_score", step / 1000), ("magnitude_score", 0.9)):
                rows.append(ScoreRow.of(case, Score(metric, value, {"x": 1}), judge="image_stats", judge_version="1",
                                        run_id="run1", worker=worker))
        store.append(rows)
    case = EvalCase("lora-a", 200, Prompt("00", "p"), Path("/s/lora-a_000200_00_20250106170134.png"),
                    timestamp="20250106170134")
    ScoreStore(run_dir, run_id="run2").append(
        [ScoreRow.of(case, Score("spectral_score", 0.99), judge="image_stats", judge_version="1", run_id="run2",
                     worker="main")]
    )


def test_report_rebuilds_csvs_from_the_store(tmp_path, capsys):
    run_dir = tmp_path / "reports" / "demo"
    store_scores(run_dir)
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("8 scores -> ")
    assert str(run_dir / "scores.csv") in out and str(run_dir / "scores_long.csv") in out
    wide = read_scores_csv(run_dir / "scores.csv")
    assert list(wide.columns) == [
        "loraname", "training_step", "prompt_id", "timestamp", "magnitude_score", "spectral_score",
        "seed", "image", "run_id",
    ]
    assert list(zip(wide["training_step"], wide["prompt_id"])) == [
        ("000200", "00"), ("000200", "01"), ("000400", "00"), ("000400", "01"),
    ]
    assert wide["spectral_score"].tolist() == [0.99, 0.2, 0.4, 0.4]  # the rerun's newer score wins
    long = pd.read_csv(run_dir / "scores_long.csv")
    assert len(long) == 8
    assert sorted(long["worker"].unique()) == ["gw0", "gw1", "main"]


def test_report_out_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    store_scores(run_dir)
    out_dir = tmp_path / "elsewhere"
    assert main(["report", str(run_dir), "--out", str(out_dir)]) == 0
    assert (out_dir / "scores.csv").is_file() and (out_dir / "scores_long.csv").is_file()
    assert not (run_dir / "scores.csv").exists()


@pytest.mark.parametrize("make", ["missing", "empty", "empty-scores"])
def test_report_without_scores_is_a_clear_error(tmp_path, capsys, make):
    run_dir = tmp_path / "run"
    if make != "missing":
        run_dir.mkdir()
    if make == "empty-scores":
        (run_dir / "scores").mkdir()
        (run_dir / "scores" / "x.main.jsonl").write_text("")
    assert main(["report", str(run_dir)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"no scores under {run_dir / 'scores'}" in err
    assert "reports/<run name>" in err
    assert not (run_dir / "scores.csv").exists()


@pytest.mark.slow  # a subprocess importing pandas: ~1.5 s idle, more on a busy machine
def test_console_script_exit_codes(tmp_path):
    """The installed `lora-harness` entry point wires to main() and its exit codes."""
    script = shutil.which("lora-harness", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("lora-harness console script not installed in this environment")
    result = subprocess.run([script, "report", str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no scores under" in result.stderr
