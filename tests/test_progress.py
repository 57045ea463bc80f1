"""Per-phase progress lines: one per finished checkpoint at most every `interval` seconds, with an ETA."""

from __future__ import annotations

from lora_harness.run.progress import PhaseProgress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_and_estimate_the_rest() -> None:
    clock = Clock()
    progress = PhaseProgress("judging", total_groups=3, total_items=6, interval=10, clock=clock)
    lines = []
    for group, at in (("ck1", 1), ("ck1", 4), ("ck2", 12), ("ck2", 14), ("ck3", 16), ("ck3", 18)):
        clock.now = at
        lines.append(progress.item_done(group, 2))
    # ck1 ends 3 s after the start (quiet); ck2 ends at 14 s (a line); ck3 at 18 s ends the phase (a line)
    assert lines[:3] == [None, None, None] and lines[4] is None
    assert lines[3] == (
        "lora-harness judging: 2/3 checkpoints (4/6 images), last ck2, elapsed 0:00:13, ETA 0:00:06"
    )
    assert lines[5].endswith("3/3 checkpoints (6/6 images), last ck3, elapsed 0:00:17, done")


def test_short_runs_stay_quiet_and_zero_interval_reports_every_checkpoint() -> None:
    clock = Clock()
    quiet = PhaseProgress("judging", total_groups=2, total_items=2, interval=10, clock=clock)
    assert [quiet.item_done("a", 1), quiet.item_done("b", 1)] == [None, None]
    chatty = PhaseProgress("generation", total_groups=2, total_items=2, interval=0, clock=clock)
    assert chatty.item_done("a", 1).startswith("lora-harness generation: 1/2 checkpoints")
    assert chatty.item_done("b", 1).endswith("done")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 59.6, 3725, -3)] == ["0:00:00", "0:01:00", "1:02:05", "0:00:00"]
