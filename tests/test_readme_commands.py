"""Every shell command in the README's fenced bash blocks runs verbatim and exits 0.

The commands run in a scratch copy of the repository layout (evals/, the demo fixtures, the Makefile, the
virtualenv, `../shared` beside it), plus a user's own kohya folder at the README's `path/to/output/sample`,
so a README edit that breaks a command a user would copy fails here. The few commands that cannot run inside
the test suite are listed in SKIPPED with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHARED = Path("/work/shared")
SKIPPED = {
    "make test": "runs this very test suite (it would run itself)",
    "lora-harness watch": "polls a training output folder for new checkpoints until Ctrl-C",
}


def readme_commands(text: str) -> list[str]:
    """Commands of ```bash blocks: continuation lines joined, comment lines and trainer arguments (lines
    starting with `--`, e.g. SimpleTuner's `--validation_external_script`) left out."""
    commands: list[str] = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, flags=re.S | re.M):
        pending = ""
        for line in block.splitlines():
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            command, pending = pending.strip(), ""
            if command and not command.startswith(("#", "--")):
                commands.append(command)
    return commands


def test_readme_commands_are_extracted() -> None:
    commands = readme_commands((REPO / "README.md").read_text())
    assert "make eval" in commands
    assert any(c.startswith(".venv/bin/pytest evals") and "--lora-samples" in c for c in commands)
    assert any(c.startswith("lora-harness report --from-csv") for c in commands)
    assert not any(c.startswith("--") for c in commands)


def _workspace(tmp_path: Path) -> Path:
    """A checkout-like folder: what the commands read, with the user's own sample folder in place."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("evals", "fixtures"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml", "conftest.py"):
        shutil.copy(REPO / name, root / name)
        os.utime(root / name, (0, 0))  # older than .venv's install stamp: `make` must not reinstall
    (root / ".venv").symlink_to((REPO / ".venv").resolve())
    (tmp_path / "shared").symlink_to(SHARED)
    # The README's `path/to/output/sample`: a user's own kohya folder (another LoRA name than the demo's).
    sample = root / "path" / "to" / "output" / "sample"
    sample.mkdir(parents=True)
    demo = REPO / "fixtures" / "demo" / "samples" / "personal-lora-demo-r4"
    for image in demo.glob("*.png"):
        shutil.copy(image, sample / image.name.replace("personal-lora-demo-r4", "my_person-v2"))
    shutil.copy(demo / "sample_prompts.txt", sample.parent / "sample_prompts.txt")
    return root


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(not (REPO / ".venv" / ".installed-stamp").exists(), reason="needs the installed .venv (make install)")
@pytest.mark.skipif(not SHARED.is_dir(), reason="needs /work/shared (the study's CSVs the README reports on)")
def test_every_readme_command_runs_verbatim(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{root / '.venv' / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    ran = []
    for command in readme_commands((REPO / "README.md").read_text()):
        if any(command.startswith(prefix) for prefix in SKIPPED):
            continue
        if command.startswith("lora-harness merge"):  # setup, not a README command: the two shard runs it merges
            for index in (1, 2):
                setup = _run(f".venv/bin/pytest evals --lora-shard {index}/2 --lora-run-name shard{index} -q", root, env)
                assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
        result = _run(command, root, env)
        assert result.returncode == 0, f"{command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        ran.append(command)
    assert len(ran) >= 5, ran
    assert (root / "reports" / "demo" / "report.html").is_file()
    assert (root / "reports" / "my-lora" / "scores.csv").is_file()
    assert (root / "reports" / "sweep" / "report.html").is_file()


def test_inline_lora_set_example_applies_to_the_shipped_config(tmp_path: Path) -> None:
    example = re.search(r"e\.g\. `(--lora-set '[^`]+')`", (REPO / "README.md").read_text())
    assert example, "the README's --lora-set example moved"
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "pytest"), "evals", "--collect-only", "-q", "-p", "no:cacheprovider",
         *example[1].replace("'", "").split(" ", 1)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
