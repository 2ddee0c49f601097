"""Benchmark: sdclip's TextConditioner vs diffusers' StableDiffusionPipeline.encode_prompt.

Both run the same clip-vit-large-patch14-shaped text encoder (hidden 768, 12 layers, 12 heads,
intermediate 3072, quick_gelu; random weights: same cost and shapes as the released model).

(a) prompts/s at batch 1, 8 and 64 (distinct prompts, default empty negative, sdclip's cache off);
    sdclip and diffusers are timed in turns, so load changes hit both alike;
(b) a realistic workload: 256 generation requests of 4 images each, one shared negative prompt,
    25% of the prompts repeated (sdclip's cache on, as users run it).

Run:  python benchmarks/encode.py [--device cuda --dtype fp16] [--quick]
SDXL (both encoders, vs StableDiffusionXLPipeline.encode_prompt): python benchmarks/encode.py --sdxl [...],
which runs ``encode_sdxl.py`` with the other options.
Ends with one ``RATIO <workload> <value>`` line per comparison (sdclip speed / diffusers speed).
"""

from __future__ import annotations

import argparse
import random
import sys
import warnings

import torch

from _harness import NEGATIVE, compare_batch, interleaved_medians, machine_name, make_prompt, peak_memory, realistic_requests

def build(device: str, dtype: torch.dtype):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from sdclip import TextConditioner
    from sdclip.models.loading import LoadedTextEncoder
    from sdclip.testing import L14_TEXT, random_text_encoder, tiny_unet, tiny_vae
    from sdclip.models.tokenizer import load_tokenizer

    encoder = random_text_encoder(L14_TEXT).to(device=device, dtype=dtype)
    encoder.config._attn_implementation = "sdpa"
    tokenizer = load_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=encoder, tokenizer=tokenizer, unet=tiny_unet(768),
        scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )

    def conditioner(cache_size: int) -> TextConditioner:
        return TextConditioner([LoadedTextEncoder(encoder, tokenizer, None)], cache_size=cache_size)

    return pipe, conditioner


def main() -> None:
    if "--sdxl" in sys.argv:
        import encode_sdxl

        sys.argv.remove("--sdxl")
        return encode_sdxl.main()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and requests (smoke run)")
    args = parser.parse_args()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    device = args.device
    warnings.filterwarnings("ignore")
    repeats = 1 if args.quick else 3
    rng = random.Random(0)
    pipe, conditioner = build(device, dtype)
    print(f"machine: {machine_name(device)}; dtype {args.dtype}")
    ratios = {}

    def diffusers_call(prompts, negative=None, n=1):
        with torch.no_grad():
            return pipe.encode_prompt(prompts, device, n, True, negative)

    for batch in (1, 8, 64):
        prompts = [make_prompt(rng) for _ in range(batch)]
        uncached = conditioner(0)
        ratios[f"batch{batch}"] = compare_batch(
            lambda: uncached.encode(prompts), lambda: diffusers_call(prompts), batch=batch, device=device,
            repeats=repeats,
        )

    n_requests = 64 if args.quick else 256
    requests = realistic_requests(rng, n_requests)
    negative = NEGATIVE

    def run_ours():
        cond = conditioner(256)  # a fresh cache each run: the first request pays like everyone else
        for prompt in requests:
            cond.encode(prompt, negative, num_images_per_prompt=4)

    def run_theirs():
        for prompt in requests:
            diffusers_call(prompt, negative, 4)

    medians = interleaved_medians({"sdclip": run_ours, "diffusers": run_theirs}, device=device, warmup=0,
                                  repeats=repeats)
    ours, theirs = medians["sdclip"], medians["diffusers"]
    with peak_memory(device) as ours_mem:
        run_ours()
    with peak_memory(device) as theirs_mem:
        run_theirs()
    ratios["realistic"] = theirs / ours
    print(f"(b) {n_requests} requests x 4 images, shared negative, 25% repeats: "
          f"sdclip {n_requests / ours:.1f} requests/s (peak +{ours_mem['peak_mib']:.0f} MiB), "
          f"diffusers {n_requests / theirs:.1f} requests/s (peak +{theirs_mem['peak_mib']:.0f} MiB)")
    for name, value in ratios.items():
        print(f"RATIO {name} {value:.2f}")


if __name__ == "__main__":
    main()
