"""The text encoders of SD3 / SD3.5 and Flux.1: CLIP-L (+ bigG) with a T5 encoder, from any source.

Sources: a diffusers pipeline folder (SD3's ``text_encoder_3`` may be absent or None: its part is zeros),
an SD3.5 single-file checkpoint (``text_encoders.clip_l.transformer.``, ``text_encoders.clip_g.transformer.``,
``text_encoders.t5xxl.transformer.``), or standalone files as ComfyUI users keep them
(``clip_l.safetensors``, ``clip_g.safetensors``, ``t5xxl_fp16.safetensors``) via :func:`load_files`. A
file brings no tokenizer for T5: the caller names a folder with one (``t5_tokenizer=``). Any other source
goes to :func:`sdclip.models.text_encoders.load_encoders` unchanged.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelSourceError
from . import checkpoint as ckpt
from .building import build_text_model
from .families import FAMILIES, ModelFamily, has_component, pipeline_family, t5_slot
from .options import LoadOptions
from .sources import ResolvedSource, model_index, resolve_source
from .t5 import SD35_T5_PREFIX, load_t5, load_t5_tokenizer
from .text_encoders import LoadedTextEncoder, LoadedTextEncoders, _stand_in_tokenizer, load_encoder, load_encoders

if TYPE_CHECKING:
    import torch

__all__ = ["SD35_PREFIXES", "load_conditioning_encoders", "load_files", "t5_tokenizer_for_source"]

SD35_PREFIXES = {"clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
                 "t5": SD35_T5_PREFIX}  # fmt: skip
T5_XXL_WIDTH = 4096  # SD3's joint_attention_dim, the width of its zeros when there is no T5


def load_conditioning_encoders(
    source: str | os.PathLike, options: LoadOptions, *, subfolder: str | None = None,
    t5_device: str | torch.device | None = None, t5_tokenizer: str | os.PathLike | None = None,
) -> LoadedTextEncoders:
    """Every text encoder a source conditions with, T5 included for SD3 / Flux; ``t5_device``: where T5 runs.

    Example:
        >>> import tempfile
        >>> from sdclip.testing_mmdit import tiny_flux_pipeline
        >>> folder = tempfile.mkdtemp()
        >>> tiny_flux_pipeline().save_pretrained(folder)
        >>> loaded = load_conditioning_encoders(folder, LoadOptions(device="cpu"))
        >>> loaded.family.name, len(loaded.encoders), loaded.t5.model.config.d_model
        ('flux', 1, 384)
    """
    resolved = resolve_source(source, local_files_only=options.local_files_only)
    t5_options = options if t5_device is None else replace(options, device=t5_device)
    t5_options.torch_dtype()  # a bad device or dtype fails before any weights are read
    if subfolder is None and resolved.kind == "pipeline":
        index = model_index(resolved)
        family, parts = pipeline_family(resolved, index)
        if family.name in ("sd3", "flux"):
            return _pipeline(resolved, index, family, parts, options, t5_options, t5_tokenizer)
    if subfolder is None and resolved.kind == "single_file" and resolved.path.suffix.lower() == ".safetensors":
        keys = ckpt.safetensors_keys(resolved.path)
        if any(key.startswith(SD35_PREFIXES["clip_l"]) for key in keys):
            t5 = resolved.path if any(key.startswith(SD35_T5_PREFIX) for key in keys) else None
            return load_files(clip_l=resolved.path, clip_g=resolved.path, t5=t5, family="sd3", options=options,
                              t5_options=t5_options, t5_tokenizer=t5_tokenizer)  # fmt: skip
    return load_encoders(source, options, subfolder=subfolder)


def _pipeline(resolved: ResolvedSource, index: dict, family: ModelFamily, parts: list[str], options: LoadOptions,
              t5_options: LoadOptions, t5_tokenizer: Any) -> LoadedTextEncoders:  # fmt: skip
    slot = t5_slot(family)
    t5 = None
    if has_component(resolved, index, slot.subfolder):
        folder = resolved.path / slot.subfolder
        if not (folder / "config.json").is_file():
            raise ModelSourceError(
                f"model '{resolved.name}': {family.title} pipeline folder has no {slot.subfolder}/config.json; copy "
                f"the complete folder, or set {slot.subfolder} to null in model_index.json to load it without T5"
            )
        tokenizer = load_t5_tokenizer(t5_tokenizer or resolved.path / slot.tokenizer, needed_by=f"model '{resolved.name}'")
        device = t5_options.torch_device()
        model = load_t5(folder, device=device, dtype=t5_options.torch_dtype(device), trainable=t5_options.trainable)
        t5 = LoadedTextEncoder(model, tokenizer, resolved)
    width = ckpt.read_json(resolved.path / "transformer" / "config.json").get("joint_attention_dim") \
        if (resolved.path / "transformer" / "config.json").is_file() else None  # fmt: skip
    encoders = [load_encoder(resolved, part, options) for part in parts]
    return LoadedTextEncoders(encoders, sdxl=False, family=family, t5=t5,
                              t5_width=width or (t5.model.config.d_model if t5 else T5_XXL_WIDTH))  # fmt: skip


def load_files(
    *, clip_l: str | os.PathLike, clip_g: str | os.PathLike | None = None, t5: str | os.PathLike | None = None,
    family: str = "sd3", options: LoadOptions, t5_options: LoadOptions | None = None,
    t5_tokenizer: str | os.PathLike | None = None, t5_width: int | None = None,
) -> LoadedTextEncoders:
    """SD3 (``clip_l`` + ``clip_g`` [+ ``t5``]) or Flux (``clip_l`` + ``t5``) encoders from standalone files.

    Each CLIP file holds transformers' ``CLIPTextModel(WithProjection)`` keys (with or without
    ``text_model.``) or an SD3.5 single file's ``text_encoders.clip_*.transformer.`` ones; the configs
    are inferred from shapes (``quick_gelu`` for CLIP-L, ``gelu`` for bigG). SD3 takes CLIP-L's projected
    pooled output: a CLIP-L file without ``text_projection.weight`` gets the identity (as ComfyUI); Flux
    takes the unprojected one. ``t5_width`` (SD3 without T5): the zeros' width (default 4096).

    Raises:
        ModelSourceError: an unknown ``family``, a file that is missing or is not what its argument
            names, SD3 without ``clip_g``, Flux without ``t5``, or a T5 without ``t5_tokenizer``.
    """
    import torch

    if family not in ("sd3", "flux"):
        raise ModelSourceError(f"family: expected 'sd3' or 'flux', got {family!r}")
    if family == "sd3" and clip_g is None:
        raise ModelSourceError("clip_g: SD3 conditions on CLIP-L and bigG; pass clip_g= the clip_g.safetensors file")
    if family == "flux" and t5 is None:
        raise ModelSourceError("t5: Flux conditions on T5; pass t5= the t5xxl .safetensors file or T5EncoderModel folder")
    t5_options = t5_options or options
    tokenizer = load_t5_tokenizer(t5_tokenizer, needed_by=f"t5 '{t5}'") if t5 is not None else None
    device = options.torch_device()
    build = dict(device=device, dtype=options.torch_dtype(device), trainable=options.trainable)
    encoders = []
    for name, path in (("clip_l", clip_l), ("clip_g", clip_g if family == "sd3" else None)):
        if path is None:
            continue
        state_dict = _clip_file(Path(path), name)
        width = state_dict["embeddings.token_embedding.weight"].shape[1]
        if family == "flux":
            state_dict.pop("text_projection.weight", None)
        elif "text_projection.weight" not in state_dict:
            state_dict["text_projection.weight"] = torch.eye(width, dtype=state_dict["embeddings.token_embedding.weight"].dtype)
        config = ckpt.infer_text_config(state_dict, hidden_act="gelu" if name == "clip_g" else "quick_gelu")
        clip_tokenizer = _stand_in_tokenizer("!" if name == "clip_g" else None)
        model = build_text_model(config, state_dict, name=str(path), tokenizer=clip_tokenizer, **build)
        encoders.append(LoadedTextEncoder(model, clip_tokenizer, None))
    t5_encoder = None
    if t5 is not None:
        t5_device = t5_options.torch_device()
        model = load_t5(t5, device=t5_device, dtype=t5_options.torch_dtype(t5_device), trainable=t5_options.trainable)
        t5_encoder = LoadedTextEncoder(model, tokenizer, None)
    width = t5_width or (t5_encoder.model.config.d_model if t5_encoder else T5_XXL_WIDTH)
    return LoadedTextEncoders(encoders, family=FAMILIES[family], t5=t5_encoder, t5_width=width)


def _clip_file(path: Path, name: str) -> dict[str, Any]:
    """A CLIP text encoder's canonical state dict from a standalone (or SD3.5 single) ``.safetensors`` file."""
    if not path.is_file() or path.suffix.lower() != ".safetensors":
        raise ModelSourceError(
            f"{name} '{path}': expected a .safetensors file, found "
            f"{'a file of another kind' if path.is_file() else 'a folder' if path.is_dir() else 'nothing at that path'}"
        )
    keys = ckpt.safetensors_keys(path)
    prefix = SD35_PREFIXES[name] if any(key.startswith(SD35_PREFIXES[name]) for key in keys) else ""
    raw = ckpt.read_safetensors(path, [key for key in keys if key.startswith(prefix)])
    state_dict = ckpt.strip_text_prefix({key[len(prefix):]: value for key, value in raw.items()})
    state_dict = {key: value for key, value in state_dict.items() if ckpt.is_text_key(key)}
    if "embeddings.token_embedding.weight" not in state_dict:
        raise ModelSourceError(
            f"{name} '{path}': no CLIP text encoder inside (expected transformers' CLIPTextModel keys, e.g. "
            f"'text_model.embeddings.token_embedding.weight', or the same under '{SD35_PREFIXES[name]}')"
        )
    return state_dict


def t5_tokenizer_for_source(source: str | os.PathLike, *, local_files_only: bool | None = None) -> tuple[Any, str] | None:
    """``(T5 tokenizer, family name)`` of an SD3 / Flux pipeline folder, reading no weights; else None.

    Example:
        >>> import tempfile
        >>> from sdclip.testing_mmdit import tiny_flux_pipeline
        >>> folder = tempfile.mkdtemp()
        >>> tiny_flux_pipeline().save_pretrained(folder)
        >>> tokenizer, family = t5_tokenizer_for_source(folder)
        >>> family, tokenizer("a cat").input_ids
        ('flux', [4, 12, 1])
    """
    resolved = resolve_source(source, local_files_only=local_files_only)
    if resolved.kind != "pipeline":
        return None
    index = model_index(resolved)
    family, _ = pipeline_family(resolved, index)
    slot = t5_slot(family)
    if slot is None or not has_component(resolved, index, slot.subfolder):
        return None
    return load_t5_tokenizer(resolved.path / slot.tokenizer, needed_by=f"model '{resolved.name}'"), family.name
