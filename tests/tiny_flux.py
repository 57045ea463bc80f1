"""A tiny FLUX pipeline and tiny LoRAs for CPU tests and benchmarks (random weights, nothing downloaded).

The pipeline is built from small configs, saved with `save_pretrained` and meant to be loaded back through
the harness's own loader (`lora_harness.generation.pipeline`), the code path users take with a real model
folder. Tokenizers are made in memory (transformers 5 builds them from a vocab), so no file or network is
needed. Shape rules (see ../shared/notes/tiny-flux.md): transformer `in_channels` = 4 x vae
`latent_channels`; `joint_attention_dim` = T5 `d_model`; `pooled_projection_dim` = CLIP `hidden_size`;
`sum(axes_dims_rope)` = `attention_head_dim`.

LoRA writers produce the key formats users bring: diffusers/peft (`transformer.<module>.lora_A.weight`), kohya
(`lora_unet_double_blocks_0_img_attn_proj.lora_down.weight` + `.alpha`; double blocks and `linear2` only,
because diffusers' kohya converter hard-codes real FLUX widths for `linear1`), and deliberately wrong ones
(SDXL keys, keys without the `transformer.` prefix, too-wide layers).

Usable as a script: `python tests/tiny_flux.py OUT_DIR` writes `OUT_DIR/pipeline` and a few LoRAs.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

# Modules of the tiny transformer that LoRAs target (diffusers names) and their kohya counterparts.
DOUBLE_BLOCK_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]
KOHYA_TARGETS = {"img_attn_proj": "attn.to_out.0", "txt_attn_proj": "attn.to_add_out"}
INNER_DIM = 32  # attention_head_dim x num_attention_heads


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    symbols = list(string.ascii_lowercase + string.digits + "<>_-.,!'")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(f"\u2581{c}", -2.0) for c in string.ascii_lowercase]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + "<>_-.,!'"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def build_tiny_flux(seed: int = 0):
    """An in-memory FluxPipeline with random weights (seeded), ~0.5 MB, well under a second per 64 px image."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    )
    clip_tokenizer = _clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, projection_dim=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(clip_tokenizer), max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    t5_tokenizer = _t5_tokenizer()
    text_encoder_2 = T5EncoderModel(T5Config(
        d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2, vocab_size=len(t5_tokenizer),
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"],
        block_out_channels=[4], layers_per_block=1, latent_channels=1, norm_num_groups=1, sample_size=32,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=t5_tokenizer, transformer=transformer,
    )


def save_tiny_flux(folder: Path, seed: int = 0) -> Path:
    """Write the tiny pipeline as a diffusers model folder (model_index.json + one folder per component)."""
    folder = Path(folder)
    build_tiny_flux(seed).save_pretrained(folder)
    return folder


# --- LoRA files ----------------------------------------------------------------------------------------------


def _lora_pair(gen: torch.Generator, rank: int, in_features: int, out_features: int, strength: float):
    down = torch.randn(rank, in_features, generator=gen) * strength
    up = torch.randn(out_features, rank, generator=gen) * strength
    return down, up


def write_diffusers_lora(
    path: Path, *, seed: int = 1, rank: int = 4, strength: float = 0.5, prefix: str = "transformer.",
    in_features: int = INNER_DIM, targets: list[str] | None = None,
) -> Path:
    """A peft-format LoRA as `FluxPipeline.save_lora_weights` writes it (`transformer.<module>.lora_A.weight`).

    `prefix=""` gives the silently ignored variant; `in_features` wider than the model gives the variant that
    diffusers would silently expand the model for.
    """
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for target in targets or DOUBLE_BLOCK_TARGETS:
        down, up = _lora_pair(gen, rank, in_features, INNER_DIM, strength)
        tensors[f"{prefix}transformer_blocks.0.{target}.lora_A.weight"] = down
        tensors[f"{prefix}transformer_blocks.0.{target}.lora_B.weight"] = up
    save_file(tensors, str(path), metadata={"format": "pt"})
    return Path(path)


def write_peft_alpha_lora(path: Path, *, alpha: float, seed: int = 10, rank: int = 4, strength: float = 0.5) -> Path:
    """A peft-format LoRA with `transformer.<module>.alpha` keys (scaling alpha / rank, as some trainers save it).

    Same seed, other alpha: the same weights at another scaling, the case a hot-swap got wrong (issue 14).
    """
    from safetensors.torch import load_file

    write_diffusers_lora(path, seed=seed, rank=rank, strength=strength)
    tensors = load_file(str(path))
    for key in [k for k in tensors if k.endswith(".lora_A.weight")]:
        tensors[key.replace(".lora_A.weight", ".alpha")] = torch.tensor(float(alpha))
    save_file(tensors, str(path), metadata={"format": "pt"})
    return Path(path)


def write_saved_lora(folder: Path, *, alpha: float, rank: int = 4, seed: int = 20, name: str = "lora") -> Path:
    """A LoRA written by diffusers' own `FluxPipeline.save_lora_weights`, with the peft config (`lora_alpha`, `r`)
    stored as `lora_adapter_metadata`: what a diffusers/peft training script saves."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    )
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["transformer_blocks.0." + t for t in DOUBLE_BLOCK_TARGETS],
                        init_lora_weights=False)
    torch.manual_seed(seed)
    transformer.add_adapter(config)
    state = get_peft_model_state_dict(transformer)
    folder = Path(folder)
    FluxPipeline.save_lora_weights(
        folder, transformer_lora_layers=state, transformer_lora_adapter_metadata=config.to_dict(),
        weight_name=f"{name}.safetensors",
    )
    return folder / f"{name}.safetensors"


def write_zero_lora(path: Path, *, rank: int = 4) -> Path:
    """A peft-format LoRA whose up weights are all zero (peft's initialisation, saved before any training step)."""
    gen = torch.Generator().manual_seed(5)
    tensors: dict[str, torch.Tensor] = {}
    for target in DOUBLE_BLOCK_TARGETS:
        down, _ = _lora_pair(gen, rank, INNER_DIM, INNER_DIM, 0.5)
        tensors[f"transformer.transformer_blocks.0.{target}.lora_A.weight"] = down
        tensors[f"transformer.transformer_blocks.0.{target}.lora_B.weight"] = torch.zeros(INNER_DIM, rank)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return Path(path)


def write_kohya_lora(
    path: Path, *, seed: int = 2, rank: int = 4, strength: float = 0.5, metadata: dict[str, str] | None = None,
) -> Path:
    """A kohya sd-scripts FLUX LoRA (`lora_unet_double_blocks_0_*` and `single_blocks_0_linear2`, with alpha)."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    modules = {f"lora_unet_double_blocks_0_{name}": (INNER_DIM, INNER_DIM) for name in KOHYA_TARGETS}
    # single block linear2 maps concat(attn, mlp) = 32 + 4*32 = 160 features back to 32.
    modules["lora_unet_single_blocks_0_linear2"] = (INNER_DIM * 5, INNER_DIM)
    for module, (in_features, out_features) in modules.items():
        down, up = _lora_pair(gen, rank, in_features, out_features, strength)
        tensors[f"{module}.lora_down.weight"] = down
        tensors[f"{module}.lora_up.weight"] = up
        tensors[f"{module}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora_flux", **(metadata or {})})
    return Path(path)


def write_sdxl_lora(path: Path, *, seed: int = 3, rank: int = 4) -> Path:
    """A LoRA for another architecture: kohya SDXL UNet and text-encoder keys."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for module, width in (
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 640),
        ("lora_unet_output_blocks_2_1_transformer_blocks_0_attn2_to_k", 1280),
        ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768),
        ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280),
    ):
        down, up = _lora_pair(gen, rank, width, width, 0.1)
        tensors[f"{module}.lora_down.weight"] = down
        tensors[f"{module}.lora_up.weight"] = up
        tensors[f"{module}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))
    return Path(path)


def write_kohya_sweep(folder: Path, name: str = "tiny-person", epochs: tuple[int, ...] = (1, 2), final: bool = True) -> list[Path]:
    """A kohya training output folder: `<name>-<epoch:06d>.safetensors` per saved epoch and `<name>.safetensors`.

    Each checkpoint has distinct weights and kohya's `ss_epoch`/`ss_steps` metadata, as sd-scripts writes it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for epoch in epochs:
        meta = {"ss_epoch": str(epoch), "ss_steps": str(epoch * 10)}
        paths.append(write_kohya_lora(folder / f"{name}-{epoch:06d}.safetensors", seed=100 + epoch, metadata=meta))
    if final:
        last = max(epochs, default=0) + 1
        meta = {"ss_epoch": str(last), "ss_steps": str(last * 10)}
        paths.append(write_kohya_lora(folder / f"{name}.safetensors", seed=100 + last, metadata=meta))
    return paths


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-flux")
    save_tiny_flux(out / "pipeline")
    write_diffusers_lora(out / "diffusers-lora.safetensors")
    write_kohya_sweep(out / "kohya")
    print(f"wrote {out}/pipeline, {out}/diffusers-lora.safetensors and {out}/kohya/")


# Module-scoped fixtures the generation test files import (`from tiny_flux import model_dir, one_thread`).
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """This machine is shared; two OpenMP threads per process under load are 10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny FLUX pipeline, saved once per test module."""
    return save_tiny_flux(tmp_path_factory.mktemp("tiny") / "flux")
