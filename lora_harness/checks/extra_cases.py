"""Leakage and strength cases: extra generated images derived from the run's generated checkpoints.

Why separate LoRA names: a case's key is (LoRA name, step, prompt, seed). `<lora>-leakage` and
`<lora>-scale<s>` keep the training step, so the CSV and the trend plots show leakage (or identity at a
scale) over training, while the per-image and per-checkpoint thresholds of the LoRA itself, which are meant
for trigger prompts, never see them. `extra` says which checkpoint they belong to (`of`) and the scale.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from lora_harness.core.cases import CaseRole, Checkpoint, EvalCase, Prompt, checkpoint_order, latest_per_lora
from lora_harness.core.prompts import parse_prompt_line, prompt_lines
from lora_harness.judges.model_loading import UNAVAILABLE_KEY
from lora_harness.sources.generate import DEFAULT_SEED, GeneratedCase, image_path

if TYPE_CHECKING:
    from lora_harness.core.config import EvalConfig
    from lora_harness.run.harness import Harness

LEAKAGE: CaseRole = "leakage"
STRENGTH: CaseRole = "strength"
MEMORIZATION = "memorization"  # the `judge` of stored memorization scores


def owner(case: EvalCase) -> Checkpoint:
    """The checkpoint a case belongs to: a leakage / strength case's LoRA under test, else its own."""
    if "of" not in case.extra:
        return Checkpoint.of(case)
    return Checkpoint(case.extra["of"], case.training_step, case.step_kind)


def check_targets(harness: "Harness", check_role: str) -> list[Checkpoint]:
    """The LoRA checkpoints that have cases of this role, in sweep order."""
    found = {owner(c) for c in harness.check_cases if c.role == check_role}
    return sorted(found, key=checkpoint_order)


def cases_for(harness: "Harness", checkpoint: Checkpoint, check_role: str) -> list[EvalCase]:
    return [c for c in harness.check_cases if c.role == check_role and owner(c) == checkpoint]


def metric_value(harness: "Harness", case: EvalCase, metric: str) -> tuple[float | None, str | None, str | None]:
    """(value, error, unavailable reason) of one metric of a case, judged now if needed."""
    score = harness.score(case).get(metric)
    if score is None:
        return None, f"{case.key}: no {metric} score", None
    if score.error is not None:
        return None, f"{case.key}: {score.error}", None
    if score.value is None and UNAVAILABLE_KEY in score.raw:
        return None, None, str(score.raw[UNAVAILABLE_KEY])
    return score.value, None, None


def scale_label(scale: float) -> str:
    return f"scale{scale:g}"


def _checkpoints(cases: Iterable[EvalCase], which: str) -> dict[Checkpoint, list[GeneratedCase]]:
    """Generated, non-baseline checkpoints with their cases; "latest": each LoRA's last step only."""
    found: dict[Checkpoint, list[GeneratedCase]] = {}
    for case in cases:
        if isinstance(case, GeneratedCase) and case.lora is not None and case.role == "lora":
            found.setdefault(Checkpoint.of(case), []).append(case)
    if which == "latest":
        found = {c: found[c] for c in latest_per_lora(found).values()}
    return found


def _prompts(texts: list[str] | None, template: Prompt, key: str, prefix: str) -> list[Prompt]:
    """Check prompts take the checkpoint's generation settings unless they carry their own inline options."""
    if texts is None:
        return [replace(template, prompt_id=f"{prefix}{template.prompt_id}")]
    usable = [line for _, line in prompt_lines(texts)]  # kohya's comment rule, as for a prompt file
    out = []
    for i, text in enumerate(usable):
        p = parse_prompt_line(text, f"{prefix}{i:02d}", source=key)
        defaults = {f: getattr(template, f) for f in ("negative", "width", "height", "steps", "cfg_scale", "guidance")}
        out.append(replace(p, **{f: v for f, v in defaults.items() if getattr(p, f) is None}))
    return out


def _case(base: GeneratedCase, loraname: str, prompt: Prompt, seed: int, scale: float, role: CaseRole,
          extra: dict[str, str], run_dir: Path) -> GeneratedCase:
    case = GeneratedCase(
        loraname=loraname, training_step=base.training_step, step_kind=base.step_kind,
        prompt=replace(prompt, seed=seed), image_path=Path(), seed=seed, variant=role, role=role,
        extra={**extra, "of": base.loraname}, lora=base.lora, lora_scale=scale,
    )
    return replace(case, image_path=image_path(run_dir, loraname, case.step_label, prompt.prompt_id, seed))


def expand_check_cases(cases: list[EvalCase], config: "EvalConfig") -> list[GeneratedCase]:
    """The leakage and strength cases of every generated checkpoint the `[leakage]` / `[strength]` sections ask for."""
    out: list[GeneratedCase] = []
    leak, strength = config.leakage, config.strength
    if leak is not None:
        for ckpt, group in _checkpoints(cases, leak.checkpoints).items():
            first = group[0]
            seeds = leak.seeds or [first.seed if first.seed is not None else DEFAULT_SEED]
            for prompt in _prompts(leak.prompts, first.prompt, "leakage.prompts", "L"):
                for seed in seeds:
                    out.append(_case(first, f"{ckpt.loraname}-{LEAKAGE}", prompt, seed, first.lora_scale,
                                     LEAKAGE, {}, config.run_dir))
    if strength is not None:
        for ckpt, group in _checkpoints(cases, strength.checkpoints).items():
            first = group[0]
            seeds = strength.seeds or [first.seed if first.seed is not None else DEFAULT_SEED]
            for scale in strength.scales:
                for prompt in _prompts(strength.prompts, first.prompt, "strength.prompts", "S"):
                    for seed in seeds:
                        out.append(_case(first, f"{ckpt.loraname}-{scale_label(scale)}", prompt, seed, scale,
                                         STRENGTH, {"scale": f"{scale:g}"}, config.run_dir))
    return out
