"""clip_i and dino on tiny random backbones, plus known answers for the shared image and similarity math."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from lora_harness.judges import JudgeContext, create_judge
from lora_harness.judges.embedding import (
    ImageInputError,
    ReferencePhotoError,
    cosine_matrix,
    l2_normalize,
    mean_max,
    prepare_image,
)
from lora_harness.judges.model_loading import ModelError, ModelUnavailable
from tiny_models import save_tiny_bert, save_tiny_clip, save_tiny_dinov2, save_tiny_vit

# --- known answers: cosine, aggregation, image preparation (no model) ------------------------------------------


def test_cosine_matrix_known_answers() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    expected = np.array(
        [
            [1.0, 0.0, -1.0],
            [1 / np.sqrt(2), 1 / np.sqrt(2), -1 / np.sqrt(2)],
            [0.0, 0.0, 0.0],  # a zero vector is similar to nothing
        ]
    )
    np.testing.assert_allclose(cosine_matrix(a, b), expected, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(a[:2]), axis=1), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(n, d\) and \(m, d\)"):
        cosine_matrix(a, np.ones((2, 3)))


def test_mean_and_max_over_references_known_answers() -> None:
    similarities = np.array([[0.2, 0.8, 0.5], [-0.4, 0.1, 0.0]])
    mean, best = mean_max(similarities)
    np.testing.assert_allclose(mean, [0.5, -0.1])
    np.testing.assert_allclose(best, [0.8, 0.1])
    with pytest.raises(ValueError, match="at least one reference"):
        mean_max(np.zeros((2, 0)))


def test_prepare_image_converts_what_it_can() -> None:
    rgb = data.astronaut()
    grey = prepare_image(rgb[:, :, 0])
    assert grey.array.shape == (512, 512, 3) and grey.notes == ("grayscale converted to RGB",)
    half_alpha = np.dstack([np.zeros((40, 40, 3), np.uint8), np.full((40, 40), 128, np.uint8)])
    composited = prepare_image(half_alpha)
    assert composited.notes == ("RGBA composited on white",)
    assert int(composited.array[0, 0, 0]) == 127  # black at 50% alpha over white
    sixteen = prepare_image(rgb.astype(np.uint16) * 257)
    np.testing.assert_array_equal(sixteen.array, rgb)
    assert prepare_image(rgb.astype(np.float32) / 255.0).array.max() == rgb.max()
    huge = prepare_image(np.zeros((5000, 2500, 3), np.uint8), max_side=1024)
    assert huge.array.shape == (1024, 512, 3) and huge.original_size == (2500, 5000)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((20, 500, 3), np.uint8), "image is 500x20 px; at least 32 px"),
        (np.zeros((64, 64, 2), np.uint8), r"shape \(64, 64, 2\)"),
        (np.zeros((4, 64, 64, 3), np.uint8), r"shape \(4, 64, 64, 3\)"),
        (np.full((64, 64), 2.0), r"float image values must lie in \[0, 1\]"),
        (np.full((64, 64), np.nan), "NaN"),
        (np.full((64, 64), -1, np.int16), "negative values"),
        (np.zeros((64, 64), np.complex64), "unsupported image dtype complex64"),
    ],
)
def test_prepare_image_refuses_what_it_cannot(array: np.ndarray, message: str) -> None:
    with pytest.raises(ImageInputError, match=message):
        prepare_image(array)


# --- the judges on tiny random backbones -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random CLIP, ViT (DINO v1 architecture) and DINOv2 folders; skips without the `embed` extra."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("models")
    return {
        "clip": save_tiny_clip(root / "clip"),
        "vit": save_tiny_vit(root / "vit"),
        "dinov2": save_tiny_dinov2(root / "dinov2"),
    }


def references() -> JudgeContext:
    images = [data.astronaut(), data.coffee(), data.chelsea()]
    return JudgeContext(reference_images=images, reference_paths=[Path(f"{n}.png") for n in ("astronaut", "coffee", "cat")])


@pytest.mark.parametrize("judge_name, model", [("clip_i", "clip"), ("dino", "vit"), ("dino", "dinov2")])
def test_similarity_to_each_reference_with_mean_and_max(judge_name: str, model: str, models: dict[str, Path]) -> None:
    judge = create_judge(judge_name, {"model": str(models[model]), "batch_size": 2})
    context = references()
    samples = [data.astronaut(), data.rocket(), data.coffee(), np.ascontiguousarray(data.chelsea()[:, ::-1])]
    results = judge.judge_batch([(None, s) for s in samples], context)  # type: ignore[misc]
    assert [[s.metric for s in r] for r in results] == [[f"{judge_name}_mean", f"{judge_name}_max"]] * 4
    loaded = judge._loaded.get()
    expected = cosine_matrix(judge.embed(loaded, samples), judge.embed(loaded, list(context.reference_images)))
    for (mean, best), row in zip(results, expected):
        assert mean.error is None and best.error is None
        assert mean.value == pytest.approx(row.mean(), abs=1e-5)
        assert best.value == pytest.approx(row.max(), abs=1e-5)
        assert list(mean.raw["per_reference"]) == ["astronaut.png", "coffee.png", "cat.png"]
    # A sample identical to a reference has similarity 1 to it, which is then the max.
    assert results[0][0].raw["per_reference"]["astronaut.png"] == pytest.approx(1.0, abs=1e-5)
    assert results[0][1].value == pytest.approx(1.0, abs=1e-5) and results[0][1].raw["best_reference"] == "astronaut.png"
    assert results[2][1].raw["best_reference"] == "coffee.png"
    assert loaded.pooling == ("features" if model == "clip" else "cls")


def test_reference_embeddings_are_computed_once(models: dict[str, Path]) -> None:
    judge = create_judge("dino", {"model": str(models["vit"])})
    context = references()
    calls: list[int] = []
    original = judge.embed

    def counting(loaded, arrays):
        calls.append(len(arrays))
        return original(loaded, arrays)

    judge.embed = counting  # type: ignore[method-assign]
    judge.judge_batch([(None, data.rocket())], context)  # type: ignore[list-item]
    judge.judge_batch([(None, data.astronaut()), (None, data.coffee())], context)  # type: ignore[list-item]
    assert calls == [3, 1, 2]  # references once, then only the samples


@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean"])
def test_pooling_options_give_different_embeddings(pooling: str, models: dict[str, Path]) -> None:
    judge = create_judge("dino", {"model": str(models["vit"]), "pooling": pooling})
    (mean, best) = judge.judge(None, data.rocket(), references())  # type: ignore[arg-type]
    assert mean.raw["pooling"] == pooling and -1.0 <= mean.value <= best.value <= 1.0


def test_bad_samples_get_their_own_errors(models: dict[str, Path]) -> None:
    judge = create_judge("clip_i", {"model": str(models["clip"])})
    astronaut = data.astronaut()
    samples = [astronaut[:, :, 1], astronaut[:10, :10], np.dstack([astronaut, np.full((512, 512), 255, np.uint8)])]
    grey, tiny, rgba = judge.judge_batch([(None, s) for s in samples], references())  # type: ignore[misc]
    assert grey[0].error is None and grey[0].raw["input"] == "grayscale converted to RGB"
    assert tiny[0].value is None and tiny[1].value is None and "10x10 px" in tiny[0].error
    assert rgba[1].value == pytest.approx(1.0, abs=1e-5)  # opaque RGBA astronaut = the astronaut reference


def test_no_references_or_an_unusable_one_is_a_clear_error(models: dict[str, Path]) -> None:
    judge = create_judge("dino", {"model": str(models["vit"])})
    with pytest.raises(ReferencePhotoError, match=r"none are configured; list photos .*\[person\] references"):
        judge.judge(None, data.astronaut(), JudgeContext())  # type: ignore[arg-type]
    tiny_ref = JudgeContext(reference_images=[np.zeros((8, 8, 3), np.uint8)], reference_paths=[Path("thumb.png")])
    with pytest.raises(ReferencePhotoError, match=r"reference photo thumb.png is unusable: image is 8x8 px"):
        judge.judge(None, data.astronaut(), tiny_ref)  # type: ignore[arg-type]


def test_wrong_kind_of_model_and_missing_folder(tmp_path: Path, models: dict[str, Path]) -> None:
    bert = save_tiny_bert(tmp_path / "bert")
    with pytest.raises(ModelError, match=r"holds a BertModel \(model_type 'bert'\), which does not take images"):
        create_judge("clip_i", {"model": str(bert)}).judge(None, data.astronaut(), references())  # type: ignore[arg-type]
    with pytest.raises(ModelUnavailable, match="does not exist"):
        create_judge("dino", {"model": str(tmp_path / "dino")}).judge(None, data.astronaut(), references())  # type: ignore[arg-type]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="option 'pooling' = 'max' is invalid: expected one of auto, cls, pooler, mean"):
        create_judge("dino", {"pooling": "max"})
    with pytest.raises(ValueError, match="clip_i got unknown option"):
        create_judge("clip_i", {"references": []})
    assert create_judge("dino").model_spec == "facebook/dino-vits16"
    assert create_judge("clip_i").model_spec == "openai/clip-vit-base-patch16"
