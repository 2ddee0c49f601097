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
    "Conditioning": "sdclip.conditioning.conditioner",
    "EncoderSpec": "sdclip.conditioning.conditioner",
    "TextConditioner": "sdclip.conditioning.conditioner",
    "TruncationWarning": "sdclip.prompts.truncation",
    "load_text_encoder": "sdclip.models.loading",
    "load_text_encoders": "sdclip.models.loading",
    "load_clip_model": "sdclip.models.loading",
    "resolve_source": "sdclip.models.sources",
    "load_tokenizer": "sdclip.models.tokenizer",
    "parse_prompt": "sdclip.prompts.parser",
    "chunk_prompt": "sdclip.prompts.chunking",
    "PromptToken": "sdclip.prompts.tokens",
    "tokenize_prompt": "sdclip.prompts.tokens",
    "SdclipError": "sdclip.errors",
    "ModelSourceError": "sdclip.errors",
    "WeightsNotAvailableError": "sdclip.errors",
    "PickleRefusedError": "sdclip.errors",
    "PromptError": "sdclip.errors",
    "PromptTypeError": "sdclip.errors",
    "ImageInputError": "sdclip.errors",
    "EmbeddingError": "sdclip.errors",
    "ScoreFileError": "sdclip.errors",
    "embedding_report": "sdclip.inspection.api",
    "similarity_matrix": "sdclip.inspection.api",
    "ClipScorer": "sdclip.scoring.clip_scorer",
    "Ranking": "sdclip.scoring.ranking",
    "clip": "sdclip.compat.openai_clip",
    "TrainingError": "sdclip.errors",
    "TrainingDataError": "sdclip.errors",
    "train": "sdclip.training.trainer",
    "TrainConfig": "sdclip.training.options",
}

_MODULE_EXPORTS = {"clip"}  # names that are modules, not attributes of one

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .compat import openai_clip as clip
    from .conditioning.conditioner import Conditioning, EncoderSpec, TextConditioner
    from .prompts.truncation import TruncationWarning
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
    from .inspection.api import embedding_report, similarity_matrix
    from .models.loading import load_clip_model, load_text_encoder, load_text_encoders
    from .scoring.clip_scorer import ClipScorer, Ranking
    from .models.sources import resolve_source
    from .models.tokenizer import load_tokenizer
    from .prompts.parser import parse_prompt
    from .prompts.chunking import chunk_prompt
    from .prompts.tokens import PromptToken, tokenize_prompt
    from .errors import TrainingDataError, TrainingError
    from .training.options import TrainConfig
    from .training.trainer import train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sdclip' has no attribute {name!r}")
    imported = importlib.import_module(module)
    value = imported if name in _MODULE_EXPORTS else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
