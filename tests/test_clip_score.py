"""clip_score on a tiny random CLIP saved to a folder: load, batch, score, and every way it can go wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from lora_harness.core.cases import EvalCase, Prompt
from lora_harness.judges import JudgeContext, create_judge
from lora_harness.judges.clip_score import ClipScoreJudge, replace_trigger
from lora_harness.judges.model_loading import ModelError, ModelUnavailable

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torchmetrics")

from tiny_models import save_tiny_bert, save_tiny_clip, save_tiny_vit  # noqa: E402


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


CONTEXT = JudgeContext(trigger="<phigep>", description="a woman astronaut")


def case(i: int, text: str = "photo of <phigep> smiling") -> EvalCase:
    return EvalCase("lora", 100, Prompt(f"{i:02d}", text), Path(f"/samples/{i}.png"))


def photos() -> list[np.ndarray]:
    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), np.ascontiguousarray(data.astronaut()[::2, ::-1])]


def test_replace_trigger_uses_the_description() -> None:
    assert replace_trigger("photo of <phigep>, <phigep> smiling", "<phigep>", "a woman") == (
        "photo of a woman, a woman smiling",
        True,
    )
    assert replace_trigger("a photo", "<phigep>", "a woman") == ("a photo", False)
    assert replace_trigger("a <phigep>", None, "a woman") == ("a <phigep>", False)


def test_scores_a_batch_the_same_as_one_at_a_time(clip_dir: Path) -> None:
    judge = ClipScoreJudge(model=str(clip_dir), batch_size=2)
    items = [(case(i, f"photo {i} of <phigep>"), image) for i, image in enumerate(photos())]
    batched = judge.judge_batch(items, CONTEXT)
    single = [judge.judge(c, image, CONTEXT) for c, image in items]
    assert len(batched) == len(items)
    for (b,), (s,) in zip(batched, single):
        assert b.error is None and b.metric == "clip_score"
        assert b.raw["cosine"] == pytest.approx(s.raw["cosine"], abs=1e-5)
        assert b.value == pytest.approx(max(100 * b.raw["cosine"], 0.0), abs=1e-4)
        assert 0.0 <= b.value <= 100.0
    cosines = [b.raw["cosine"] for (b,) in batched]
    assert len(set(np.round(cosines, 6))) == len(cosines), "different images and texts must score differently"
    assert batched[3][0].raw["text"] == "photo 3 of a woman astronaut"
    assert batched[3][0].raw["trigger_replaced"] is True


def test_matches_torchmetrics_public_clip_score(clip_dir: Path) -> None:
    """The per-image value equals torchmetrics' own `clip_score` for that single image and text."""
    import torch
    from torchmetrics.functional.multimodal import clip_score

    from lora_harness.judges.clip_score import ClipFeatures
    from transformers import CLIPModel, CLIPProcessor

    judge = ClipScoreJudge(model=str(clip_dir))
    image = data.astronaut()
    (score,) = judge.judge(case(0, "a woman astronaut in a suit"), image, JudgeContext())
    model, processor = CLIPModel.from_pretrained(clip_dir), CLIPProcessor.from_pretrained(clip_dir)
    with torch.no_grad():
        expected = clip_score(
            torch.from_numpy(image).permute(2, 0, 1),
            "a woman astronaut in a suit",
            model_name_or_path=lambda: (ClipFeatures(model), processor),
        )
    assert score.value == pytest.approx(float(expected), abs=1e-3)


def test_images_are_scored_in_batches_of_batch_size(clip_dir: Path) -> None:
    judge = ClipScoreJudge(model=str(clip_dir), batch_size=2)
    calls: list[int] = []
    original = judge._cosines

    def counting(loaded, arrays, texts):
        calls.append(len(arrays))
        return original(loaded, arrays, texts)

    judge._cosines = counting  # type: ignore[method-assign]
    judge.judge_batch([(case(i), image) for i, image in enumerate(photos())], CONTEXT)
    assert calls == [2, 2, 1]


def test_description_option_and_fallback(clip_dir: Path) -> None:
    image = data.astronaut()
    (own,) = ClipScoreJudge(model=str(clip_dir), description="an astronaut").judge(case(0), image, CONTEXT)
    assert own.raw["text"] == "photo of an astronaut smiling"
    (fallback,) = ClipScoreJudge(model=str(clip_dir)).judge(case(0), image, JudgeContext(trigger="<phigep>"))
    assert fallback.raw["text"] == "photo of a person smiling"
    (other_trigger,) = ClipScoreJudge(model=str(clip_dir), trigger="ohwx").judge(
        case(0, "ohwx woman"), image, CONTEXT
    )
    assert other_trigger.raw["text"] == "a woman astronaut woman"


def test_long_prompts_are_truncated_and_flagged(clip_dir: Path) -> None:
    with pytest.warns(UserWarning, match="longer than max_position_embeddings=77"):  # torchmetrics truncates
        (score,) = ClipScoreJudge(model=str(clip_dir)).judge(case(0, "word " * 40), data.astronaut(), CONTEXT)
    assert score.error is None and score.value is not None
    assert score.raw["truncated"] is True and score.raw["text_tokens"] > 77


def test_bad_images_get_their_own_message_while_the_rest_are_scored(clip_dir: Path) -> None:
    astronaut = data.astronaut()
    grey = data.camera()
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    sixteen = astronaut.astype(np.uint16) * 257
    tiny = astronaut[:20, :20]
    huge = np.asarray(np.broadcast_to(astronaut[:1, :1], (3000, 2000, 3)))
    wrong_shape = np.zeros((64, 64, 5), np.uint8)
    images = [grey, rgba, sixteen, tiny, huge, wrong_shape, astronaut]
    results = ClipScoreJudge(model=str(clip_dir)).judge_batch([(case(i), im) for i, im in enumerate(images)], CONTEXT)
    (g,), (r,), (s,), (t,), (h,), (w,), (a,) = results
    assert g.error is None and g.raw["input"] == "grayscale converted to RGB"
    assert r.error is None and r.raw["input"] == "RGBA composited on white"
    assert s.error is None and s.raw["input"] == "uint16 image scaled to 8-bit"
    # Opaque RGBA and 16-bit copies of the astronaut are the same picture: same score as the plain one.
    assert r.raw["cosine"] == pytest.approx(a.raw["cosine"], abs=1e-5)
    assert s.raw["cosine"] == pytest.approx(a.raw["cosine"], abs=1e-5)
    assert t.value is None and "20x20 px" in t.error and "min_side" in t.error
    assert h.error is None and "downscaled from 2000x3000" in h.raw["input"]
    assert w.value is None and "shape (64, 64, 5)" in w.error
    assert a.error is None and a.value is not None


def test_missing_model_folder_is_unavailable_with_instructions(tmp_path: Path) -> None:
    judge = ClipScoreJudge(model=str(tmp_path / "no-such-clip"))  # construction never loads
    with pytest.raises(ModelUnavailable, match=r"no-such-clip.*does not exist.*hf download"):
        judge.judge_batch([(case(0), data.astronaut())], CONTEXT)
    with pytest.raises(ModelUnavailable):  # the failure is remembered, not retried per checkpoint
        judge.judge_batch([(case(1), data.astronaut())], CONTEXT)


def test_hub_model_not_cached_offline_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    judge = create_judge("clip_score")  # the study's default: openai/clip-vit-base-patch16
    with pytest.raises(ModelUnavailable, match=r"openai/clip-vit-base-patch16.*not in the Hugging Face cache.*HF_HUB_OFFLINE.*hf download"):
        judge.judge_batch([(case(0), data.astronaut())], CONTEXT)


@pytest.mark.parametrize("builder, kind", [(save_tiny_vit, "ViTModel"), (save_tiny_bert, "BertModel")])
def test_a_model_of_the_wrong_kind_is_a_clear_error(tmp_path: Path, builder, kind: str) -> None:
    folder = builder(tmp_path / "model")
    judge = ClipScoreJudge(model=str(folder))
    with pytest.raises(ModelError, match=rf"holds a {kind}.*not a CLIP-style model"):
        judge.judge_batch([(case(0), data.astronaut())], CONTEXT)


def test_a_folder_without_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="no config.json"):
        ClipScoreJudge(model=str(tmp_path / "weights")).judge(case(0), data.astronaut(), CONTEXT)
    with pytest.raises(ModelError, match="is a file"):
        ClipScoreJudge(model=str(tmp_path / "weights" / "model.safetensors")).judge(case(0), data.astronaut(), CONTEXT)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"modle": "x"}, "unknown option.*'modle'.*allowed options: model"),
        ({"device": "gpu"}, "option 'device' = 'gpu' is invalid"),
        ({"batch_size": 0}, "option 'batch_size' = 0 is invalid"),
        ({"dtype": "float64"}, "option 'dtype' = 'float64' is invalid"),
        ({"model": ""}, "option 'model' = '' is invalid"),
    ],
)
def test_bad_options_fail_at_construction(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_judge("clip_score", options)


def test_the_loaded_model_is_shared_by_judges_in_one_process(clip_dir: Path) -> None:
    from lora_harness.judges.model_loading import cached

    a = ClipScoreJudge(model=str(clip_dir))
    b = ClipScoreJudge(model=str(clip_dir), batch_size=3)
    a.judge(case(0), data.astronaut(), CONTEXT)
    b.judge(case(0), data.astronaut(), CONTEXT)
    assert a._loaded.get().model.model is b._loaded.get().model.model
    assert cached(("auto-model", str(clip_dir.resolve()), "cpu", "float32"), lambda: None) is a._loaded.get().model.model
