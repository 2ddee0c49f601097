"""Benchmark: sdclip's TextConditioner vs diffusers' StableDiffusion3Pipeline.encode_prompt (SD3).

Both run the same three text encoders, random weights (same cost as trained ones): clip-vit-large-patch14's
text tower with its projection (hidden 768, 12 layers), OpenCLIP bigG's (hidden 1280, 32 layers, projection
1280) and a T5 encoder in **T5-large's shapes** (d_model 1024, 24 layers, 16 heads, d_ff 2816, gated-GELU;
~335M parameters; SD3's T5-XXL has this layout at 4096 wide, 64 heads, 4.7B parameters, so T5 weighs ~14x
more there). T5's tokenizer is sdclip's small test vocabulary (token ids, not the vocabulary size, set the
cost). diffusers runs its own ``encode_prompt`` on a ``StableDiffusion3Pipeline`` around those modules
(tiny transformer and VAE, never called); sdclip shares the same modules via ``TextConditioner.from_pipeline``.
``max_sequence_length`` is SD3's default, 256.

(a) prompts/s at batch 1 and 8 (distinct prompts; both sides encode the empty negative, as
    ``encode_prompt`` does with guidance; sdclip's cache off), peak RSS growth of one more call;
(b) a realistic workload: N requests of 4 images each, one shared negative prompt, 25% of the prompts
    repeated (sdclip's cache on, fresh each run), the two sides interleaved request by request.

Run:  python benchmarks/encode_sd3.py [--device cuda --dtype fp16] [--quick] [--tiny]
Ends with one ``RATIO <workload> <value>`` line per comparison (sdclip speed / diffusers speed).
"""

from __future__ import annotations

import random
import warnings

import torch

from _harness import _rss_bytes, compare_with_diffusers, encoder_benchmark_args, machine_name


def build(device: str, dtype: torch.dtype, *, tiny: bool):
    """An SD3 pipeline around three random text encoders, and a maker of sdclip conditioners on them."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTokenizer

    from sdclip import TextConditioner
    from sdclip.models.tokenizer import SHIPPED_TOKENIZER_DIR, load_tokenizer
    from sdclip.testing import BIGG_TEXT, L14_TEXT, TINY_TEXT, TINY_TEXT_2, random_text_encoder
    from sdclip.testing_mmdit import T5_LARGE, TINY_T5, _tiny_flow_vae, tiny_t5_encoder, tiny_t5_tokenizer

    config, config_2, t5_config = (TINY_TEXT, TINY_TEXT_2, TINY_T5) if tiny else (L14_TEXT, BIGG_TEXT, T5_LARGE)
    tokenizer_3 = tiny_t5_tokenizer()
    encoders = [
        random_text_encoder(config, projection=True).to(device=device, dtype=dtype),
        random_text_encoder(config_2, projection=True, seed=1).to(device=device, dtype=dtype),
        tiny_t5_encoder(t5_config, vocab_size=max(len(tokenizer_3), t5_config["vocab_size"])).to(device=device, dtype=dtype),
    ]
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=t5_config["d_model"], out_channels=4,
        pooled_projection_dim=config["projection_dim"] + config_2["projection_dim"],
    )  # fmt: skip
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_flow_vae(4, 0),
        text_encoder=encoders[0], tokenizer=load_tokenizer(), text_encoder_2=encoders[1],
        tokenizer_2=CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER_DIR), pad_token="!"),
        text_encoder_3=encoders[2], tokenizer_3=tokenizer_3,
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
    shapes = "tiny test encoders" if args.tiny else "CLIP-L + OpenCLIP bigG + T5 in T5-large shapes"
    print(f"machine: {machine_name(device)}; {shapes}; dtype {args.dtype}; max_sequence_length 256")
    print(f"process RSS with the three encoders loaded: {_rss_bytes() / 2**20:.0f} MiB")

    def diffusers_call(prompts, negative=None, n=1):
        with torch.no_grad():
            return pipe.encode_prompt(prompts, None, None, device=device, num_images_per_prompt=n,
                                      negative_prompt=negative)  # fmt: skip

    compare_with_diffusers(conditioner, diffusers_call, device=device, quick=args.quick, rng=rng)


if __name__ == "__main__":
    main()
