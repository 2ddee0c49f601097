"""Load a full ``CLIPModel`` (both towers, projections, ``logit_scale``) for scoring."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ModelSourceError
from . import checkpoint as ckpt
from .building import check_text_config, make_config, materialise
from .options import LoadOptions
from .sources import DEFAULT_MODEL, ResolvedSource, resolve_source
from .text_encoders import tokenizer_of

if TYPE_CHECKING:
    import torch
    from transformers import CLIPModel, CLIPTokenizer

_TOWER_PREFIXES = ("vision_model.", "visual_projection", "text_projection", "logit_scale")


def load_clip_model(
    source: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
    allow_pickle: bool = False,
    trainable: bool = False,
) -> tuple[CLIPModel, CLIPTokenizer, dict | None]:
    """Load a full ``CLIPModel`` (both towers, projections, ``logit_scale``) for scoring.

    Args:
        source: hub id, CLIP model folder, or a single-file checkpoint holding both towers.
        device, dtype, local_files_only, allow_pickle, trainable: see ``LoadOptions``.

    Returns:
        ``(model, tokenizer, preprocessor_config)``; the last is the folder's
        ``preprocessor_config.json`` as a dict, or None when there is none.

    Example:
        >>> import tempfile
        >>> from sdclip.testing import random_clip_model, save_clip_folder
        >>> folder = save_clip_folder(random_clip_model(), tempfile.mkdtemp())
        >>> model, tokenizer, preprocess = load_clip_model(folder, device="cpu")
        >>> model.config.projection_dim, preprocess["crop_size"]
        (96, {'height': 224, 'width': 224})
    """
    return load_clip(source, LoadOptions(device, dtype, local_files_only, allow_pickle, trainable))


def load_clip(source: str | os.PathLike, options: LoadOptions) -> tuple[CLIPModel, CLIPTokenizer, dict | None]:
    """``load_clip_model`` with its options as one ``LoadOptions``."""
    from transformers import CLIPConfig
    from transformers import CLIPModel as _CLIPModel

    resolved = resolve_source(source, local_files_only=options.local_files_only)
    device = options.torch_device()
    dtype = options.torch_dtype(device)
    config, state_dict, preprocessor = _clip_config_and_weights(resolved, allow_pickle=options.allow_pickle)
    tokenizer = tokenizer_of(resolved, None)
    text_config = config.get("text_config")
    check_text_config(resolved.name, text_config if isinstance(text_config, dict) else {}, tokenizer)
    clip_config = make_config(CLIPConfig, config, name=resolved.name)
    prefixed = {(k if k.startswith(_TOWER_PREFIXES) else "text_model." + k): v for k, v in state_dict.items()}
    model = materialise(_CLIPModel, clip_config, prefixed, name=resolved.name, device=device, dtype=dtype,
                        trainable=options.trainable)  # fmt: skip
    return model, tokenizer, preprocessor


def _clip_config_and_weights(resolved: ResolvedSource, *, allow_pickle: bool) -> tuple[dict, dict, dict | None]:
    """(CLIPConfig dict, canonical state dict, preprocessor config or None) of a CLIP folder or single file."""
    preprocessor = None
    if resolved.kind == "clip_folder":
        config = ckpt.read_json(resolved.path / "config.json")
        if "vision_config" not in config:
            raise ModelSourceError(
                f"model '{resolved.name}': {config.get('architectures') or 'this model'} has no vision tower; "
                "scoring needs a full CLIP model (CLIPModel)"
            )
        state_dict = ckpt.read_folder_weights(resolved.path, allow_pickle=allow_pickle)
        if (resolved.path / "preprocessor_config.json").is_file():
            preprocessor = ckpt.read_json(resolved.path / "preprocessor_config.json")
        return config, state_dict, preprocessor
    if resolved.kind == "single_file":
        if resolved.path.suffix.lower() == ".safetensors":
            raw = ckpt.read_safetensors(resolved.path, ckpt.safetensors_keys(resolved.path))
        else:
            raw = ckpt.read_pickle(resolved.path, allow_pickle=allow_pickle)
        state_dict = ckpt.canonical_clip_state_dict(raw)
        if "vision_model.embeddings.patch_embedding.weight" not in state_dict:
            raise ModelSourceError(
                f"checkpoint '{resolved.name}': no CLIP vision tower inside; scoring needs a full CLIP model"
            )
        text = ckpt.infer_text_config({k: v for k, v in state_dict.items() if ckpt.is_text_key(k)})
        config = {
            "text_config": text,
            "vision_config": ckpt.infer_vision_config(state_dict),
            "projection_dim": text["projection_dim"],
        }
        return config, state_dict, preprocessor
    raise ModelSourceError(
        f"model '{resolved.name}': a diffusers pipeline has no CLIP vision tower; scoring needs a full CLIP "
        "model such as openai/clip-vit-large-patch14"
    )
