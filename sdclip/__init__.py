"""sdclip: CLIP for Stable Diffusion work.

Text conditioning identical to diffusers' own (plus long prompts, weights and caching), prompt
inspection, and fast CLIP scoring. Names load on first use, so ``import sdclip`` is cheap and the
tokenizer-only parts work without torch models.

Example:
    >>> import sdclip
    >>> sdclip.load_tokenizer()("a photo of a cat").input_ids
    [49406, 320, 1125, 539, 320, 2368, 49407]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Conditioning": "sdclip.conditioning",
    "EncoderSpec": "sdclip.conditioning",
    "TextConditioner": "sdclip.conditioning",
    "TruncationWarning": "sdclip.conditioning",
    "load_text_encoder": "sdclip.loading",
    "load_text_encoders": "sdclip.loading",
    "load_clip_model": "sdclip.loading",
    "resolve_source": "sdclip.sources",
    "load_tokenizer": "sdclip.tokenizer",
    "parse_prompt": "sdclip.prompt_parser",
    "chunk_prompt": "sdclip.chunking",
    "PromptToken": "sdclip.prompt_tokens",
    "tokenize_prompt": "sdclip.prompt_tokens",
    "SdclipError": "sdclip.errors",
    "ModelSourceError": "sdclip.errors",
    "WeightsNotAvailableError": "sdclip.errors",
    "PickleRefusedError": "sdclip.errors",
    "PromptError": "sdclip.errors",
    "PromptTypeError": "sdclip.errors",
    "ImageInputError": "sdclip.errors",
    "EmbeddingError": "sdclip.errors",
    "ScoreFileError": "sdclip.errors",
    "embedding_report": "sdclip.inspection",
    "similarity_matrix": "sdclip.inspection",
    "ClipScorer": "sdclip.scoring",
    "Ranking": "sdclip.scoring",
    "clip": "sdclip.clip",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from . import clip
    from .conditioning import Conditioning, EncoderSpec, TextConditioner, TruncationWarning
    from .errors import (
        EmbeddingError,
        ImageInputError,
        ModelSourceError,
        PickleRefusedError,
        PromptError,
        PromptTypeError,
        ScoreFileError,
        SdclipError,
        WeightsNotAvailableError,
    )
    from .inspection import embedding_report, similarity_matrix
    from .loading import load_clip_model, load_text_encoder, load_text_encoders
    from .scoring import ClipScorer, Ranking
    from .sources import resolve_source
    from .tokenizer import load_tokenizer
    from .prompt_parser import parse_prompt
    from .chunking import chunk_prompt
    from .prompt_tokens import PromptToken, tokenize_prompt


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sdclip' has no attribute {name!r}")
    imported = importlib.import_module(module)
    value = imported if module == f"{__name__}.{name}" else getattr(imported, name)  # a submodule export
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
