"""The CLIP text encoders of a live diffusers pipeline, as ``LoadedTextEncoders`` (shared, not copied)."""

from __future__ import annotations

from typing import Any

from ..errors import ModelSourceError
from ..models.families import FAMILIES
from ..models.loading import LoadedTextEncoder, LoadedTextEncoders

__all__ = ["pipeline_encoders"]


def pipeline_encoders(pipe: Any) -> LoadedTextEncoders:
    """The pipeline's text encoders and tokenizers, whether it is SDXL, and its ``force_zeros_for_empty_prompt``.

    SD3 (``StableDiffusion3*``) and Flux (``Flux*``) pipelines give their CLIP encoders and their T5
    (``text_encoder_3`` / ``text_encoder_2``; SD3's may be None) with the transformer's ``joint_attention_dim``.

    Raises:
        ModelSourceError: the pipeline has no text encoder, or one that is not CLIP where CLIP is expected.

    Example:
        >>> loaded = pipeline_encoders(pipe)
        >>> len(loaded.encoders), loaded.sdxl, loaded.encoders[0].model is pipe.text_encoder
        (1, False, True)
    """
    kind = type(pipe).__name__
    if kind.startswith(("StableDiffusion3", "Flux")):
        return _mmdit_encoders(pipe, "sd3" if kind.startswith("StableDiffusion3") else "flux")
    names = [name for name in ("text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None]
    for name in names + ["text_encoder_3"]:
        model = getattr(pipe, name, None)
        if model is not None and not type(model).__name__.startswith("CLIPText"):
            raise ModelSourceError(
                f"pipeline {type(pipe).__name__}: {name} is {type(model).__name__}, not a CLIP text encoder; "
                "sdclip conditions SD 1.x/2.x and SDXL pipelines only"
            )
    if not names:
        raise ModelSourceError(f"pipeline {type(pipe).__name__}: has no text encoder")
    encoders = [
        LoadedTextEncoder(getattr(pipe, name), getattr(pipe, name.replace("text_encoder", "tokenizer")), None)
        for name in names
    ]
    sdxl = hasattr(pipe, "text_encoder_2")  # SDXL pipelines have the attribute, the refiner's first is None
    force_zeros = bool(pipe.config.get("force_zeros_for_empty_prompt", True)) if sdxl else False
    return LoadedTextEncoders(encoders, sdxl=sdxl, force_zeros_for_empty_prompt=force_zeros)


def _mmdit_encoders(pipe: Any, family: str) -> LoadedTextEncoders:
    clip_names, t5_name = (["text_encoder", "text_encoder_2"], "text_encoder_3") if family == "sd3" else (["text_encoder"], "text_encoder_2")
    for name in clip_names:
        model = getattr(pipe, name, None)
        if model is None or not type(model).__name__.startswith("CLIPText"):
            raise ModelSourceError(
                f"pipeline {type(pipe).__name__}: {name} is {type(model).__name__}, expected a CLIP text encoder"
            )
    encoders = [LoadedTextEncoder(getattr(pipe, name), getattr(pipe, name.replace("text_encoder", "tokenizer")), None)
                for name in clip_names]  # fmt: skip
    t5_model = getattr(pipe, t5_name, None)
    t5 = None if t5_model is None else LoadedTextEncoder(t5_model, getattr(pipe, t5_name.replace("text_encoder", "tokenizer")), None)
    width = pipe.transformer.config.joint_attention_dim if getattr(pipe, "transformer", None) is not None else None
    return LoadedTextEncoders(encoders, family=FAMILIES[family], t5=t5,
                              t5_width=width or (t5_model.config.d_model if t5_model is not None else 4096))  # fmt: skip
