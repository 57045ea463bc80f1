"""`--lora-shard auto` (issue 14): the shard comes from a Slurm job array or a Kubernetes Indexed Job; each task
writes its own run folder; `lora-harness merge` of the tasks equals the unsharded run. The examples/ files
are checked against the same rules."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lora_harness.run.sharding import Shard, ShardError, from_environment, resolve, run_name_suffix

REPO = Path(__file__).resolve().parents[1]


def slurm(task: int, count: int, first: int = 0, step: int | None = None) -> dict[str, str]:
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first), "SLURM_ARRAY_TASK_COUNT": str(count)}
    return env if step is None else {**env, "SLURM_ARRAY_TASK_STEP": str(step)}


def test_auto_shard_from_slurm_and_indexed_job_variables() -> None:
    assert [from_environment(slurm(t, 4)) for t in range(4)] == [Shard(i, 4) for i in (1, 2, 3, 4)]
    assert [from_environment(slurm(t, 3, first=5)) for t in (5, 6, 7)] == [Shard(1, 3), Shard(2, 3), Shard(3, 3)]
    assert [from_environment(slurm(t, 3, first=0, step=10)) for t in (0, 10, 20)] == [Shard(1, 3), Shard(2, 3), Shard(3, 3)]
    assert from_environment({"JOB_COMPLETION_INDEX": "0"}, count=2) == Shard(1, 2)
    assert resolve("auto", count=2, env={"JOB_COMPLETION_INDEX": "1"}) == Shard(2, 2)
    assert resolve("2/5", env={}) == Shard(2, 5)  # a CI matrix writes i/N itself
    assert run_name_suffix(Shard(2, 4)) == "-shard2of4"


@pytest.mark.parametrize(
    ("env", "count", "message"),
    [
        ({}, None, r"no array index in the environment \(SLURM_ARRAY_TASK_ID .* JOB_COMPLETION_INDEX .*--lora-shard i/N"),
        ({"JOB_COMPLETION_INDEX": "0"}, None, r"add --lora-shard-count N with N = the Job's spec.completions"),
        ({"JOB_COMPLETION_INDEX": "4"}, 4, r"Indexed Job task 5 of 4 is out of range"),
        ({"SLURM_ARRAY_TASK_ID": "3"}, None, r"SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT is not; run under sbatch --array"),
        (slurm(2, 2), None, r"Slurm array task 3 of 2 is out of range"),
        (slurm(5, 3, step=10), None, r"task 5 is not on the array's grid"),
        (slurm(0, 4), 3, r"--lora-shard-count 3 disagrees with SLURM_ARRAY_TASK_COUNT=4"),
        ({"JOB_COMPLETION_INDEX": "x"}, 2, r"JOB_COMPLETION_INDEX='x' is not an integer"),
    ],
)
def test_auto_shard_errors_say_what_is_missing(env, count, message) -> None:
    with pytest.raises(ShardError, match=message):
        resolve("auto", count=count, env=env)


def test_shard_count_only_goes_with_auto() -> None:
    with pytest.raises(ShardError, match="--lora-shard-count goes with --lora-shard auto"):
        resolve("1/2", count=2, env={})


# --- the examples ----------------------------------------------------------------------------------------------


def test_slurm_example_runs_every_task_once_and_merges_them() -> None:
    script = (REPO / "examples" / "slurm" / "lora-eval-array.sbatch").read_text()
    first, last = map(int, re.search(r"^#SBATCH --array=(\d+)-(\d+)$", script, re.M).groups())
    (command,) = [line for line in script.splitlines() if line.startswith("pytest ")]
    assert shlex.split(command)[-2:] == ["--lora-shard", "auto"]
    count = last - first + 1
    shards = [resolve("auto", env=slurm(task, count, first)) for task in range(first, last + 1)]
    assert sorted(s.index for s in shards) == list(range(1, count + 1))
    merge = (REPO / "examples" / "slurm" / "lora-eval-merge.sbatch").read_text()
    assert f"lora-harness merge reports/${{RUN}}-shard*of{count} --out reports/${{RUN}}" in merge


def test_kubernetes_example_is_an_indexed_job_whose_shard_count_matches_completions() -> None:
    yaml = pytest.importorskip("yaml")
    job = yaml.safe_load((REPO / "examples" / "kubernetes" / "lora-eval-indexed-job.yaml").read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    (container,) = spec["template"]["spec"]["containers"]
    command = container["command"]
    assert command[command.index("--lora-shard") + 1] == "auto"
    count = int(command[command.index("--lora-shard-count") + 1])
    assert count == spec["completions"]
    shards = [resolve("auto", count=count, env={"JOB_COMPLETION_INDEX": str(i)}) for i in range(spec["completions"])]
    assert sorted(s.index for s in shards) == list(range(1, count + 1))


# --- end to end: N processes, merged, equal the unsharded run ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scheduler", "count"),
    [("slurm", 3), ("indexed-job", 2)],
)
def test_auto_shards_as_processes_merged_equal_the_unsharded_run(pytester: pytest.Pytester, monkeypatch, scheduler, count) -> None:
    pytest.importorskip("jinja2")
    from test_merge_shard import _pytest, _suite, values

    from lora_harness.cli.main import main
    from lora_harness.report.manifest import read_manifest

    config = _suite(pytester.path)
    full = _pytest(pytester, config, "--run-name", "sweep-full")
    full.assert_outcomes(passed=10, xfailed=6)
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_STEP", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    outcomes = []
    for task in range(count):
        if scheduler == "slurm":  # an array --array=10-(10+count-1): the index is relative to the array's min
            for key, value in slurm(10 + task, count, first=10).items():
                monkeypatch.setenv(key, value)
            args = ("--lora-shard", "auto")
        else:
            monkeypatch.setenv("JOB_COMPLETION_INDEX", str(task))
            args = ("--lora-shard", "auto", "--lora-shard-count", str(count))
        result = _pytest(pytester, config, "--run-name", "sweep", *args)  # the same command line in every task
        outcomes.append(sum(result.parseoutcomes().get(k, 0) for k in ("passed", "xfailed")))
    assert sum(outcomes) == 16 and all(outcomes)  # every image and checkpoint test ran exactly once in all
    reports = pytester.path / "reports"
    shard_dirs = [reports / f"sweep-shard{i}of{count}" for i in range(1, count + 1)]
    assert all((d / "run.json").is_file() for d in shard_dirs)  # each task wrote its own run folder
    assert [read_manifest(d).sessions[0].shard for d in shard_dirs] == [f"{i}/{count}" for i in range(1, count + 1)]
    parts = [{key for key, _ in values(d)} for d in shard_dirs]
    assert sum(len(p) for p in parts) == len(set().union(*parts))  # no case on two shards
    assert main(["merge", *map(str, shard_dirs), "--out", str(reports / "sweep")]) == 0
    assert values(reports / "sweep") == values(reports / "sweep-full")
