"""The body of ``TextConditioner.encode``: options checked once, then the family's encoder runs.

SD 1.x / 2.x / SDXL go through :func:`encode_clip` (each CLIP encoder's prompts and negatives, assembled by
``core.build_conditioning``); SD3 and Flux through :func:`sdclip.conditioning.mmdit.encode_mmdit`. Either
way, when no negative is needed (``negative_prompt=False``; Flux without a negative prompt) nothing is
encoded for it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import PromptError
from ..prompts.lists import second_prompts, validate_prompts
from ..prompts.truncation import warn_truncated
from .core import build_conditioning, encode_texts
from .cuda_graphs import encoder_forward
from .mmdit import DEFAULT_MAX_SEQUENCE_LENGTH, encode_mmdit
from .settings import check_clip_skip, check_num_images, resolve_settings

if TYPE_CHECKING:
    from .types import Conditioning

__all__ = ["clip_texts", "encode_call", "encode_clip", "t5_device_of"]


def encode_call(
    cond: Any, prompt: Any, negative_prompt: Any, *, prompt_2: Any = None, negative_prompt_2: Any = None,
    prompt_3: Any = None, negative_prompt_3: Any = None, num_images_per_prompt: int = 1, clip_skip: Any = None,
    clip_skip_negative: str = "same", force_zeros: Any = None, syntax: Any = "plain", truncate: Any = True,
    weighting: Any = None, max_sequence_length: Any = None,
) -> Conditioning:
    """``TextConditioner.encode`` (see there) for ``cond``."""
    family = getattr(cond, "family", None)
    mmdit = family in ("sd3", "flux")
    if negative_prompt is True:
        raise PromptError("negative_prompt: expected a string, a list of strings, None or False, got True")
    # no negative at all: asked for (False), or Flux without one (no true CFG)
    no_negative = negative_prompt is False or (family == "flux" and negative_prompt is None and negative_prompt_2 is None)
    if negative_prompt is False:
        negative_prompt = None
    prompts, negatives = validate_prompts(prompt, negative_prompt)
    if len(cond.encoders) < 2 and not mmdit and (prompt_2 is not None or negative_prompt_2 is not None):
        raise PromptError(
            "prompt_2: this model has one text encoder; prompt_2 and negative_prompt_2 are for SDXL's second one"
        )
    if family != "sd3" and (prompt_3 is not None or negative_prompt_3 is not None):
        raise PromptError("prompt_3: only SD3 has a third text encoder (T5); prompt_3 and negative_prompt_3 are for it")
    if not mmdit and max_sequence_length is not None:
        raise PromptError("max_sequence_length: only SD3 and Flux have a T5 encoder; this model has none")
    prompts_2 = second_prompts(prompt_2, prompts, "prompt_2")
    negatives_2 = second_prompts(negative_prompt_2, negatives, "negative_prompt_2")
    check_num_images(num_images_per_prompt)
    settings = resolve_settings(clip_skip, syntax, truncate, weighting)
    check_clip_skip(clip_skip, [
        encoder.model.config.num_hidden_layers + 1 - spec.skip_offset
        for encoder, spec in zip(cond.encoders, cond.specs, strict=True)
    ])  # fmt: skip
    if clip_skip_negative not in ("same", "diffusers"):
        raise PromptError(f"clip_skip_negative: expected 'same' or 'diffusers', got {clip_skip_negative!r}")
    negative_settings = replace(settings, clip_skip=None) if clip_skip_negative == "diffusers" else settings
    if mmdit:
        length = DEFAULT_MAX_SEQUENCE_LENGTH[family] if max_sequence_length is None else max_sequence_length
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise PromptError(f"max_sequence_length: expected an integer >= 1, got {max_sequence_length!r}")
        if family == "sd3":  # CLIP-L, bigG, T5
            texts = [prompts, prompts_2, second_prompts(prompt_3, prompts, "prompt_3")]
            negative_texts = [negatives, negatives_2, second_prompts(negative_prompt_3, negatives, "negative_prompt_3")]
        else:  # Flux: CLIP-L (pooled), T5 (prompt_2, as diffusers)
            texts, negative_texts = [prompts, prompts_2], [negatives, negatives_2]
        return encode_mmdit(cond, texts, None if no_negative else negative_texts, settings=settings,
                            negative_settings=negative_settings, repeats=num_images_per_prompt,
                            max_sequence_length=length)  # fmt: skip
    if force_zeros is None:
        force_zeros = cond.force_zeros_for_empty_prompt
    zero_negative = force_zeros and negative_prompt is None and negative_prompt_2 is None and not no_negative
    return encode_clip(cond, [prompts, prompts_2], [] if zero_negative or no_negative else [negatives, negatives_2],
                       settings=settings, negative_settings=negative_settings, repeats=num_images_per_prompt,
                       zero_negative=zero_negative, no_negative=no_negative)  # fmt: skip


def encode_clip(
    cond: Any, texts: list[list[str]], negative_texts: list[list[str]], *, settings: Any, negative_settings: Any,
    repeats: int, zero_negative: bool, no_negative: bool,
) -> Conditioning:
    """SD 1.x / 2.x / SDXL: per encoder, the prompts (``texts[0]`` for the first, ``texts[1]`` for the
    others) and the negatives (none when ``negative_texts`` is empty), each unique text encoded once."""
    sides: list[tuple[tuple[list[str], dict], tuple[list[str], dict]]] = []
    truncated: list[tuple[str, str]] = []
    with cond._lock, cond._grad_context():
        for index in range(len(cond.encoders)):
            prompts = texts[min(index, 1)]
            negatives = negative_texts[min(index, 1)] if negative_texts else []
            if negative_settings == settings:  # one batch: each unique text is encoded once
                encoded = negative_encoded = cond._encode_texts(index, prompts + negatives, settings, truncated)
            else:
                encoded = cond._encode_texts(index, prompts, settings, truncated)
                negative_encoded = cond._encode_texts(index, negatives, negative_settings, truncated)
            sides.append(((prompts, encoded), (negatives, negative_encoded)))
    for text, dropped in dict.fromkeys(truncated):
        warn_truncated(text, dropped, limit=77, what="encoded", hint="pass truncate=False to keep it")
    return build_conditioning(sides, texts[0], repeats, zero_negative=zero_negative,
                              pipeline_takes_pooled=cond.pipeline_takes_pooled, no_negative=no_negative)


def t5_device_of(devices: Any) -> Any:
    """``devices["t5"]`` (None: T5 goes where the CLIP encoders go); other keys are refused.

    Example:
        >>> t5_device_of({"t5": "cpu"}), t5_device_of(None)
        ('cpu', None)
    """
    if devices is None:
        return None
    if not isinstance(devices, dict) or set(devices) - {"t5"}:
        raise PromptError(f"devices: expected a dict with the key 't5' (e.g. {{'t5': 'cpu'}}), got {devices!r}")
    return devices.get("t5")


def clip_texts(cond: Any, index: int, texts: list[str], settings: Any, truncated: list[tuple[str, str]]) -> dict:
    """``core.encode_texts`` for ``cond``'s encoder ``index`` through its cache (none when trainable) and its
    CUDA graphs (when on); the caller holds the lock."""
    if not texts:
        return {}
    encoder, spec = cond.encoders[index], cond.specs[index]
    forward = None if cond._graphs is None else encoder_forward(
        cond._graphs, index, encoder.model, spec, eos_token_id=encoder.tokenizer.eos_token_id, clip_skip=settings.clip_skip)
    return encode_texts(
        encoder.model, encoder.tokenizer, spec, list(dict.fromkeys(texts)), settings,
        chunk=lambda text: cond._chunk(index, text, settings), truncated=truncated,
        cache=None if cond.trainable else cond._cache, cache_key=(index,), forward=forward,
    )  # fmt: skip
