"""The CLIP text encoders of a live diffusers pipeline, as ``LoadedTextEncoders`` (shared, not copied)."""

from __future__ import annotations

from typing import Any

from ..errors import ModelSourceError
from ..models.loading import LoadedTextEncoder, LoadedTextEncoders

__all__ = ["pipeline_encoders"]


def pipeline_encoders(pipe: Any) -> LoadedTextEncoders:
    """The pipeline's text encoders and tokenizers, whether it is SDXL, and its ``force_zeros_for_empty_prompt``.

    Raises:
        ModelSourceError: the pipeline has no text encoder, or one that is not CLIP (Flux, SD3).

    Example:
        >>> loaded = pipeline_encoders(pipe)
        >>> len(loaded.encoders), loaded.sdxl, loaded.encoders[0].model is pipe.text_encoder
        (1, False, True)
    """
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
