"""Token and cost accounting: what each API call used (from the response's `usage`) and what it cost.

Every score's `raw["calls"]` lists the calls it drew on, each with a unique `id`. In `combined` mode one
call answers all criteria, so the same call appears under several metrics: totals count each id once.
Answers served from the cache are listed with `cached: true` and cost nothing in this run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Prices:
    """USD per million tokens; None when unknown (tokens are still counted)."""

    input_per_mtok: float | None = None
    output_per_mtok: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.input_per_mtok is None or self.output_per_mtok is None:
            return None
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class CallRecord:
    id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    cached: bool = False
    retries: int = 0  # transient failures (429/5xx/timeouts) before this response
    valid: bool = True  # False: the answer was unusable and asked again

    def to_raw(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _CALL_FIELDS}  # dataclasses.asdict deep-copies: 10x slower


_CALL_FIELDS = tuple(CallRecord.__dataclass_fields__)


@dataclass
class CostTotals:
    calls: int = 0
    cached: int = 0
    invalid: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True

    def add(self, call: Mapping[str, Any]) -> None:
        if call.get("cached"):
            self.cached += 1
            return
        self.calls += 1
        self.invalid += 0 if call.get("valid", True) else 1
        self.retries += int(call.get("retries") or 0)
        self.prompt_tokens += int(call.get("prompt_tokens") or 0)
        self.completion_tokens += int(call.get("completion_tokens") or 0)
        if call.get("cost_usd") is None:
            self.priced = False
        else:
            self.cost_usd += float(call["cost_usd"])

    def describe(self, judge: str) -> str:
        cost = f"${self.cost_usd:.4f}" if self.priced and self.calls else "cost unknown (set price_input_per_mtok and price_output_per_mtok)"
        if not self.calls:
            cost = "$0"
        return (
            f"{judge}: {self.calls} API call(s), {self.cached} answer(s) from cache, {self.retries} transient "
            f"retr{'y' if self.retries == 1 else 'ies'}, {self.invalid} unusable answer(s) asked again; "
            f"{self.prompt_tokens:,} input + {self.completion_tokens:,} output tokens, {cost}"
        )


def totals_by_judge(rows: Iterable[Any]) -> dict[str, CostTotals]:
    """Totals per judge over score rows (anything with `.judge` and `.raw`), each call id counted once."""
    totals: dict[str, CostTotals] = {}
    seen: set[tuple[str, str, bool]] = set()
    for row in rows:
        calls = row.raw.get("calls") if isinstance(row.raw, Mapping) else None
        if not isinstance(calls, list):
            continue
        for call in calls:
            if not isinstance(call, Mapping) or "id" not in call:
                continue
            marker = (row.judge, str(call["id"]), bool(call.get("cached")))
            if marker in seen:
                continue
            seen.add(marker)
            totals.setdefault(row.judge, CostTotals()).add(call)
    return totals


def summary_lines(rows: Iterable[Any]) -> list[str]:
    """One line per LLM judge for the terminal summary; empty when no row carries call records. A judge the
    run stopped (401/403/404: a wrong key, no access, a model that does not exist) gets one more line
    saying why, once, instead of the same error on every score."""
    rows = list(rows)
    lines = [totals.describe(judge) for judge, totals in sorted(totals_by_judge(rows).items())]
    stopped: dict[str, tuple[str, int]] = {}
    for row in rows:
        reason = row.raw.get("stopped") if isinstance(row.raw, Mapping) else None
        if isinstance(reason, str) and reason:
            first, count = stopped.get(row.judge, (reason, 0))
            stopped[row.judge] = (first, count + 1)
    for judge, (reason, count) in sorted(stopped.items()):
        lines.append(
            f"{judge}: STOPPED, no further requests sent after: {reason} ({count} score(s) without an answer; "
            "fix it and rerun: answers already given come from the cache)"
        )
    return lines
