"""OpenCLIP's ``CLIP`` state dict (both towers) -> transformers' ``CLIPModel`` layout and config.

OpenCLIP (``open_clip/model.py`` + ``transformer.py``) names a ViT CLIP's tensors
``token_embedding.weight``, ``positional_embedding`` (L, W), ``transformer.resblocks.N.{ln_1, attn.in_proj_weight
(3W, W), attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_final``, ``text_projection``
(W, D, applied as ``x @ P``), ``logit_scale``, and under ``visual.``: ``conv1.weight`` (no bias),
``class_embedding`` (W,), ``positional_embedding``, ``ln_pre``, ``transformer.resblocks.N...``, ``ln_post``,
``proj`` (W, D). transformers splits the fused q/k/v projection, stores projections as ``Linear`` weights
(D, W, so transposed) and renames the rest. Heads are ``width // 64`` (OpenCLIP's ``head_width``) and the
activation is GELU (OpenCLIP's default; ``quick_gelu`` models say so in their name, pass it).

HPS v2 / v2.1 ships an OpenCLIP ViT-H/14 this way (``scoring/hpsv2.py`` loads it through here).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import ModelSourceError
from .checkpoint import ATTENTION_HEAD_WIDTH

if TYPE_CHECKING:
    import torch

_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight", "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}  # fmt: skip
_RENAMED = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}  # fmt: skip
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_IGNORED = ("attn_mask",)  # a buffer older OpenCLIP versions saved; transformers builds its own mask


def openclip_to_hf(state_dict: dict[str, torch.Tensor], *, name: str = "checkpoint") -> dict[str, torch.Tensor]:
    """OpenCLIP ``CLIP`` tensors renamed (and q/k/v split, projections transposed) to ``CLIPModel``'s keys.

    Args:
        state_dict: OpenCLIP's keys; a ``module.`` prefix (DataParallel) is dropped.
        name: how errors name the checkpoint.

    Raises:
        ModelSourceError: a key OpenCLIP's ViT CLIP does not have (listed), e.g. a ResNet or custom text tower.

    Example:
        >>> import torch
        >>> sd = {"transformer.resblocks.0.attn.in_proj_weight": torch.zeros(6, 2), "visual.proj": torch.zeros(2, 3)}
        >>> sorted(openclip_to_hf(sd))  # doctest: +NORMALIZE_WHITESPACE
        ['text_model.encoder.layers.0.self_attn.k_proj.weight', 'text_model.encoder.layers.0.self_attn.q_proj.weight',
         'text_model.encoder.layers.0.self_attn.v_proj.weight', 'visual_projection.weight']
    """
    converted: dict[str, Any] = {}
    unknown = []
    for key, tensor in state_dict.items():
        key = key.removeprefix("module.")
        if key in _IGNORED:
            continue
        if key in _RENAMED:
            converted[_RENAMED[key]] = tensor
        elif key in _TRANSPOSED:
            converted[_TRANSPOSED[key]] = tensor.T.contiguous()
        elif (match := _BLOCK.match(key)) is not None:
            tower = "vision_model" if match.group(1) else "text_model"
            layer = f"{tower}.encoder.layers.{match.group(2)}."
            part = match.group(3)
            if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = part.rsplit("_", 1)[1]  # weight / bias
                for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    converted[f"{layer}self_attn.{proj}.{kind}"] = chunk.contiguous()
            elif part in _BLOCK_PARTS:
                converted[layer + _BLOCK_PARTS[part]] = tensor
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ModelSourceError(f"checkpoint '{name}': {len(unknown)} tensors are not OpenCLIP ViT CLIP weights "
                               f"(e.g. {', '.join(sorted(unknown)[:3])}); expected an OpenCLIP ViT model such as "
                               "HPS v2's ViT-H/14")
    return converted


def openclip_config(state_dict: dict[str, torch.Tensor], *, hidden_act: str = "gelu",
                    name: str = "checkpoint") -> dict:
    """A ``CLIPConfig`` dict read from an OpenCLIP ViT CLIP's tensor shapes (heads: width // 64).

    Example:
        >>> from sdclip.testing import random_openclip_state_dict
        >>> openclip_config(random_openclip_state_dict())["vision_config"]["patch_size"]
        16
    """
    from .checkpoint import _layer_count

    try:
        vocab, text_width = state_dict["token_embedding.weight"].shape
        positions = state_dict["positional_embedding"].shape[0]
        projection = state_dict["text_projection"].shape[1]
        vision_width, _, patch, _ = state_dict["visual.conv1.weight"].shape
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        text_mlp = state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        vision_mlp = state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    except KeyError as error:
        raise ModelSourceError(f"checkpoint '{name}': tensor {error.args[0]!r} is missing, so this is not an "
                               "OpenCLIP ViT CLIP model (both towers)") from error
    text = {
        "vocab_size": int(vocab), "hidden_size": int(text_width), "intermediate_size": int(text_mlp),
        "num_hidden_layers": _layer_count(state_dict, "transformer.resblocks."),
        "num_attention_heads": int(text_width) // ATTENTION_HEAD_WIDTH, "max_position_embeddings": int(positions),
        "hidden_act": hidden_act, "projection_dim": int(projection),
        "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0,  # OpenCLIP pads with 0
    }  # fmt: skip
    vision = {
        "hidden_size": int(vision_width), "intermediate_size": int(vision_mlp),
        "num_hidden_layers": _layer_count(state_dict, "visual.transformer.resblocks."),
        "num_attention_heads": int(vision_width) // ATTENTION_HEAD_WIDTH, "patch_size": int(patch),
        "image_size": grid * int(patch), "hidden_act": hidden_act, "projection_dim": int(projection),
    }  # fmt: skip
    return {"text_config": text, "vision_config": vision, "projection_dim": int(projection)}


def load_openclip_as_hf(state_dict: dict[str, torch.Tensor], *, name: str, device: Any, dtype: Any,
                        hidden_act: str = "gelu") -> Any:
    """An OpenCLIP ViT CLIP state dict as a transformers ``CLIPModel`` (eval mode, frozen), built once.

    Example:
        >>> import torch
        >>> from sdclip.testing import random_openclip_state_dict
        >>> model = load_openclip_as_hf(random_openclip_state_dict(), name="tiny", device=torch.device("cpu"),
        ...                             dtype=torch.float32)
        >>> type(model).__name__
        'CLIPModel'
    """
    from transformers import CLIPConfig, CLIPModel

    from .building import make_config, materialise

    config = make_config(CLIPConfig, openclip_config(state_dict, hidden_act=hidden_act, name=name), name=name)
    return materialise(CLIPModel, config, openclip_to_hf(state_dict, name=name), name=name, device=device,
                       dtype=dtype)
