"""Tiny random transformers models saved to folders, for exercising the embedding judges offline.

Each builder writes what `save_pretrained` writes for a real checkpoint (config, weights, processor files),
so the judges load them through the same code path users take. Weights are random but seeded: scores are
deterministic, not meaningful. Building one takes well under a second once transformers is imported.
"""

from __future__ import annotations

import string
from pathlib import Path

IMAGE_SIZE = 32


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over single characters (no merges): it tokenizes any ASCII text offline."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def save_tiny_clip(folder: Path, *, seed: int = 0, projection_dim: int = 16) -> Path:
    """A CLIPModel (2 layers, width 32, 32 px images) with its CLIPProcessor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer.get_vocab()), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=IMAGE_SIZE, patch_size=8,
        ),
        projection_dim=projection_dim,
    )
    _seed(seed)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_tiny_vit(folder: Path, *, seed: int = 0) -> Path:
    """A ViTModel like DINO ViT-S/16 (`facebook/dino-vits16`), shrunk, with its ViTImageProcessor."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        image_size=IMAGE_SIZE, patch_size=8,
    )
    _seed(seed)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


def save_tiny_dinov2(folder: Path, *, seed: int = 0) -> Path:
    """A Dinov2Model (`facebook/dinov2-*` architecture), shrunk, with its BitImageProcessor."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=1,
        image_size=IMAGE_SIZE, patch_size=8,
    )
    _seed(seed)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_convert_rgb=True,
    ).save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path, *, seed: int = 0) -> Path:
    """A text-only BertModel: a model of the wrong kind for every image judge."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
    )
    _seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


def put_in_hub_cache(folder: Path, cache_dir: Path, hub_id: str, commit: str = "0" * 40) -> Path:
    """Lay `folder` out as the Hugging Face hub cache stores a downloaded model (refs/main + snapshot)."""
    import shutil

    repo = cache_dir / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
