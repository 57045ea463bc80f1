"""Generation mode: the harness's per-image cost vs a plain diffusers loop, and a LoRA checkpoint switch vs a
pipeline reload, measured side by side in one process.

1. Per image: N images (prompts x seeds) of one LoRA checkpoint, (a) a plain diffusers loop on the pipeline
   (`pipe(prompt, width, height, num_inference_steps, generator=torch.Generator().manual_seed(seed))`, then
   `image.save(png)`), (b) the harness (`ImageGenerator.materialize` on generated cases: cache key with the
   LoRA file hash, LoRA state check, the same call, PNG with the key embedded, atomic rename, log line).
   Both use the same pipeline object with the same LoRA active; rounds alternate a/b and the medians of the
   per-round per-image times are compared. Target (issue 4): harness overhead <= 5% per image.
2. Switch: `LoraManager.use(next checkpoint)` (hot-swap in place; also delete + load without hot-swap) vs a
   reload (`from_pretrained(folder)` + `load_lora_weights`), medians over the same checkpoints.
   Target: switch >= 10x faster than a reload.

Default: the tiny random FLUX pipeline of tests/tiny_flux.py on CPU (one torch thread: the machine is
shared). `--full` (needs a CUDA GPU, or `--allow-cpu`): a full-size FLUX.1-dev transformer with random
weights (no download; bf16; small text encoders with FLUX's output widths) at 512 and 1024 px, with random
rank-16 LoRAs on every attention projection; the reload then reads the saved ~24 GB folder from disk.

    .venv/bin/python benchmarks/generation.py [--images 12] [--rounds 5] [--size 64] [--steps 2]
    .venv/bin/python benchmarks/generation.py --full [--full-steps 4] [--full-sizes 512,1024]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from lora_harness.core.cases import Prompt  # noqa: E402
from lora_harness.generation.engine import ImageGenerator  # noqa: E402
from lora_harness.generation.pipeline import Target, load_pipeline  # noqa: E402
from lora_harness.generation.settings import PipelineConfig  # noqa: E402
from lora_harness.sources.generate import GeneratedCase, image_path  # noqa: E402

PROMPTS = ["a photo of sks person", "sks person on a beach at sunset", "a portrait of sks person, studio light"]


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def make_cases(lora: Path, run_dir: Path, *, n: int, size: int, steps: int, guidance: float | None) -> list[GeneratedCase]:
    cases = []
    for i in range(n):
        prompt = Prompt(f"{i % len(PROMPTS):02d}", PROMPTS[i % len(PROMPTS)], width=size, height=size, steps=steps, guidance=guidance)
        seed = 1000 + i
        case = GeneratedCase(loraname="bench", training_step=1, prompt=replace(prompt, seed=seed), image_path=Path(),
                             seed=seed, lora=lora, lora_scale=1.0)
        cases.append(replace(case, image_path=image_path(run_dir, "bench", case.step_label, f"{i:02d}", seed)))
    return cases


def per_image(generator: ImageGenerator, lora: Path, work: Path, *, n: int, rounds: int, size: int, steps: int,
              guidance: float | None) -> tuple[float, float, float]:
    """Per-image seconds, paired: each image is made by the plain loop and by the harness back to back (order
    alternating), so load from other processes hits both alike. Returns the medians of plain and harness
    times and the median of the per-image ratios harness / plain."""
    pipe = generator.pipeline()
    generator.loras.use(lora, 1.0)
    plain_times, harness_times, ratios = [], [], []
    for r in range(rounds):
        cases = make_cases(lora, work / f"harness-{r}", n=n, size=size, steps=steps, guidance=guidance)
        plain_dir = work / f"plain-{r}"
        plain_dir.mkdir(parents=True)

        def plain(case: GeneratedCase) -> float:
            started = time.perf_counter()
            kwargs = dict(prompt=case.prompt.text, width=size, height=size, num_inference_steps=steps,
                          generator=torch.Generator(device="cpu").manual_seed(case.seed))
            if guidance is not None:
                kwargs["guidance_scale"] = guidance
            pipe(**kwargs).images[0].save(plain_dir / case.image_path.name)
            return time.perf_counter() - started

        def harness(case: GeneratedCase) -> float:
            started = time.perf_counter()
            generator.materialize(case, [case])  # one image per call, as the plain loop makes it
            return time.perf_counter() - started

        for i, case in enumerate(cases):
            if (i + r) % 2:
                h, p = harness(case), plain(case)
            else:
                p, h = plain(case), harness(case)
            plain_times.append(p)
            harness_times.append(h)
            ratios.append(h / p)
        assert generator.stats["generated"] == n * (r + 1), "the harness must generate every image of a cold round"
    return statistics.median(plain_times), statistics.median(harness_times), statistics.median(ratios)


def switching(generator: ImageGenerator, checkpoints: list[Path], reload: Callable[[Path], Any], *, repeats: int) -> dict[str, float]:
    """Median seconds: hot-swap switch, delete+load switch, pipeline reload (+ LoRA load)."""
    manager = generator.loras
    cycle = iter(checkpoints * (repeats * 2 + 2))
    manager.use(next(cycle))
    hotswap = median_time(lambda: manager.use(next(cycle)), repeats * 2)
    manager.hotswap_supported = False
    fresh = median_time(lambda: manager.use(next(cycle)), repeats * 2)
    manager.hotswap_supported = True
    reloads = iter(checkpoints * (repeats + 1))
    reloaded = median_time(lambda: reload(next(reloads)), repeats)
    return {"hotswap": hotswap, "delete+load": fresh, "reload": reloaded}


def report(title: str, timing: tuple[float, float, float], switch: dict[str, float], unit: str = "ms") -> None:
    scale = 1000.0
    plain, harness, ratio = timing
    overhead = ratio - 1
    print(f"\n== {title}")
    print(f"per image: plain diffusers loop {plain * scale:8.1f} {unit}   harness {harness * scale:8.1f} {unit}   "
          f"overhead (median of paired per-image ratios) {overhead * 100:+.1f}%  "
          f"(target <= +5%: {'ok' if overhead <= 0.05 else 'MISSED'})")
    best = min(switch["hotswap"], switch["delete+load"])
    print(f"LoRA switch: hot-swap {switch['hotswap'] * scale:8.1f} {unit}   delete+load {switch['delete+load'] * scale:8.1f} {unit}   "
          f"pipeline reload {switch['reload'] * scale:8.1f} {unit}")
    print(f"reload / switch: {switch['reload'] / switch['hotswap']:.1f}x (hot-swap), "
          f"{switch['reload'] / switch['delete+load']:.1f}x (delete+load)   "
          f"(target >= 10x: {'ok' if switch['reload'] / best >= 10 else 'MISSED'})")


# --- tiny pipeline on CPU -------------------------------------------------------------------------------------


def tiny(args: argparse.Namespace) -> None:
    import tiny_flux
    from diffusers import FluxPipeline

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = tiny_flux.save_tiny_flux(work / "tiny-flux")
        checkpoints = tiny_flux.write_kohya_sweep(work / "sweep", name="bench", epochs=tuple(range(1, 6)), final=False)
        generator = ImageGenerator(PipelineConfig(model=str(model), device="cpu"), images_dir=work / "images")
        timing = per_image(generator, checkpoints[0], work, n=args.images, rounds=args.rounds, size=args.size,
                           steps=args.steps, guidance=None)

        def reload(lora: Path) -> None:
            pipe = FluxPipeline.from_pretrained(str(model))
            pipe.load_lora_weights(str(lora), adapter_name="x")

        switch = switching(generator, checkpoints, reload, repeats=args.rounds)
        report(f"tiny FLUX on CPU ({args.size} px, {args.steps} steps, {args.images} images x {args.rounds} rounds, "
               f"{torch.get_num_threads()} thread(s))", timing, switch)


# --- full-size FLUX transformer (GPU) --------------------------------------------------------------------------


def build_full_flux(device: str, layers: tuple[int, int]) -> Any:
    """FLUX.1-dev's transformer and VAE at full size with random weights; text encoders 1-layer but with FLUX's
    output widths (T5 4096, CLIP pooled 768), so the denoising cost is the real model's."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    import tiny_flux

    with torch.device(device):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=layers[0], num_single_layers=layers[1], attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
            axes_dims_rope=[16, 56, 56],
        ).to(torch.bfloat16)
        clip_tokenizer, t5_tokenizer = tiny_flux._clip_tokenizer(), tiny_flux._t5_tokenizer()
        text_encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=768, projection_dim=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=1,
            vocab_size=len(clip_tokenizer), max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )).to(torch.bfloat16)
        text_encoder_2 = T5EncoderModel(T5Config(
            d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=1, vocab_size=len(t5_tokenizer),
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )).to(torch.bfloat16)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2,
            use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
        ).to(torch.bfloat16)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True), vae=vae, text_encoder=text_encoder,
        tokenizer=clip_tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=t5_tokenizer, transformer=transformer,
    )


def write_full_lora(path: Path, *, layers: tuple[int, int], rank: int = 16, seed: int = 0) -> Path:
    """A random rank-16 diffusers-format LoRA on every attention projection of the full-size transformer."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    blocks = [f"transformer_blocks.{i}" for i in range(layers[0])] + [f"single_transformer_blocks.{i}" for i in range(layers[1])]
    for block in blocks:
        for proj in ("to_q", "to_k", "to_v"):
            tensors[f"transformer.{block}.attn.{proj}.lora_A.weight"] = (torch.randn(rank, 3072, generator=gen) * 0.01).to(torch.bfloat16)
            tensors[f"transformer.{block}.attn.{proj}.lora_B.weight"] = (torch.randn(3072, rank, generator=gen) * 0.01).to(torch.bfloat16)
    save_file(tensors, str(path))
    return path


def wide_switch(args: argparse.Namespace) -> None:
    """Switch vs reload with FLUX.1-dev's real widths (3072, T5 4096) but few blocks, on CPU: the reload cost
    grows with the model's bytes, a LoRA switch with the LoRA's, which the tiny model cannot show."""
    layers = tuple(int(x) for x in args.wide_layers.split(","))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        folder = work / "flux-wide"
        build_full_flux("cpu", layers).save_pretrained(folder)  # type: ignore[arg-type]
        size_gb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9
        loras = [write_full_lora(work / f"wide-{i:06d}.safetensors", layers=layers, seed=i) for i in range(1, 6)]  # type: ignore[arg-type]
        config = PipelineConfig(model=str(folder), device="cpu", dtype="bfloat16")
        generator = ImageGenerator(config, images_dir=work / "images")

        def reload(lora: Path) -> None:
            load_pipeline(config, Target("cpu", "bfloat16")).load_lora_weights(str(lora), adapter_name="x")

        switch = switching(generator, loras, reload, repeats=args.rounds)
        scale = 1000.0
        best = min(switch["hotswap"], switch["delete+load"])
        print(f"\n== FLUX widths, {layers[0]}+{layers[1]} blocks, random bf16 on CPU ({size_gb:.2f} GB folder, rank-16 LoRAs "
              f"{loras[0].stat().st_size / 1e6:.1f} MB)")
        print(f"LoRA switch: hot-swap {switch['hotswap'] * scale:8.1f} ms   delete+load {switch['delete+load'] * scale:8.1f} ms   "
              f"pipeline reload {switch['reload'] * scale:8.1f} ms")
        print(f"reload / switch: {switch['reload'] / switch['hotswap']:.1f}x (hot-swap), "
              f"{switch['reload'] / switch['delete+load']:.1f}x (delete+load)   "
              f"(target >= 10x: {'ok' if switch['reload'] / best >= 10 else 'MISSED'})")


def full(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("--full needs a CUDA GPU (pass --allow-cpu to smoke-test the code path with --full-layers 1,1)")
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layers = tuple(int(x) for x in args.full_layers.split(","))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        pipe = build_full_flux(device, layers)  # type: ignore[arg-type]
        folder = work / "flux-random"
        pipe.save_pretrained(folder)
        print(f"full-size random FLUX ({layers[0]}+{layers[1]} blocks) built and saved in {time.perf_counter() - started:.1f} s")
        del pipe
        if device == "cuda":
            torch.cuda.empty_cache()
        loras = [write_full_lora(work / f"full-{i:06d}.safetensors", layers=layers, seed=i) for i in range(1, 4)]  # type: ignore[arg-type]
        config = PipelineConfig(model=str(folder), device=device, dtype="bfloat16")
        generator = ImageGenerator(config, images_dir=work / "images", loader=load_pipeline)

        def reload(lora: Path) -> None:
            fresh = load_pipeline(config, Target(device, "bfloat16"))
            fresh.load_lora_weights(str(lora), adapter_name="x")
            del fresh
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.empty_cache()

        pipe = generator.pipeline()
        switch = None
        for size in (int(s) for s in args.full_sizes.split(",")):
            timing = per_image(generator, loras[0], work / f"px{size}", n=args.full_images, rounds=args.full_rounds,
                               size=size, steps=args.full_steps, guidance=3.5)
            if switch is None:
                switch = switching(generator, loras, reload, repeats=2)
            report(f"full-size FLUX transformer, random weights, {device} bf16 ({size} px, {args.full_steps} steps, "
                   f"{args.full_images} images x {args.full_rounds} rounds)", timing, switch)
        del pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="also a full-size FLUX transformer (GPU)")
    parser.add_argument("--allow-cpu", action="store_true", help="run --full on CPU (smoke test only)")
    parser.add_argument("--full-layers", default="19,38", help="double,single blocks (FLUX.1-dev: 19,38)")
    parser.add_argument("--full-sizes", default="512,1024")
    parser.add_argument("--full-steps", type=int, default=4)
    parser.add_argument("--full-images", type=int, default=4)
    parser.add_argument("--full-rounds", type=int, default=3)
    parser.add_argument("--wide-layers", default="1,1", help="blocks of the FLUX-width switch test ('0' to skip it)")
    parser.add_argument("--workdir", default=None, help="where --full saves its ~24 GB random model (default: temp)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    tiny(args)
    if args.wide_layers != "0":
        wide_switch(args)
    if args.full:
        full(args)


if __name__ == "__main__":
    main()
