"""Config sections that name LoRAs of sources the command line replaced (`--lora-samples`).

The shipped config compares the demo's two LoRAs (`[baseline] lora = "personal-lora-demo-r4"`). Pointed at a
user's own sample folder with `--lora-samples`, those names are stale: failing the whole run over a
comparison nobody asked for made the README's own command fail. Such sections are dropped, each with a
one-line note, and only then: in a config that lists its own sources, a wrong name stays an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lora_harness.core.config import EvalConfig

PAIR_JUDGES = ("llm_pairwise",)


@dataclass(frozen=True)
class StaleSection:
    """One section that cannot apply to this run's LoRAs, with the note that says so."""

    key: str  # dotted config key, e.g. "baseline.lora", "judges[3].options.baseline"
    judge_index: int | None  # a pair judge to drop; None: the [baseline] section
    note: str


def stale_sections(config: EvalConfig, loranames: Iterable[str], source_names: Iterable[str] = ()) -> list[StaleSection]:
    """Sections naming a LoRA that is not among `loranames`, or (pair judges, which may name a source)
    among `source_names` either."""
    loras = set(loranames)
    present = loras | set(source_names)
    found: list[StaleSection] = []
    baseline = config.baseline
    if baseline is not None and baseline.lora is not None:
        if baseline.lora not in loras:
            found.append(StaleSection(
                "baseline.lora", None,
                f"[baseline] skipped: lora = {baseline.lora!r} is not among the LoRAs of --lora-samples "
                f"({', '.join(sorted(loras)) or 'none'})",
            ))
        elif len(loras - {baseline.lora}) == 0:
            found.append(StaleSection(
                "baseline.lora", None,
                f"[baseline] skipped: lora = {baseline.lora!r} is the only LoRA of --lora-samples; nothing to compare",
            ))
    for index, judge in enumerate(config.judges):
        if judge.name not in PAIR_JUDGES:
            continue
        for option in ("baseline", "candidate"):
            selector = judge.options.get(option)
            if isinstance(selector, str) and selector.partition("@")[0] not in present:
                found.append(StaleSection(
                    f"judges[{index}].options.{option}", index,
                    f"judge {judge.name} skipped: {option} = {selector!r} is not among the LoRAs of --lora-samples "
                    f"({', '.join(sorted(present)) or 'none'})",
                ))
                break
    return found


def without_stale(config: EvalConfig, stale: list[StaleSection]) -> EvalConfig:
    """The config without the stale sections (a copy; the config is frozen)."""
    dropped = {s.judge_index for s in stale if s.judge_index is not None}
    update: dict[str, object] = {"judges": [j for i, j in enumerate(config.judges) if i not in dropped]}
    if any(s.judge_index is None for s in stale):
        update["baseline"] = None
    return config.model_copy(update=update)
