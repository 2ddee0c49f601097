"""The loaders under one name: ``sdclip.models.loading`` re-exports them for existing imports.

Text encoders and tokenizers for a source live in ``sdclip.models.text_encoders``, full CLIP models for
scoring in ``sdclip.models.clip_models``; both read weights with ``sdclip.models.checkpoint`` and build
models with ``sdclip.models.building``, and take their options as one ``LoadOptions``.
"""

from __future__ import annotations

from .building import build_text_model
from .clip_models import load_clip, load_clip_model
from .options import LoadOptions
from .text_encoders import (
    LoadedTextEncoder,
    LoadedTextEncoders,
    load_encoders,
    load_text_encoder,
    load_text_encoders,
    tokenizer_for_source,
)

__all__ = [
    "LoadOptions",
    "LoadedTextEncoder",
    "LoadedTextEncoders",
    "build_text_model",
    "load_clip",
    "load_clip_model",
    "load_encoders",
    "load_text_encoder",
    "load_text_encoders",
    "tokenizer_for_source",
]
