"""The evaluation case: one image to judge, and the identity it is stored and reported under.

A case is the unit of everything downstream (a test id, a store row key, a CSV row), so its key must be
stable across runs, workers and machines: it is derived only from the LoRA name, step, prompt and seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Protocol, TypeVar

StepKind = Literal["step", "epoch"]
# What a case is for, one typed field read everywhere: "lora" (an image of the LoRA under test, judged and
# gated), "baseline" (a reference: compared with, never gated), "leakage" / "strength" (extra images of the
# LoRA checks, judged and stored but never under the thresholds).
CaseRole = Literal["lora", "baseline", "leakage", "strength"]
CHECK_ROLES: tuple[CaseRole, ...] = ("leakage", "strength")


@dataclass(frozen=True)
class Prompt:
    """A sample prompt with the kohya inline options that were parsed out of its text."""

    prompt_id: str  # zero-padded like kohya's file names ("00", "01", ...)
    text: str
    negative: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None  # kohya --l
    guidance: float | None = None  # kohya --g (FLUX distilled guidance)


@dataclass(frozen=True)
class EvalCase:
    """One image of one checkpoint for one prompt (and seed)."""

    loraname: str
    training_step: int
    prompt: Prompt
    image_path: Path
    step_kind: StepKind = "step"
    timestamp: str | None = None
    seed: int | None = None
    variant: str | None = None  # the configured source name the case came from
    role: CaseRole = "lora"
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_baseline(self) -> bool:
        return self.role == "baseline"

    @property
    def is_check(self) -> bool:
        """A leakage / strength image: stored and reported, never under the LoRA's own thresholds."""
        return self.role in CHECK_ROLES

    @property
    def prompt_id(self) -> str:
        return self.prompt.prompt_id

    @property
    def step_label(self) -> str:
        return step_label(self.training_step, self.step_kind)

    @property
    def checkpoint_key(self) -> str:
        return checkpoint_key(self.loraname, self.training_step, self.step_kind)

    @property
    def key(self) -> str:
        """Stable identity of the case: checkpoint, prompt and seed."""
        seed = "" if self.seed is None else f"-s{self.seed}"
        return f"{self.checkpoint_key}-p{self.prompt_id}{seed}"

    @property
    def test_id(self) -> str:
        return safe_id(self.key)


@dataclass(frozen=True)
class Checkpoint:
    """A (LoRA, step) pair: the unit that aggregate assertions and gates are about."""

    loraname: str
    training_step: int
    step_kind: StepKind = "step"

    @classmethod
    def of(cls, case: EvalCase) -> "Checkpoint":
        return cls(case.loraname, case.training_step, case.step_kind)

    @property
    def key(self) -> str:
        return checkpoint_key(self.loraname, self.training_step, self.step_kind)

    @property
    def test_id(self) -> str:
        return safe_id(self.key)


def step_label(step: int, kind: str) -> str:
    """kohya's zero-padded step, or `e`-prefixed epoch, as it appears in file names and the study's CSV."""
    return f"{'e' if kind == 'epoch' else ''}{step:06d}"


def checkpoint_key(loraname: str, step: int, kind: str) -> str:
    """One spelling of a checkpoint's identity, shared by cases, checkpoints and store rows."""
    return f"{loraname}-{'epoch' if kind == 'epoch' else 'step'}{step:06d}"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def safe_id(text: str) -> str:
    """Test ids and file names must survive shells, xdist and allure: keep a conservative alphabet."""
    return _UNSAFE.sub("_", text).strip("_") or "case"


class _AtStep(Protocol):
    """Anything placed in a sweep: checkpoints, cases, store rows."""

    @property
    def loraname(self) -> str: ...
    @property
    def step_kind(self) -> str: ...
    @property
    def training_step(self) -> int: ...


_C = TypeVar("_C", bound=_AtStep)


def checkpoint_order(item: _AtStep) -> tuple[str, str, int]:
    """The one sort key of a sweep: by LoRA name, then step kind, then step (everywhere checkpoints are listed)."""
    return (item.loraname, item.step_kind, item.training_step)


class _OfPrompt(_AtStep, Protocol):
    @property
    def prompt_id(self) -> str: ...
    @property
    def seed(self) -> int | None: ...


def case_order(case: _OfPrompt) -> tuple[str, str, int, str, int]:
    """Cases (and store rows) in sweep order, then by prompt and seed: the order of tests, CSV rows and reports."""
    return (*checkpoint_order(case), case.prompt_id, case.seed or 0)


def latest_per_lora(checkpoints: Iterable[_C]) -> dict[str, _C]:
    """Each LoRA's last checkpoint in `checkpoint_order` (an epoch-named sweep sorts before a step-named one)."""
    latest: dict[str, _C] = {}
    for ckpt in checkpoints:
        newest = latest.get(ckpt.loraname)
        if newest is None or checkpoint_order(ckpt) > checkpoint_order(newest):
            latest[ckpt.loraname] = ckpt
    return latest
