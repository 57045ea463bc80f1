"""`llm_pairwise`: the study's "tournament" as a regression gate, "candidate not worse than baseline".

Two images made from the same prompt and seed by two checkpoints (or two variants) are shown together; the
model answers a preference in [0, 1] (0 = first image better, 1 = second). Models favour one position, so
each pair is asked in both orders: with a bias b toward the first image the answers are t - b and
(1 - t) - b, and their combination t = (p_baseline_first + 1 - p_candidate_first) / 2 cancels it; the bias
itself, ((1 - p_candidate_first) - p_baseline_first) / 2, is kept in `raw`.

The comparison passes when the mean preference for the candidate over all pairs is at least 0.5 - margin
(0.5 = no preference); the message gives the bootstrap interval so a reader can tell noise from a trend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from lora_harness.core.cases import Checkpoint, EvalCase
from lora_harness.judges.base import JudgeContext, Score, register
from lora_harness.judges.llm.cache import cache_key
from lora_harness.judges.llm.calls import CallOutcome, CallPlan
from lora_harness.judges.llm.client import Endpoint
from lora_harness.judges.llm.common import EncodedImage, LlmJudgeBase, check_rgb, mean_std, text_tokens
from lora_harness.judges.llm.encoding import pixel_hash
from lora_harness.judges.llm.options import PairwiseOptions, parse_options
from lora_harness.judges.llm.rubrics import PAIRWISE_RUBRIC, RUBRIC_VERSION, pairwise_digest, pairwise_messages
from lora_harness.judges.llm.schemas import pair_schema, parse_pair

METRIC = "pairwise_preference"
ORDERS = ("baseline_first", "candidate_first")


@dataclass(frozen=True)
class Comparison:
    """Candidate checkpoint vs baseline checkpoint over their images with the same prompt and seed."""

    judge: str
    baseline: Checkpoint
    candidate: Checkpoint
    pairs: tuple[tuple[EvalCase, EvalCase], ...]  # (baseline case, candidate case)
    unmatched: tuple[str, ...]  # candidate cases without a baseline partner
    margin: float

    @property
    def key(self) -> str:
        return f"{self.candidate.key}-vs-{self.baseline.key}"

    @property
    def test_id(self) -> str:
        return f"{self.candidate.test_id}-vs-{self.baseline.test_id}"


@dataclass(frozen=True)
class ComparisonResult:
    comparison: Comparison
    scores: tuple[Score, ...]  # one per pair, in order

    @property
    def values(self) -> list[float]:
        return [s.value for s in self.scores if s.value is not None]

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.scores if s.error is not None]

    @property
    def threshold(self) -> float:
        return 0.5 - self.comparison.margin

    policy: Any = None  # verdicts.outcome.Policy of the run (what an undecided comparison does)

    @property
    def decision(self) -> str:
        """Three ways, like every gate: the preference's interval clears 0.5 - margin (pass), lies wholly
        below it (fail), or straddles it (inconclusive); a judge error is an error, no answer incomplete."""
        if self.errors:
            return "error"
        if not self.values:
            return "incomplete"
        ci = self._ci()
        if ci.low >= self.threshold:
            return "pass"
        return "fail" if ci.high < self.threshold else "inconclusive"

    @property
    def not_worse(self) -> bool:
        return self.decision == "pass"

    def _ci(self) -> Any:
        from lora_harness.verdicts.stats import mean_ci  # scipy: only when a comparison is decided

        return mean_ci(self.values)

    def check(self) -> None:
        """The test outcome of "candidate not worse than baseline"; the message lists every pair and the interval."""
        __tracebackhide__ = True
        from lora_harness.verdicts.enforce import enforce
        from lora_harness.verdicts.outcome import Policy, decide

        verdict = decide([(self.decision, self.describe())], gated=True)  # type: ignore[list-item]
        enforce(verdict, f"pairwise comparison of {self.comparison.candidate.key}", self.policy or Policy())

    def describe(self) -> str:
        c = self.comparison
        head = f"{c.candidate.key} vs baseline {c.baseline.key} ({len(c.pairs)} pairs, same prompt and seed)"
        lines = [head]
        if self.values:
            ci = self._ci()
            verdict = {"pass": "not worse", "fail": "WORSE", "inconclusive": "INCONCLUSIVE (the interval straddles the minimum)"}.get(
                self.decision, self.decision.upper())
            lines.append(
                f"mean preference for the candidate = {ci.mean:.3f} ({ci.confidence:.0%} CI {ci.low:.3f}..{ci.high:.3f}, "
                f"n={ci.n}); minimum {self.threshold:.3f} = 0.5 - margin {c.margin:g}: {verdict}"
            )
        for (base, cand), score in zip(c.pairs, self.scores):
            shown = "error" if score.value is None else f"{score.value:.3f}"
            lines.append(f"  {cand.key} vs {base.key}: {shown}")
        lines += [f"  judge error: {e}" for e in self.errors]
        if c.unmatched:
            lines.append(f"  no baseline image with the same prompt and seed for: {', '.join(c.unmatched)}")
        return "\n".join(lines)


def select_checkpoint(selector: str, cases: Sequence[EvalCase], *, option: str) -> Checkpoint:
    """`name` (latest step), `name@latest` or `name@<step>`; name is a LoRA name or a source name."""
    name, _, step = selector.partition("@")
    matching = [c for c in cases if name in (c.loraname, c.variant)]
    if not matching:
        known = sorted({c.loraname for c in cases} | {c.variant for c in cases if c.variant})
        raise ValueError(f"llm_pairwise option {option} = {selector!r}: no LoRA or source named {name!r}; known: {', '.join(known)}")
    checkpoints = {Checkpoint.of(c) for c in matching}
    if step in ("", "latest"):
        return max(checkpoints, key=lambda c: (c.step_kind, c.training_step))
    try:
        wanted = int(step)
    except ValueError:
        raise ValueError(f"llm_pairwise option {option} = {selector!r}: the part after '@' must be a step number or 'latest'") from None
    found = [c for c in checkpoints if c.training_step == wanted]
    if not found:
        steps = sorted(c.training_step for c in checkpoints)
        raise ValueError(f"llm_pairwise option {option} = {selector!r}: {name} has no step {wanted}; steps: {steps}")
    return found[0]


def plan_comparison(judge: str, baseline: str, candidate: str, margin: float, cases: Sequence[EvalCase]) -> Comparison:
    base_ckpt = select_checkpoint(baseline, cases, option="baseline")
    cand_ckpt = select_checkpoint(candidate, cases, option="candidate")
    if base_ckpt == cand_ckpt:
        raise ValueError(f"llm_pairwise: baseline {baseline!r} and candidate {candidate!r} are the same checkpoint ({base_ckpt.key})")

    def of(ckpt: Checkpoint) -> list[EvalCase]:
        return [c for c in cases if Checkpoint.of(c) == ckpt]

    by_prompt = {(c.prompt.text, c.seed): c for c in of(base_ckpt)}
    pairs, unmatched = [], []
    for cand in of(cand_ckpt):
        base = by_prompt.get((cand.prompt.text, cand.seed))
        (pairs.append((base, cand)) if base is not None else unmatched.append(cand.key))
    if not pairs:
        raise ValueError(
            f"llm_pairwise: {cand_ckpt.key} and {base_ckpt.key} share no image with the same prompt and seed; "
            "compare checkpoints sampled from the same sample_prompts.txt"
        )
    return Comparison(judge, base_ckpt, cand_ckpt, tuple(pairs), tuple(unmatched), margin)


@register("llm_pairwise")
class LlmPairwiseJudge(LlmJudgeBase):
    """Not a per-image judge: the harness calls `compare_batch` for the comparisons it plans."""

    name = "llm_pairwise"
    version = RUBRIC_VERSION

    def __init__(self, *, client_factory: Callable[[Endpoint], Any] | None = None, **options: Any) -> None:
        opts: PairwiseOptions = parse_options(PairwiseOptions, self.name, options)
        super().__init__(opts, client_factory=client_factory)
        self.options: PairwiseOptions = opts

    @property
    def metrics(self) -> list[str]:
        return [METRIC]

    def comparisons(self, cases: Sequence[EvalCase]) -> list[Comparison]:
        return [plan_comparison(self.name, self.options.baseline, self.options.candidate, self.options.margin, cases)]

    def compare_batch(
        self, pairs: Sequence[tuple[EvalCase, np.ndarray, EvalCase, np.ndarray]], context: JudgeContext
    ) -> list[list[Score]]:
        """One `pairwise_preference` Score per (baseline, candidate) pair: the candidate's preference."""
        self.require_endpoint()
        references = self.references(context)
        reference = references[0] if references else None
        plans: list[CallPlan] = []
        slots: list[list[tuple[str, int, int]]] = []  # per pair: (order, repeat, plan index)
        early: dict[int, Score] = {}
        for index, (base_case, base_image, cand_case, cand_image) in enumerate(pairs):
            slots.append([])
            base, problem_b = check_rgb(base_image)
            cand, problem_c = check_rgb(cand_image)
            if problem_b or problem_c:
                early[index] = Score(METRIC, None, {}, error=f"{self.name}: {problem_b or problem_c}")
                continue
            encoded = {"baseline": (pixel_hash(base), EncodedImage(base, self.options)),
                       "candidate": (pixel_hash(cand), EncodedImage(cand, self.options))}
            for order in ORDERS:
                first, second = ("baseline", "candidate") if order == "baseline_first" else ("candidate", "baseline")
                for repeat in range(self.options.repeats):
                    slots[-1].append((order, repeat, len(plans)))
                    plans.append(self._plan(cand_case, encoded[first], encoded[second], reference, repeat, context))
        outcomes = self.runner(context).run(plans) if plans else []
        return [
            [early[i] if i in early else self._score(pairs[i][0], pairs[i][2], slots[i], outcomes)]
            for i in range(len(pairs))
        ]

    def _plan(
        self,
        case: EvalCase,
        first: tuple[str, EncodedImage],
        second: tuple[str, EncodedImage],
        reference: tuple[str, EncodedImage] | None,
        repeat: int,
        context: JudgeContext,
    ) -> CallPlan:
        fields = {
            **self.request_fields(repeat, pairwise_digest()),
            "pair": [first[0], second[0]],
            "reference": reference[0] if reference else None,
            "prompt": case.prompt.text,
            "trigger": context.trigger,
            "description": context.description,
        }

        def build() -> list[dict[str, Any]]:
            return pairwise_messages(
                first[1].url(), second[1].url(), reference[1].url() if reference else None,
                prompt=case.prompt.text, trigger=context.trigger, description=context.description,
                detail=self.options.detail,
            )

        def parse(content: str | None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
            answer, problem = parse_pair(content)
            if answer is None:
                return {}, {"preference": problem or "no answer"}
            return {"preference": {"preference": answer.preference, "justification": answer.textual_justification}}, {}

        tokens = first[1].tokens() + second[1].tokens() + (reference[1].tokens() if reference else 0)
        return CallPlan(
            key=cache_key(fields),
            keys=("preference",),
            schema_name="pairwise_preference",
            schema=pair_schema(),
            build_messages=build,
            parse=parse,
            tokens=tokens + text_tokens(PAIRWISE_RUBRIC, case.prompt.text) + self.options.max_tokens,
            seed=self.seed(repeat),
            cache_fields=fields,
        )

    def _score(
        self, base: EvalCase, cand: EvalCase, slots: list[tuple[str, int, int]], outcomes: list[CallOutcome]
    ) -> Score:
        answers: list[dict[str, Any]] = []
        problems: list[str] = []
        calls: list[dict[str, Any]] = []
        for order, repeat, plan in slots:
            outcome = outcomes[plan]
            calls += [c.to_raw() for c in outcome.calls]
            answer = outcome.answers.get("preference")
            if answer is None:
                problems.append(f"{order} (repeat {repeat + 1}): {outcome.problems.get('preference', 'no answer')}")
                continue
            p = float(answer["preference"])
            answers.append({
                "order": order, "repeat": repeat, "preference": p,
                "candidate_preference": p if order == "baseline_first" else 1.0 - p,
                "justification": answer["justification"],
            })
        raw: dict[str, Any] = {
            "baseline": base.key,
            "candidate": cand.key,
            "baseline_image": str(base.image_path),
            "answers": answers,
            "model": self.options.model,
            "rubric_version": RUBRIC_VERSION,
            "cached": all(outcomes[p].cached for _, _, p in slots),
            "calls": calls,
        }
        stopped = next((outcomes[p].fatal for _, _, p in slots if outcomes[p].fatal), None)
        if stopped:
            raw["stopped"] = stopped  # the run-wide stop (401/403/404): one summary line names it
        if answers:
            raw["mean"], raw["std"] = mean_std([a["candidate_preference"] for a in answers])
            firsts = [a["preference"] for a in answers if a["order"] == "baseline_first"]
            seconds = [a["preference"] for a in answers if a["order"] == "candidate_first"]
            if firsts and seconds:
                raw["position_bias"] = float(((1 - np.mean(seconds)) - np.mean(firsts)) / 2)
        if problems:
            return Score(METRIC, None, raw, error=f"{self.name}: " + "; ".join(problems))
        return Score(METRIC, raw["mean"], raw)
