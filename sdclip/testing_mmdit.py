"""Random-weight SD3 / Flux text stacks and pipelines (CLIP-L, bigG, T5) for tests, examples and benchmarks.

Like :mod:`sdclip.testing`: the real CLIP tokenizer and the real architectures (``T5EncoderModel`` in T5 v1.1's
gated-GELU layout, ``SD3Transformer2DModel``, ``FluxTransformer2DModel``) in tiny sizes. The T5 tokenizer is
a small Unigram vocabulary built here (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, as T5's), so nothing is
downloaded. Nothing here is imported by the library itself.

Example:
    >>> tiny_t5_tokenizer()("a cat").input_ids[-1]  # </s> ends every text, as T5's tokenizer
    1
"""

from __future__ import annotations

import string
from typing import Any

from .testing import TINY_TEXT, TINY_TEXT_2, random_text_encoder

# T5 v1.1 XXL (SD3 / Flux's text_encoder_3 / text_encoder_2) and a T5-large-shaped encoder of the same layout
T5_XXL = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64, "vocab_size": 32128,
          "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32}  # fmt: skip
T5_LARGE = {**T5_XXL, "d_model": 1024, "d_ff": 2816, "num_heads": 16}  # ~335M encoder parameters
TINY_T5 = {**T5_XXL, "d_model": 384, "d_ff": 256, "num_layers": 2, "num_heads": 6, "vocab_size": 0}  # 0: the tokenizer's

_WORDS = "a an the of in on with and cat dog photo painting oil blurry red blue green style portrait by art".split()


def tiny_t5_tokenizer() -> Any:
    """A ``T5Tokenizer`` on a ~200-piece Unigram vocabulary: common words, then single characters.

    Example:
        >>> tokenizer = tiny_t5_tokenizer()
        >>> tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.convert_ids_to_tokens(tokenizer("a cat").input_ids)
        (0, 1, ['▁a', '▁cat', '</s>'])
    """
    from transformers import T5Tokenizer

    pieces = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -3.0}
    pieces.update({"▁" + word: -2.0 for word in _WORDS})
    characters = string.ascii_letters + string.digits + string.punctuation
    for character in characters:
        pieces.setdefault(character, -6.0)
        pieces.setdefault("▁" + character, -6.5)
    tokenizer = T5Tokenizer(vocab=list(pieces.items()), extra_ids=0)
    tokenizer.model_max_length = 512
    return tokenizer


def tiny_t5_encoder(config: dict = TINY_T5, *, vocab_size: int | None = None, seed: int = 0) -> Any:
    """A ``T5EncoderModel`` with seeded random weights, in eval mode (``vocab_size``: the tokenizer's).

    Example:
        >>> tiny_t5_encoder(vocab_size=200).config.d_model
        384
    """
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    size = vocab_size or config["vocab_size"] or len(tiny_t5_tokenizer())
    model = T5EncoderModel(T5Config(**{**config, "vocab_size": size}, is_encoder_decoder=False))
    return model.eval().requires_grad_(False)


def _tiny_flow_vae(latent_channels: int, seed: int) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=32, sample_size=32,
        shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip


def tiny_sd3_pipeline(*, t5: bool = True, seed: int = 0) -> Any:
    """A tiny ``StableDiffusion3Pipeline``: CLIP-L and bigG shapes with projections, a T5 384 wide.

    ``t5=False`` builds it without ``text_encoder_3`` / ``tokenizer_3``, as diffusers allows (the T5 part
    of the conditioning is then zeros). Images are 32×32.

    Example:
        >>> pipe = tiny_sd3_pipeline()
        >>> pipe.transformer.config.joint_attention_dim, pipe.text_encoder_3.config.d_model
        (384, 384)
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTokenizer

    from .models.tokenizer import SHIPPED_TOKENIZER_DIR, load_tokenizer

    tokenizer_3 = tiny_t5_tokenizer() if t5 else None
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=TINY_T5["d_model"], out_channels=4,
        pooled_projection_dim=TINY_TEXT["projection_dim"] + TINY_TEXT_2["projection_dim"],
    )  # fmt: skip
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_tiny_flow_vae(4, seed),
        text_encoder=random_text_encoder(TINY_TEXT, projection=True, seed=seed),
        tokenizer=load_tokenizer(),
        text_encoder_2=random_text_encoder(TINY_TEXT_2, projection=True, seed=seed + 1),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER_DIR), pad_token="!"),
        text_encoder_3=tiny_t5_encoder(vocab_size=len(tokenizer_3), seed=seed + 2) if t5 else None,
        tokenizer_3=tokenizer_3,
    )


def tiny_flux_pipeline(*, seed: int = 0) -> Any:
    """A tiny ``FluxPipeline``: a CLIP-L-shaped ``CLIPTextModel`` (pooled only) and a T5 384 wide.

    Example:
        >>> pipe = tiny_flux_pipeline()
        >>> pipe.transformer.config.pooled_projection_dim, pipe.transformer.config.joint_attention_dim
        (128, 384)
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from .models.tokenizer import load_tokenizer

    tokenizer_2 = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=TINY_T5["d_model"], pooled_projection_dim=TINY_TEXT["hidden_size"],
        axes_dims_rope=(4, 4, 8),
    )  # fmt: skip
    return FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_tiny_flow_vae(1, seed),
        text_encoder=random_text_encoder(TINY_TEXT, seed=seed),
        tokenizer=load_tokenizer(),
        text_encoder_2=tiny_t5_encoder(vocab_size=len(tokenizer_2), seed=seed + 2),
        tokenizer_2=tokenizer_2,
    )
