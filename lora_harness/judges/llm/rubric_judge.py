"""`llm_rubric`: the study's seven questions to a vision LLM, as one call per image (`combined`, default)
or one call per question (`per_criterion`, the study's way, for comparability).

Each metric's value is the mean over `repeats` samples; `raw` keeps every sample, their mean and standard
deviation, the justification(s), and the API calls the score drew on (tokens, cost, cached or not).
A criterion that could not be answered validly becomes a Score with `error` set, never a value.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from lora_harness.core.cases import EvalCase
from lora_harness.judges.base import JudgeContext, Score, register
from lora_harness.judges.llm.cache import cache_key
from lora_harness.judges.llm.calls import CallOutcome, CallPlan, when_all
from lora_harness.judges.llm.client import Endpoint
from lora_harness.judges.llm.common import EncodedImage, LlmJudgeBase, check_rgb, mean_std, text_tokens
from lora_harness.judges.llm.encoding import pixel_hash
from lora_harness.judges.llm.options import RubricOptions, parse_options
from lora_harness.judges.llm.rubrics import (
    RUBRIC_VERSION,
    Criterion,
    group_digest,
    images_needed,
    rubric_messages,
    select_criteria,
)
from lora_harness.judges.llm.schemas import answer_schema, parse_criteria


@dataclass(frozen=True)
class _Slot:
    """Which plan answers which criteria of which item for which repeat."""

    item: int
    criteria: tuple[Criterion, ...]
    repeat: int
    plan: int


@register("llm_rubric")
class LlmRubricJudge(LlmJudgeBase):
    name = "llm_rubric"
    version = RUBRIC_VERSION

    def __init__(self, *, client_factory: Callable[[Endpoint], Any] | None = None, **options: Any) -> None:
        opts: RubricOptions = parse_options(RubricOptions, self.name, options)
        try:
            self.criteria = select_criteria(opts.criteria)
        except ValueError as exc:
            raise ValueError(f"{self.name} judge: option criteria: {exc}") from None
        super().__init__(opts, client_factory=client_factory)
        self.options: RubricOptions = opts

    @property
    def metrics(self) -> list[str]:
        return [c.metric for c in self.criteria]

    def judge(self, case: EvalCase, image: np.ndarray, context: JudgeContext) -> list[Score]:
        return self.judge_batch([(case, image)], context)[0]

    def groups(self, with_reference: bool) -> list[tuple[Criterion, ...]]:
        """The criteria asked together in one call: all of them (combined) or one each (per_criterion)."""
        askable = tuple(c for c in self.criteria if with_reference or not c.needs_reference)
        if not askable:
            return []
        if self.options.mode == "combined":
            return [askable]
        return [(c,) for c in askable]

    def judge_batch(self, items: Sequence[tuple[EvalCase, np.ndarray]], context: JudgeContext) -> list[list[Score]]:
        """Scores per item, in order. Raises ModelUnavailable when no endpoint is configured: the harness
        records the metrics as missing and skips the tests they gate, with the reason saying how to enable."""
        return self.collect(self.submit_batch(items, context), context)

    def submit_batch(
        self, items: Sequence[tuple[EvalCase, np.ndarray]], context: JudgeContext, *, ahead: bool = False
    ) -> list["Future[list[Score]]"]:
        """Like `judge_batch`, but returns at once: one future per item, resolved when that item's answers
        are in. The harness submits the next checkpoints this way (`ahead=True`: behind every request a test
        is waiting for) while the current one is in flight."""
        self.require_endpoint()
        references = self.references(context)
        plans: list[CallPlan] = []
        slots: list[_Slot] = []
        early: dict[int, dict[str, Score]] = {}
        for index, (case, image) in enumerate(items):
            pixels, problem = check_rgb(image)
            if problem is not None:
                early[index] = {c.metric: self._error(c, problem) for c in self.criteria}
                continue
            early[index] = {}
            if not references:
                for c in self.criteria:
                    if c.needs_reference:
                        early[index][c.metric] = self._error(
                            c, "needs a reference photo of the person: set person.references in the eval config"
                        )
            encoded = EncodedImage(pixels, self.options)
            digest = pixel_hash(pixels)
            for group in self.groups(bool(references)):
                for repeat in range(self.options.repeats):
                    slots.append(_Slot(index, group, repeat, len(plans)))
                    plans.append(self._plan(case, encoded, digest, group, repeat, references, context))
        outcomes = self.runner(context).submit(plans, ahead=ahead) if plans else []
        by_item: dict[int, list[_Slot]] = {}
        for slot in slots:
            by_item.setdefault(slot.item, []).append(slot)
        return [
            when_all([outcomes[s.plan] for s in by_item.get(i, [])], self._item_scorer(early[i], by_item.get(i, []), outcomes))
            for i in range(len(items))
        ]

    def _item_scorer(self, early: dict[str, Score], mine: list[_Slot], outcomes: list["Future[CallOutcome]"]) -> Callable[[], list[Score]]:
        return lambda: self._scores(early, mine, {s.plan: outcomes[s.plan].result() for s in mine})

    def _plan(
        self,
        case: EvalCase,
        image: EncodedImage,
        digest: str,
        group: tuple[Criterion, ...],
        repeat: int,
        references: list[tuple[str, EncodedImage]],
        context: JudgeContext,
    ) -> CallPlan:
        roles = images_needed(group)
        uses_prompt = any(c.uses_prompt for c in group)
        refs = references if "reference" in roles else []
        fields = {
            **self.request_fields(repeat, group_digest(group)),
            "criteria": [c.key for c in group],
            "image": digest,
            "references": [d for d, _ in refs],
            "with_edges": "edges" in roles,
            "prompt": case.prompt.text if uses_prompt else None,
            "trigger": context.trigger if uses_prompt else None,
            "description": context.description if uses_prompt else None,
        }
        keys = tuple(c.key for c in group)

        def build() -> list[dict[str, Any]]:
            urls = {"generated": image.url()}
            if refs:
                urls["reference"] = refs[0][1].url()
            if "edges" in roles:
                urls["edges"] = image.edges_url()
            messages = rubric_messages(
                group, urls, prompt=case.prompt.text, trigger=context.trigger,
                description=context.description, detail=self.options.detail,
            )
            if len(refs) > 1:  # extra reference photos follow the first one
                extra = [
                    part
                    for _, ref in refs[1:]
                    for part in (
                        {"type": "text", "text": "Another reference photo of the same person:"},
                        {"type": "image_url", "image_url": {"url": ref.url(), "detail": self.options.detail}},
                    )
                ]
                content = messages[1]["content"]
                messages[1]["content"] = content[:2] + extra + content[2:]
            return messages

        def parse(content: str | None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
            answers, problems = parse_criteria(content, keys)
            return {k: {"score": a.score, "justification": a.textual_justification} for k, a in answers.items()}, problems

        image_tokens = image.tokens() * (1 + ("edges" in roles)) + sum(r.tokens() for _, r in refs)
        rubric_text = " ".join(c.rubric for c in group)
        return CallPlan(
            key=cache_key(fields),
            keys=keys,
            schema_name="rubric_answer" if len(keys) > 1 else f"criterion_{keys[0]}",
            schema=answer_schema(keys),
            build_messages=build,
            parse=parse,
            tokens=image_tokens + text_tokens(rubric_text, case.prompt.text) + self.options.max_tokens,
            seed=self.seed(repeat),
            cache_fields=fields,
        )

    def _scores(self, early: dict[str, Score], mine: list[_Slot], outcomes: dict[int, CallOutcome]) -> list[Score]:
        scores = []
        for criterion in self.criteria:
            if criterion.metric in early:
                scores.append(early[criterion.metric])
                continue
            taken = sorted((s for s in mine if criterion in s.criteria), key=lambda s: s.repeat)
            scores.append(self._score(criterion, [(s.repeat, outcomes[s.plan]) for s in taken], len(taken[0].criteria) if taken else 1))
        return scores

    def _score(self, criterion: Criterion, repeats: list[tuple[int, CallOutcome]], asked_with: int) -> Score:
        samples: list[dict[str, Any]] = []
        problems: list[str] = []
        calls: list[dict[str, Any]] = []
        for repeat, outcome in repeats:
            calls += [c.to_raw() for c in outcome.calls]
            answer = outcome.answers.get(criterion.key)
            if answer is None:
                label = f"repeat {repeat + 1} of {len(repeats)}: " if len(repeats) > 1 else ""
                problems.append(label + outcome.problems.get(criterion.key, "no answer"))
            else:
                samples.append(answer)
        raw: dict[str, Any] = {
            "criterion": criterion.key,
            "mode": self.options.mode,
            "asked_with": asked_with,  # criteria answered by the same call
            "model": self.options.model,
            "rubric_version": RUBRIC_VERSION,
            "repeats": len(repeats),
            "samples": [float(s["score"]) for s in samples],
            "justification": samples[0]["justification"] if samples else None,
            "cached": bool(repeats) and all(o.cached for _, o in repeats),
            "calls": calls,
            "tokens": {
                "prompt": sum(c["prompt_tokens"] for c in calls if not c["cached"]),
                "completion": sum(c["completion_tokens"] for c in calls if not c["cached"]),
            },
        }
        stopped = next((o.fatal for _, o in repeats if o.fatal), None)
        if stopped:
            raw["stopped"] = stopped  # the run-wide stop (401/403/404): one summary line names it
        if len(repeats) > 1:
            raw["justifications"] = [s["justification"] for s in samples]
        if samples:
            raw["mean"], raw["std"] = mean_std(raw["samples"])
        if problems or not samples:
            return Score(criterion.metric, None, raw, error=f"{self.name}: {criterion.metric}: " + "; ".join(problems or ["no answer"]))
        return Score(criterion.metric, raw["mean"], raw)

    def _error(self, criterion: Criterion, message: str) -> Score:
        return Score(criterion.metric, None, {"criterion": criterion.key}, error=f"{self.name}: {criterion.metric}: {message}")
