"""A short Markdown verdict of a run, for `$GITHUB_STEP_SUMMARY` or a merge-request comment.

CI pages show Markdown, not `report.html`; the summary says in a few lines what the gate decided: the badge
word, each gated checkpoint with its outcome and failing metrics, the exit code's meaning, and a link to the
full report. The verdict comes from `run_verdict`, the one function that asks the report layer (the same
view and badge `report.html` shows), so a change of the verdict rules reaches the summary through it alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

EXIT_CODES = {
    0: "passed: every gated checkpoint met its gates",
    1: "gate did not pass: a gated threshold, baseline, snapshot or check failed, or a gated decision was "
       "inconclusive or incomplete",
    2: "interrupted, or an error in a test module",
    3: "internal error of pytest or a plugin",
    4: "usage error: bad config, sample folder, prompt file or option; nothing was judged",
    5: "no tests collected",
}


@dataclass(frozen=True)
class CheckpointOutcome:
    loraname: str
    step: str
    outcome: str  # as report.html shows it: pass, fail, xfail, error, ...
    failing_metrics: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunVerdict:
    badge: str  # the word on report.html's badge: pass, fail, inconclusive, incomplete, scored
    gated: list[CheckpointOutcome]
    failing_cases: int


def run_verdict(run_dir: Path) -> RunVerdict:
    """The badge word and the gated checkpoints' outcomes, exactly as the run's report.html shows them."""
    from lora_harness.report.html import _verdict  # the report's badge rule
    from lora_harness.report.manifest import read_manifest
    from lora_harness.report.view import Rules, build_view
    from lora_harness.run.store import latest_rows, read_rows
    from lora_harness.verdicts.outcome import verdicts_of

    manifest = read_manifest(run_dir)
    view = build_view(latest_rows(read_rows(run_dir)), Rules.of_manifest(manifest) if manifest else Rules())
    if manifest is not None:  # baseline, snapshot and check tests' verdicts count for the badge too
        view.test_verdicts = verdicts_of(manifest.latest_verdicts())
    gated = [
        CheckpointOutcome(
            c.loraname, c.step, c.status,
            sorted(m for m, cell in c.cells.items() if cell.ok is False or cell.undecided or cell.failures or cell.errors),
        )
        for c in view.checkpoints if c.gated
    ]
    failing = sum(1 for case in view.failing_cases if case.gated)
    return RunVerdict(_verdict(view), gated, failing)


def render_summary(
    title: str, verdict: RunVerdict | None, *, exit_status: int, report_link: str | None, errors: list[str] = ()
) -> str:
    """The Markdown text: a heading with the badge word, a table of gated checkpoints, the exit code, a link."""
    word = "ERROR" if errors else (verdict.badge.upper() if verdict else "NO SCORES")
    other_failure = not errors and int(exit_status) == 1 and word not in ("FAIL", "INCONCLUSIVE", "INCOMPLETE")
    if other_failure:  # thresholds passed, but a regression test (baseline, snapshot, check) failed
        word = "FAIL"
    icon = {"PASS": "✅", "FAIL": "❌", "ERROR": "⚠️", "INCONCLUSIVE": "❔", "INCOMPLETE": "⚠️"}.get(word, "ℹ️")
    lines = [f"## {icon} lora-harness: {title} — {word}", ""]
    if other_failure:
        lines += [
            f"The thresholds pass (report verdict: {verdict.badge if verdict else 'none'}), but a regression test "
            "failed (baseline, snapshot or LoRA check): see the failed tests in the job log or JUnit report.", "",
        ]
    for error in errors:
        lines += ["```", error, "```", ""]
    if verdict is not None and verdict.gated:
        lines += ["| gated checkpoint | outcome | failing metrics |", "|---|---|---|"]
        for c in verdict.gated:
            lines.append(f"| {c.loraname} {c.step} | {c.outcome} | {', '.join(c.failing_metrics) or '—'} |")
        lines.append("")
        if verdict.failing_cases:
            lines += [f"{verdict.failing_cases} image(s) of gated checkpoints outside a per-image bound (under a minimum or over a maximum).", ""]
    meaning = EXIT_CODES.get(int(exit_status), "see pytest's exit codes")
    lines.append(f"Exit code {int(exit_status)}: {meaning}.")
    if report_link:
        lines += ["", f"Full report: [report.html]({report_link})"]
    return "\n".join(lines) + "\n"


def report_link(report: Path | None, summary_path: Path, url: str | None) -> str | None:
    """`url` when given (e.g. a CI artifact page), else the report's path relative to the summary file."""
    if url:
        return url
    if report is None:
        return None
    return Path(os.path.relpath(report.resolve(), summary_path.resolve().parent)).as_posix()


def write_summary(path: Path, text: str) -> None:
    """Append, as `$GITHUB_STEP_SUMMARY` expects (each step adds its part); a new file otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
