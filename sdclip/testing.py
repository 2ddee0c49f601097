"""Random-weight CLIP models in the real architectures' shapes, for tests, notebooks and benchmarks.

No weights can be downloaded in CI, so sdclip is tested on models built here: the real tokenizer, the
real vocabulary size and context length, CLIP's 64-wide attention heads, and a few small layers
(``tiny``) or the full clip-vit-large-patch14 / OpenCLIP bigG sizes (``real``, same cost and shapes as
the released models). Nothing here is imported by the library itself.

Example:
    >>> model = random_text_encoder(TINY_TEXT)
    >>> model.config.num_attention_heads
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# clip-vit-large-patch14's text tower, the one SD 1.x conditions on
L14_TEXT = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1,
}  # fmt: skip
# clip-vit-large-patch14's vision tower
L14_VISION = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "patch_size": 14, "image_size": 224, "hidden_act": "quick_gelu", "projection_dim": 768,
}  # fmt: skip
# OpenCLIP ViT-bigG's text tower, SDXL's second encoder
BIGG_TEXT = {
    **L14_TEXT, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280, "pad_token_id": 0,
}  # fmt: skip
# Tiny towers: real vocabulary and context, two 64-wide heads, a few layers
TINY_TEXT = {**L14_TEXT, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
             "num_attention_heads": 2, "projection_dim": 96}  # fmt: skip
TINY_TEXT_2 = {**BIGG_TEXT, "hidden_size": 192, "intermediate_size": 384, "num_hidden_layers": 4,
               "num_attention_heads": 3, "projection_dim": 160}  # fmt: skip
TINY_VISION = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
               "patch_size": 32, "image_size": 224, "hidden_act": "quick_gelu", "projection_dim": 96}  # fmt: skip


def _randomize_layer_norms(model: Any) -> Any:
    """Give every LayerNorm random scale and shift: freshly built ones are exactly 1 and 0, which
    makes each token's mean exactly zero, unlike trained CLIP (and degenerate for A1111's mean rescale)."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return model


def random_text_encoder(config: dict, *, projection: bool = False, seed: int = 0) -> Any:
    """A ``CLIPTextModel`` (or ``...WithProjection``) with seeded random weights, in eval mode.

    Example:
        >>> random_text_encoder(TINY_TEXT, projection=True).text_projection.weight.shape
        torch.Size([96, 128])
    """
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _randomize_layer_norms(cls(CLIPTextConfig(**config)).eval())


def random_clip_model(text: dict = TINY_TEXT, vision: dict = TINY_VISION, *, seed: int = 0) -> Any:
    """A full ``CLIPModel`` with seeded random weights (both towers, projections, ``logit_scale``).

    Example:
        >>> random_clip_model().config.projection_dim
        96
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=text["projection_dim"])
    return _randomize_layer_norms(CLIPModel(config).eval())


def save_clip_folder(model: Any, folder: str | Path, *, preprocessor: bool = True) -> Path:
    """Write a ``CLIPModel`` as a hub-style CLIP folder sdclip can load (``ClipScorer``, ``sdclip.clip``).

    With ``preprocessor=True`` a ``preprocessor_config.json`` for the vision tower's image size is
    written too (``CLIPImageProcessorPil``, the PIL backend, since torchvision may be absent).

    Example:
        >>> import tempfile
        >>> folder = save_clip_folder(random_clip_model(), tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir())
        ['config.json', 'model.safetensors', 'preprocessor_config.json']
    """
    from transformers import CLIPImageProcessorPil

    folder = Path(folder)
    model.save_pretrained(folder)
    if preprocessor:
        size = model.config.vision_config.image_size
        processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        processor.save_pretrained(folder)
    return folder


def tiny_unet(cross_attention_dim: int, *, sdxl: bool = False, pooled_dim: int | None = None, seed: int = 0) -> Any:
    """A tiny ``UNet2DConditionModel`` (two blocks, 32/64 channels) for end-to-end pipeline tests.

    With ``sdxl=True`` it takes SDXL's added conditioning: the pooled text embedding (``pooled_dim``,
    default ``TINY_TEXT_2``'s projection) and six 8-wide size/crop embeddings.
    """
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    extra = {}
    if sdxl:  # SDXL adds the pooled text embedding and six size/crop numbers to the time embedding
        extra = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": (pooled_dim or TINY_TEXT_2["projection_dim"]) + 6 * 8,
            "transformer_layers_per_block": (1, 2),
            "attention_head_dim": (2, 4),
            "use_linear_projection": True,
        }
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=32,
        **extra,
    )


def tiny_vae(*, seed: int = 0) -> Any:
    """A tiny ``AutoencoderKL`` for end-to-end pipeline tests."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
    )


def tiny_sd_pipeline(text_config: dict = TINY_TEXT, *, seed: int = 0) -> Any:
    """A tiny ``StableDiffusionPipeline`` with a random text encoder and sdclip's shipped tokenizer.

    Example:
        >>> pipe = tiny_sd_pipeline()
        >>> pipe.text_encoder.config.hidden_size
        128
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .models.tokenizer import load_tokenizer

    return StableDiffusionPipeline(
        vae=tiny_vae(seed=seed),
        text_encoder=random_text_encoder(text_config, seed=seed),
        tokenizer=load_tokenizer(),
        unet=tiny_unet(text_config["hidden_size"], seed=seed),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(
    text_config: dict = TINY_TEXT,
    text_config_2: dict = TINY_TEXT_2,
    *,
    seed: int = 0,
    force_zeros_for_empty_prompt: bool = True,
) -> Any:
    """A tiny ``StableDiffusionXLPipeline``: random text encoders, sdclip's vocabulary for both tokenizers.

    The second tokenizer pads with ``!`` (id 0), as SDXL's ``tokenizer_2`` does; the second encoder
    is a ``CLIPTextModelWithProjection`` in bigG's shape (``gelu``); the UNet's cross-attention width
    is the two hidden sizes together. Images are 32×32.

    Example:
        >>> pipe = tiny_sdxl_pipeline()
        >>> pipe.tokenizer_2.pad_token_id, pipe.unet.config.cross_attention_dim
        (0, 320)
    """
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    from .models.tokenizer import SHIPPED_TOKENIZER_DIR, load_tokenizer

    return StableDiffusionXLPipeline(
        vae=tiny_vae(seed=seed),
        text_encoder=random_text_encoder(text_config, seed=seed),
        text_encoder_2=random_text_encoder(text_config_2, projection=True, seed=seed + 1),
        tokenizer=load_tokenizer(),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER_DIR), pad_token="!"),
        unet=tiny_unet(
            text_config["hidden_size"] + text_config_2["hidden_size"],
            sdxl=True,
            pooled_dim=text_config_2["projection_dim"],
            seed=seed,
        ),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                steps_offset=1),
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        add_watermarker=False,
    )


def openclip_text_tensors(text_model: Any) -> dict[str, Any]:
    """A ``CLIPTextModelWithProjection``'s weights under OpenCLIP's names, as SDXL files store bigG.

    Written out from OpenCLIP's ``TextTransformer`` naming (the inverse of diffusers'
    ``DIFFUSERS_TO_LDM_MAPPING["openclip"]``): q/k/v fused into ``attn.in_proj_*``, MLP as
    ``c_fc``/``c_proj``, ``text_projection`` stored as (width, dim), i.e. transposed.
    """
    import torch

    inner = text_model.text_model
    tensors = {
        "token_embedding.weight": inner.embeddings.token_embedding.weight,
        "positional_embedding": inner.embeddings.position_embedding.weight,
        "ln_final.weight": inner.final_layer_norm.weight,
        "ln_final.bias": inner.final_layer_norm.bias,
        "text_projection": text_model.text_projection.weight.T,
        "logit_scale": torch.tensor(4.6052),
    }
    for n, layer in enumerate(inner.encoder.layers):
        block, attn = f"transformer.resblocks.{n}.", layer.self_attn
        tensors[block + "attn.in_proj_weight"] = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        tensors[block + "attn.in_proj_bias"] = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        tensors[block + "attn.out_proj.weight"] = attn.out_proj.weight
        tensors[block + "attn.out_proj.bias"] = attn.out_proj.bias
        for ours, theirs in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2")):
            tensors[block + theirs + ".weight"] = getattr(layer, ours).weight
            tensors[block + theirs + ".bias"] = getattr(layer, ours).bias
        for ours, theirs in (("fc1", "c_fc"), ("fc2", "c_proj")):
            tensors[block + "mlp." + theirs + ".weight"] = getattr(layer.mlp, ours).weight
            tensors[block + "mlp." + theirs + ".bias"] = getattr(layer.mlp, ours).bias
    return {key: value.detach().contiguous() for key, value in tensors.items()}


def save_sdxl_single_file(text_encoder: Any, text_encoder_2: Any, path: str | Path) -> Path:
    """Write two text encoders as an SDXL single-file ``.safetensors`` checkpoint stores them.

    ``text_encoder`` (a ``CLIPTextModel``) goes under ``conditioner.embedders.0.transformer.text_model.``
    with the legacy ``position_ids``; ``text_encoder_2`` (a ``CLIPTextModelWithProjection``) under
    ``conditioner.embedders.1.model.`` in OpenCLIP's layout (``openclip_text_tensors``); a stand-in
    UNet tensor sits beside them, as in real checkpoints.
    """
    import torch
    from safetensors.torch import save_file

    first = "conditioner.embedders.0.transformer.text_model."
    tensors = {first + key: value.contiguous() for key, value in text_encoder.state_dict().items()}
    tensors[first + "embeddings.position_ids"] = torch.arange(text_encoder.config.max_position_embeddings)[None]
    second = "conditioner.embedders.1.model."
    tensors.update({second + key: value for key, value in openclip_text_tensors(text_encoder_2).items()})
    tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4, 3, 3)
    save_file(tensors, str(path))
    return Path(path)


def save_sd1_single_file(text_model: Any, path: str | Path, *, text_model_prefix: bool = True) -> Path:
    """Write ``text_model`` as the text encoder of an SD 1.x single-file ``.safetensors`` checkpoint.

    Keys go under ``cond_stage_model.transformer.`` (with or without ``text_model.``), with the legacy
    ``position_ids`` buffer, next to a stand-in UNet tensor as real checkpoints have.
    """
    import torch
    from safetensors.torch import save_file

    inner = "cond_stage_model.transformer." + ("text_model." if text_model_prefix else "")
    tensors = {inner + key: value.contiguous() for key, value in text_model.state_dict().items()}
    tensors[inner + "embeddings.position_ids"] = torch.arange(text_model.config.max_position_embeddings)[None]
    tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4, 3, 3)
    save_file(tensors, str(path))
    return Path(path)


def save_hub_style_folder(text_model: Any, folder: str | Path) -> Path:
    """Write ``text_model`` as transformers 4 did on the hub: ``text_model.`` key prefix and ``position_ids``."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text_model.config.save_pretrained(folder)
    tensors = {"text_model." + key: value.contiguous() for key, value in text_model.state_dict().items()}
    tensors["text_model.embeddings.position_ids"] = torch.arange(text_model.config.max_position_embeddings)[None]
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def random_openclip_state_dict(
    *, text_width: int = 128, text_layers: int = 2, vision_width: int = 128, vision_layers: int = 2,
    patch: int = 16, image_size: int = 64, projection: int = 96, context: int = 77, vocab: int = 49408,
    seed: int = 0,
) -> dict[str, Any]:
    """Random tensors under OpenCLIP's ViT ``CLIP`` key names and shapes (``open_clip/model.py``), as HPS v2 ships.

    Written from OpenCLIP's names, not from a transformers model, so a conversion test compares two layouts
    that were built independently. 64-wide heads, MLP ratio 4.

    Example:
        >>> sd = random_openclip_state_dict()
        >>> tuple(sd["visual.conv1.weight"].shape), tuple(sd["text_projection"].shape)
        ((128, 3, 16, 16), (128, 96))
    """
    import torch

    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.05, mean: float = 0.0) -> Any:
        return torch.randn(*shape, generator=generator) * scale + mean

    def blocks(prefix: str, width: int, layers: int) -> dict[str, Any]:
        tensors = {}
        for n in range(layers):
            b = f"{prefix}transformer.resblocks.{n}."
            tensors.update({
                b + "ln_1.weight": rand(width, scale=0.1, mean=1.0), b + "ln_1.bias": rand(width, scale=0.1),
                b + "attn.in_proj_weight": rand(3 * width, width), b + "attn.in_proj_bias": rand(3 * width),
                b + "attn.out_proj.weight": rand(width, width), b + "attn.out_proj.bias": rand(width),
                b + "ln_2.weight": rand(width, scale=0.1, mean=1.0), b + "ln_2.bias": rand(width, scale=0.1),
                b + "mlp.c_fc.weight": rand(4 * width, width), b + "mlp.c_fc.bias": rand(4 * width),
                b + "mlp.c_proj.weight": rand(width, 4 * width), b + "mlp.c_proj.bias": rand(width),
            })  # fmt: skip
        return tensors

    grid = image_size // patch
    return {
        "token_embedding.weight": rand(vocab, text_width, scale=0.5),
        "positional_embedding": rand(context, text_width, scale=0.1),
        **blocks("", text_width, text_layers),
        "ln_final.weight": rand(text_width, scale=0.1, mean=1.0), "ln_final.bias": rand(text_width, scale=0.1),
        "text_projection": rand(text_width, projection, scale=0.1),
        "logit_scale": torch.tensor(4.6052),
        "visual.class_embedding": rand(vision_width, scale=0.5),
        "visual.positional_embedding": rand(grid * grid + 1, vision_width, scale=0.1),
        "visual.conv1.weight": rand(vision_width, 3, patch, patch, scale=0.05),
        "visual.ln_pre.weight": rand(vision_width, scale=0.1, mean=1.0), "visual.ln_pre.bias": rand(vision_width, scale=0.1),
        **blocks("visual.", vision_width, vision_layers),
        "visual.ln_post.weight": rand(vision_width, scale=0.1, mean=1.0),
        "visual.ln_post.bias": rand(vision_width, scale=0.1),
        "visual.proj": rand(vision_width, projection, scale=0.1),
    }  # fmt: skip


def put_in_hub_cache(cache: str | Path, repo_id: str, filename: str, source: str | Path | bytes, *,
                     ref: str = "main", commit: str = "0" * 40) -> Path:
    """Lay ``source`` (a file or bytes) into a Hugging Face cache folder as a download leaves it.

    The blob under ``models--owner--name/blobs/``, the snapshot's symlink to it and ``refs/<ref>`` naming
    the commit: ``hf_hub_download(repo_id, filename, revision=ref)`` then finds it offline.

    Example:
        >>> import tempfile
        >>> from huggingface_hub import hf_hub_download
        >>> cache = tempfile.mkdtemp()
        >>> link = put_in_hub_cache(cache, "owner/name", "heads/head.pth", b"weights")
        >>> hf_hub_download("owner/name", "heads/head.pth", cache_dir=cache, local_files_only=True) == str(link)
        True
    """
    import hashlib

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(blob)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return link
