"""Prompt text to the tensors diffusers pipelines take: a functional core under a thin ``TextConditioner``."""

from .conditioner import SDXL_SPEC, Conditioning, EncoderSpec, TextConditioner, TruncationWarning

__all__ = ["Conditioning", "EncoderSpec", "SDXL_SPEC", "TextConditioner", "TruncationWarning"]
