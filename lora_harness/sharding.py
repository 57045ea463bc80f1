"""`--shard i/N`: split an evaluation across N machines, deterministically, by checkpoint.

Every machine collects the same cases (same config), so every machine can compute the same split without
talking to the others. The unit is the checkpoint: its images and its aggregate test must run on one machine,
or the aggregate would see only part of the images. Checkpoints are ordered by a stable hash of their key
(sha256, not Python's salted `hash`) and dealt round-robin, so shards differ by at most one checkpoint and a
checkpoint's shard does not depend on collection order. Tests that belong to no checkpoint run on every shard.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

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
