"""The seven rubric questions of the study, in one readable place, and the chat messages built from them.

The study asked GPT-4o seven separate questions per image (see `shared/README.md`); each criterion here
keeps the study's CSV column as its metric name, says which images it needs, and holds its rubric text.
`RUBRIC_VERSION` is the human label of this wording; the answer cache keys on digests of the texts each call
sends (`group_digest`), so any wording change re-asks the calls it touches even when the label is not bumped.

Messages are plain `openai` chat-completion dicts: a system message with the judge's role and the answer
contract, and one user message whose content interleaves text labels with the images, so the model always
knows which picture is which.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, Sequence

RUBRIC_VERSION = "1"

ImageRole = Literal["generated", "reference", "edges"]


@dataclass(frozen=True)
class Criterion:
    """One rubric question: its answer key, the study's metric name, the images it needs, its text."""

    key: str  # property name in the structured answer
    metric: str  # the study's CSV column
    title: str
    needs: tuple[ImageRole, ...]  # images besides the prompt text, in the order they are shown
    uses_prompt: bool
    rubric: str

    @property
    def needs_reference(self) -> bool:
        return "reference" in self.needs


CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        key="person_present",
        metric="eval_person_llm",
        title="person present",
        needs=("generated",),
        uses_prompt=False,
        rubric=(
            "Is at least one human person clearly visible in the generated image? Answer 1 if a person "
            "(face or body) is visible, 0 if not (empty scene, only objects or animals, an unrecognisable "
            "blob). Use only 0 or 1."
        ),
    ),
    Criterion(
        key="same_person",
        metric="eval_same_person_llm",
        title="same person as the reference",
        needs=("reference", "generated"),
        uses_prompt=False,
        rubric=(
            "Is the person in the generated image the same person as in the reference photo? Compare the "
            "facial features (face shape, nose, mouth, eyes), hair colour and hair length, eye colour and "
            "facial hair (beard, moustache). Ignore clothing, pose, lighting and background. 1 = certainly "
            "the same person, 0.5 = similar but doubtful, 0 = clearly a different person or no person."
        ),
    ),
    Criterion(
        key="prompt_adherence",
        metric="eval_prompt_adherence_llm",
        title="prompt adherence including likeness",
        needs=("reference", "generated"),
        uses_prompt=True,
        rubric=(
            "How well does the generated image follow the prompt? The trigger token in the prompt stands "
            "for the person in the reference photo, so showing that same person is part of following the "
            "prompt. Consider the person's likeness, the scene, actions, clothing, objects and style asked "
            "for. 1 = everything asked for is there, 0 = the image ignores the prompt."
        ),
    ),
    Criterion(
        key="prompt_adherence_scene",
        metric="eval_prompt_adherence_llm_simpler_prompt",
        title="prompt adherence, scene only",
        needs=("reference", "generated"),
        uses_prompt=True,
        rubric=(
            "How well does the generated image follow the prompt's scene description: setting, actions, "
            "clothing, objects and style? Do not judge whether the person looks like the reference photo; "
            "only whether a person is present where the prompt asks for one. 1 = the scene matches the "
            "prompt, 0 = it does not."
        ),
    ),
    Criterion(
        key="image_quality",
        metric="eval_image_quality_llm",
        title="image quality",
        needs=("generated", "edges"),
        uses_prompt=False,
        rubric=(
            "What is the overall technical and aesthetic quality of the generated image: sharpness, detail, "
            "composition, lighting and coherence? The edge map (second image) shows its structure. Judge "
            "quality only; artifacts and anatomy are judged separately. 1 = professional photo quality, "
            "0 = unusable."
        ),
    ),
    Criterion(
        key="limb_quality",
        metric="eval_limb_quality_llm",
        title="limb quality",
        needs=("generated", "edges"),
        uses_prompt=False,
        rubric=(
            "Are the hands, fingers, arms and legs of the person anatomically correct, with plausible "
            "proportions? Look for extra, missing, fused or twisted fingers and limbs; the edge map shows "
            "their outlines. 1 = anatomically correct, 0 = badly malformed. If no person is visible, "
            "answer 0."
        ),
    ),
    Criterion(
        key="artifacts",
        metric="eval_artifacts_quality_llm",
        title="freedom from artifacts",
        needs=("generated", "edges"),
        uses_prompt=False,
        rubric=(
            "Is the generated image free of generation artifacts: unnatural or contradictory light, "
            "inconsistent shadows, distorted facial features, blown-out or over-saturated regions, noise, "
            "grid or checkerboard patterns, smeared textures? The edge map helps to see patterns. "
            "1 = no artifacts, 0 = severe artifacts."
        ),
    ),
)

CRITERIA_BY_KEY = {c.key: c for c in CRITERIA}
CRITERIA_BY_METRIC = {c.metric: c for c in CRITERIA}

SYSTEM_PROMPT = (
    "You are a strict, consistent evaluator of AI-generated images of a specific person. You answer in JSON "
    "that follows the given schema. Every score is a number from 0 to 1 (1 is best) and comes with a short "
    "textual justification that names what you saw. Judge only what is visible in the images."
)

PAIRWISE_RUBRIC = (
    "Image A and image B were generated from the same prompt with the same seed by two versions of a model "
    "trained to draw the person in the reference photo. Which image is better overall? Consider, in this "
    "order: whether it shows that same person, how well it follows the prompt, anatomy (hands, limbs) and "
    "freedom from artifacts (unnatural light, over-saturated or blown-out regions, noise, distortions). "
    "Answer `preference` from 0 to 1: 0 = image A is clearly better, 0.5 = equally good, 1 = image B is "
    "clearly better. The order in which the images are shown says nothing about their quality."
)

IMAGE_LABELS: dict[ImageRole, str] = {
    "reference": "Reference photo of the person:",
    "generated": "Generated image:",
    "edges": "Canny edge map of the generated image:",
}


def _sha16(parts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def group_digest(criteria: Sequence[Criterion]) -> str:
    """Digest of every text a call asking `criteria` together sends, and of nothing else.

    The answer cache keys on this instead of one digest of the whole rubric, so rewording one criterion re-asks only the
    calls that carry it (in `per_criterion` mode: that criterion alone), not all seven. The label set is
    the fixed one, not only the labels this group shows: a relabelled image invalidates every call.
    """
    return _sha16(
        [RUBRIC_VERSION, SYSTEM_PROMPT, *IMAGE_LABELS.values()]
        + [f"{c.key}|{c.metric}|{c.title}|{c.needs}|{c.uses_prompt}|{c.rubric}" for c in criteria]
    )


def pairwise_digest() -> str:
    """Digest of the texts a pairwise call sends (the criteria's wording is no part of it)."""
    return _sha16([RUBRIC_VERSION, SYSTEM_PROMPT, PAIRWISE_RUBRIC, *IMAGE_LABELS.values()])


def select_criteria(names: Sequence[str] | None) -> tuple[Criterion, ...]:
    """Criteria by metric name or answer key, in the study's order; None means all seven."""
    if names is None:
        return CRITERIA
    chosen = set()
    for name in names:
        criterion = CRITERIA_BY_METRIC.get(name) or CRITERIA_BY_KEY.get(name)
        if criterion is None:
            allowed = ", ".join(c.metric for c in CRITERIA)
            raise ValueError(f"unknown criterion {name!r}; allowed: {allowed} (or their short keys)")
        chosen.add(criterion.key)
    if not chosen:
        raise ValueError("criteria is empty; list at least one of: " + ", ".join(c.metric for c in CRITERIA))
    return tuple(c for c in CRITERIA if c.key in chosen)


def images_needed(criteria: Sequence[Criterion]) -> tuple[ImageRole, ...]:
    """The images one call shows, in a fixed order: reference first, then the image, then its edge map."""
    roles = {role for c in criteria for role in c.needs}
    return tuple(role for role in ("reference", "generated", "edges") if role in roles)


def prompt_block(prompt: str, trigger: str | None, description: str | None) -> str:
    """The prompt as the image was asked for, and what its trigger token means."""
    lines = [f"Prompt the image was generated from: {prompt!r}"]
    if trigger:
        who = f" ({description})" if description else ""
        lines.append(f"The token {trigger!r} in the prompt stands for the person in the reference photo{who}.")
    elif description:
        lines.append(f"The person in the reference photo: {description}.")
    return "\n".join(lines)


def rubric_messages(
    criteria: Sequence[Criterion],
    images: dict[ImageRole, str],
    *,
    prompt: str,
    trigger: str | None,
    description: str | None,
    detail: str,
) -> list[dict[str, Any]]:
    """Chat messages asking `criteria` about one generated image. `images` maps role -> data URL."""
    content: list[dict[str, Any]] = []
    for role in images_needed(criteria):
        content.append({"type": "text", "text": IMAGE_LABELS[role]})
        content.append({"type": "image_url", "image_url": {"url": images[role], "detail": detail}})
    text: list[str] = []
    if any(c.uses_prompt for c in criteria):
        text.append(prompt_block(prompt, trigger, description))
    if len(criteria) == 1:
        text.append(f"Question ({criteria[0].title}): {criteria[0].rubric}")
        text.append("Answer with `textual_justification` and `score`.")
    else:
        text.append("Answer each question separately, under its key:")
        text.extend(f"- `{c.key}` ({c.title}): {c.rubric}" for c in criteria)
        text.append("Each key holds `textual_justification` and `score`.")
    content.append({"type": "text", "text": "\n".join(text)})
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def pairwise_messages(
    image_a: str,
    image_b: str,
    reference: str | None,
    *,
    prompt: str,
    trigger: str | None,
    description: str | None,
    detail: str,
) -> list[dict[str, Any]]:
    """Chat messages asking which of two images of the same prompt and seed is better."""
    content: list[dict[str, Any]] = []
    if reference is not None:
        content += [
            {"type": "text", "text": IMAGE_LABELS["reference"]},
            {"type": "image_url", "image_url": {"url": reference, "detail": detail}},
        ]
    content += [
        {"type": "text", "text": "Image A:"},
        {"type": "image_url", "image_url": {"url": image_a, "detail": detail}},
        {"type": "text", "text": "Image B:"},
        {"type": "image_url", "image_url": {"url": image_b, "detail": detail}},
        {"type": "text", "text": prompt_block(prompt, trigger, description) + "\n" + PAIRWISE_RUBRIC},
    ]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]
