"""`--lora-shard i/N`: split an evaluation across N machines, deterministically, by checkpoint.

Every machine collects the same cases (same config), so every machine can compute the same split without
talking to the others. The unit is the checkpoint: its images and its aggregate test must run on one machine,
or the aggregate would see only part of the images. Checkpoints are ordered by a stable hash of their key
(sha256, not Python's salted `hash`) and dealt round-robin, so shards differ by at most one checkpoint and a
checkpoint's shard does not depend on collection order. Tests that belong to no checkpoint run on every shard.

`--lora-shard auto` reads the shard from the scheduler the run is in, so one command line serves every task:
- Slurm job arrays: `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT` (and
  `SLURM_ARRAY_TASK_STEP` for `--array=0-30:10`): shard (ID - MIN) / STEP + 1 of COUNT;
- Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` (0-based) with the count from `--lora-shard-count N` (the Job's
  `completions`; Kubernetes does not put it in the environment);
- a CI matrix writes the shard itself: `--lora-shard ${{ matrix.shard }}/4`.
An automatic shard writes its own run folder (`<run.name>-shard<i>of<N>`), since every task of an array gets
the same `--run-name`; `lora-harness merge` joins them into one run equal to the unsharded one.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

T = TypeVar("T")
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ValueError):
    pass


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as written on the command line
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        match = _SPEC.match(text or "")
        if not match:
            raise ShardError(f"--lora-shard {text!r}: expected i/N, e.g. --lora-shard 1/4 for the first of four machines")
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 1 <= index <= count:
            raise ShardError(f"--lora-shard {text!r}: i must be between 1 and N (N >= 1), e.g. 1/{max(count, 1)}")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


AUTO = "auto"
SLURM_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")
INDEXED_JOB_VAR = "JOB_COMPLETION_INDEX"


def _int_var(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ShardError(f"--lora-shard auto: {name}={value!r} is not an integer") from None


def from_environment(env: Mapping[str, str] | None = None, *, count: int | None = None) -> Shard:
    """The shard of this task of a Slurm job array or a Kubernetes Indexed Job (see the module docstring)."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env:
        missing = [name for name in SLURM_VARS if name not in env]
        if missing:
            raise ShardError(f"--lora-shard auto: SLURM_ARRAY_TASK_ID is set but {', '.join(missing)} is not; run under sbatch --array")
        task, first, total = (_int_var(env, name) for name in SLURM_VARS)
        step = _int_var(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
        if step < 1 or (task - first) % step:
            raise ShardError(f"--lora-shard auto: Slurm task {task} is not on the array's grid (min {first}, step {step})")
        if count is not None and count != total:
            raise ShardError(f"--lora-shard-count {count} disagrees with SLURM_ARRAY_TASK_COUNT={total}; drop --lora-shard-count")
        return _checked((task - first) // step + 1, total, "Slurm array")
    if INDEXED_JOB_VAR in env:
        if count is None:
            raise ShardError(
                f"--lora-shard auto: {INDEXED_JOB_VAR} is set (a Kubernetes Indexed Job) but the number of shards is not; "
                "add --lora-shard-count N with N = the Job's spec.completions"
            )
        return _checked(_int_var(env, INDEXED_JOB_VAR) + 1, count, "Indexed Job")
    raise ShardError(
        "--lora-shard auto: no array index in the environment (SLURM_ARRAY_TASK_ID for Slurm job arrays, "
        f"{INDEXED_JOB_VAR} for Kubernetes Indexed Jobs); in a CI matrix pass --lora-shard i/N explicitly"
    )


def _checked(index: int, count: int, where: str) -> Shard:
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"--lora-shard auto: {where} task {index} of {count} is out of range (shards are 1..N)")
    return Shard(index, count)


def resolve(spec: str, *, count: int | None = None, env: Mapping[str, str] | None = None) -> Shard:
    """`--shard` as given: `auto` (from the scheduler's environment) or `i/N`."""
    if (spec or "").strip().lower() == AUTO:
        return from_environment(env, count=count)
    if count is not None:
        raise ShardError("--lora-shard-count goes with --lora-shard auto (an explicit --lora-shard i/N already says N)")
    return Shard.parse(spec)


def run_name_suffix(shard: Shard) -> str:
    """The run folder suffix of an automatic shard, e.g. `-shard2of4`."""
    return f"-shard{shard.index}of{shard.count}"


def stable_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def assign(keys: Iterable[str], count: int) -> dict[str, int]:
    """Shard (1-based) of each distinct key: hash order, dealt round-robin."""
    ordered = sorted(set(keys), key=lambda key: (stable_hash(key), key))
    return {key: position % count + 1 for position, key in enumerate(ordered)}


def split(items: Sequence[T], shard: Shard, key_of: Callable[[T], str | None]) -> tuple[list[T], list[T]]:
    """(selected, deselected) for this shard; items without a key are selected on every shard."""
    keys = [key_of(item) for item in items]
    shards = assign((k for k in keys if k is not None), shard.count)
    selected, deselected = [], []
    for item, key in zip(items, keys):
        (selected if key is None or shards[key] == shard.index else deselected).append(item)
    return selected, deselected
