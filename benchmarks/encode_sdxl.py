"""Benchmark: sdclip's TextConditioner vs diffusers' StableDiffusionXLPipeline.encode_prompt (SDXL).

Both run the same two text encoders in the released SDXL shapes, random weights (same cost):
clip-vit-large-patch14's text tower (hidden 768, 12 layers, quick_gelu) and OpenCLIP bigG's
(hidden 1280, 32 layers, 20 heads, intermediate 5120, projection 1280, gelu). diffusers runs its own
``encode_prompt`` on a ``StableDiffusionXLPipeline`` built around those modules (tiny UNet and VAE,
never called); sdclip shares the very same modules through ``TextConditioner.from_pipeline``.

(a) prompts/s at batch 1 and 8 (distinct prompts, no negative prompt: zeros on both sides as SDXL's
    ``force_zeros_for_empty_prompt`` says; sdclip's cache off), peak RSS growth of one more call;
(b) a realistic workload: N generation requests of 4 images each, one shared negative prompt, 25% of
    the prompts repeated (sdclip's cache on, as users run it; a fresh cache each run). The two sides
    run request by request in turn, so load from other jobs on the machine hits both alike.

Run:  python benchmarks/encode_sdxl.py [--device cuda --dtype fp16] [--quick] [--tiny]
``--quick``: one timed run (after one warm-up) instead of three, 16 requests instead of 64;
``--tiny``: the tiny test encoders instead of the real shapes (a smoke run, seconds).
Ends with one ``RATIO <workload> <value>`` line per comparison (sdclip speed / diffusers speed).
"""

from __future__ import annotations

import random
import warnings

import torch

from _harness import _rss_bytes, compare_with_diffusers, encoder_benchmark_args, machine_name


def build(device: str, dtype: torch.dtype, *, tiny: bool):
    """An SDXL pipeline around two random text encoders, and a maker of sdclip conditioners on them."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    from sdclip import TextConditioner
    from sdclip.testing import BIGG_TEXT, L14_TEXT, TINY_TEXT, TINY_TEXT_2, random_text_encoder, tiny_unet, tiny_vae
    from sdclip.models.tokenizer import SHIPPED_TOKENIZER_DIR, load_tokenizer

    config, config_2 = (TINY_TEXT, TINY_TEXT_2) if tiny else (L14_TEXT, BIGG_TEXT)
    encoders = [
        random_text_encoder(config).to(device=device, dtype=dtype),
        random_text_encoder(config_2, projection=True, seed=1).to(device=device, dtype=dtype),
    ]
    for encoder in encoders:
        encoder.config._attn_implementation = "sdpa"
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(), text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=load_tokenizer(),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER_DIR), pad_token="!"),
        unet=tiny_unet(config["hidden_size"] + config_2["hidden_size"], sdxl=True,
                       pooled_dim=config_2["projection_dim"]),
        scheduler=EulerDiscreteScheduler(), add_watermarker=False,
    )  # fmt: skip

    def conditioner(cache_size: int) -> TextConditioner:
        return TextConditioner.from_pipeline(pipe, cache_size=cache_size)

    return pipe, conditioner


def main() -> None:
    args = encoder_benchmark_args(__doc__)
    dtype = args.torch_dtype
    device = args.device
    warnings.filterwarnings("ignore")
    rng = random.Random(0)
    pipe, conditioner = build(device, dtype, tiny=args.tiny)
    shapes = "tiny test encoders" if args.tiny else "clip-vit-large-patch14 + OpenCLIP bigG text encoders"
    print(f"machine: {machine_name(device)}; {shapes}; dtype {args.dtype}")
    print(f"process RSS with both encoders loaded: {_rss_bytes() / 2**20:.0f} MiB")

    def diffusers_call(prompts, negative=None, n=1):
        with torch.no_grad():
            return pipe.encode_prompt(prompts, device=device, num_images_per_prompt=n, negative_prompt=negative)

    compare_with_diffusers(conditioner, diffusers_call, device=device, quick=args.quick, rng=rng)


if __name__ == "__main__":
    main()
