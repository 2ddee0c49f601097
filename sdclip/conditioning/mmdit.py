"""SD3 / SD3.5 and Flux.1 conditioning: the CLIP parts (as for SDXL) and T5, assembled as diffusers does.

``sd3_tensors`` and ``flux_tensors`` are the assembly, as plain functions; ``encode_mmdit`` runs one
``TextConditioner.encode`` call for these families (the conditioner's cache, lock and options).

SD3 (``StableDiffusion3Pipeline.encode_prompt``): CLIP-L's and bigG's penultimate hidden states side by
side (``(B, 77·k, 768 + 1280)``), zero-padded to T5's width, then T5's states after them on the sequence
axis (``(B, 77·k + L, 4096)``); pooled = both projected ``text_embeds`` side by side (``(B, 2048)``).
Without T5 its part is zeros, as diffusers. Flux (``FluxPipeline.encode_prompt``): T5's states are
``prompt_embeds`` (``(B, L, 4096)``), CLIP-L's pooler output (unprojected) is the pooled vector (``(B, 768)``),
``text_ids`` is zeros ``(L, 3)``.

``syntax="compel"``: T5 gets compel's math too, as ``CompelForFlux`` applies it to T5 (weights, masked
downweighting, blends; ``.and()`` concatenates one ``L``-token window per part), so T5's part may be
``m·L`` long; prompts and negatives are padded to a common length with the empty text's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..prompts.syntaxes import get_syntax
from ..prompts.truncation import warn_truncated
from .compel_math import encode_combined_t5
from .core import assemble_texts
from .t5 import encode_t5_texts

if TYPE_CHECKING:
    import torch

    from .settings import EncodeSettings
    from .types import Conditioning

__all__ = ["DEFAULT_MAX_SEQUENCE_LENGTH", "encode_mmdit", "flux_tensors", "sd3_tensors"]

DEFAULT_MAX_SEQUENCE_LENGTH = {"sd3": 256, "flux": 512}  # the pipelines' encode_prompt defaults


def sd3_tensors(clip_hidden: torch.Tensor, clip_pooled: Sequence[torch.Tensor], t5_hidden: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(prompt_embeds (B, S + L, W), pooled (B, ΣD))`` from CLIP ``(B, S, ΣH)``, each CLIP's pooled
    ``(B, D)`` and T5 ``(B, L, W)``: CLIP zero-padded to ``W`` on the feature axis, then T5 after it.

    Example:
        >>> import torch
        >>> embeds, pooled = sd3_tensors(torch.ones(1, 77, 5), [torch.ones(1, 2), torch.ones(1, 3)], torch.ones(1, 4, 8))
        >>> embeds.shape, embeds[0, 0].tolist(), pooled.shape
        (torch.Size([1, 81, 8]), [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], torch.Size([1, 5]))
    """
    import torch

    padded = torch.nn.functional.pad(clip_hidden, (0, t5_hidden.shape[-1] - clip_hidden.shape[-1]))
    return torch.cat([padded, t5_hidden.to(padded.dtype)], dim=-2), torch.cat(list(clip_pooled), dim=-1)


def flux_tensors(t5_hidden: torch.Tensor, clip_pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(prompt_embeds (B, L, W), pooled (B, D), text_ids (L, 3))`` as ``FluxPipeline.encode_prompt``.

    Example:
        >>> import torch
        >>> [tuple(t.shape) for t in flux_tensors(torch.ones(2, 6, 8), torch.ones(2, 4))]
        [(2, 6, 8), (2, 4), (6, 3)]
    """
    import torch

    text_ids = torch.zeros(t5_hidden.shape[1], 3, device=clip_pooled.device, dtype=clip_pooled.dtype)
    return t5_hidden, clip_pooled, text_ids


def encode_mmdit(
    cond: Any, prompts: list[list[str]], negatives: list[list[str]] | None, *, settings: EncodeSettings,
    negative_settings: EncodeSettings, repeats: int, max_sequence_length: int,
) -> Conditioning:
    """One ``encode`` call for SD3 / Flux: ``prompts`` per encoder (CLIP ones, then T5), ``negatives``
    the same or None (nothing encoded for them). Runs under the conditioner's lock."""
    import torch

    from .types import Conditioning

    family = cond.family
    n_clip = len(cond.encoders)
    prompts, negatives = (_t5_without_embeddings(cond, texts, settings) for texts in (prompts, negatives))
    truncated: list[tuple[str, str]] = []
    t5_truncated: list[tuple[str, str]] = []
    sides = [(prompts, settings)] + ([(negatives, negative_settings)] if negatives is not None else [])
    same = len(sides) == 1 or negative_settings == settings  # then each encoder runs once over both sides
    t5_key = ("t5", settings.syntax, settings.weighting, max_sequence_length)

    def t5_side(texts: list[str]) -> dict | None:
        if cond.t5 is None:
            return None
        structure = get_syntax(settings.syntax).structured
        if structure is not None:  # compel's math on T5 too, as CompelForFlux (see compel_math)
            return encode_combined_t5(
                cond.t5.model, cond.t5.tokenizer, texts, structure=structure, max_length=max_sequence_length,
                device=cond.device, truncated=t5_truncated, cache=None if cond.trainable else cond._cache,
                cache_key=t5_key,
            )  # fmt: skip
        return encode_t5_texts(
            cond.t5.model, cond.t5.tokenizer, texts, syntax=settings.syntax, weighting=settings.weighting,
            max_length=max_sequence_length, device=cond.device, truncated=t5_truncated,
            cache=None if cond.trainable else cond._cache, cache_key=t5_key,
        )  # fmt: skip

    with cond._lock, cond._grad_context():
        if same:
            clip = [cond._encode_texts(i, [t for texts, _ in sides for t in texts[i]], settings, truncated)
                    for i in range(n_clip)]  # fmt: skip
            t5 = t5_side([t for texts, _ in sides for t in texts[n_clip]])
            encoded_clip, encoded_t5 = [clip] * len(sides), [t5] * len(sides)
        else:  # the negatives' settings differ only in clip_skip: T5 is shared
            encoded_clip = [[cond._encode_texts(i, texts[i], side_settings, truncated) for i in range(n_clip)]
                            for texts, side_settings in sides]  # fmt: skip
            t5 = t5_side([t for texts, _ in sides for t in texts[n_clip]])
            encoded_t5 = [t5] * len(sides)
    for text, dropped in dict.fromkeys(truncated):
        warn_truncated(text, dropped, limit=77, what="encoded", hint="pass truncate=False to keep it")
    for text, dropped in dict.fromkeys(t5_truncated):
        warn_truncated(text, dropped, limit=max_sequence_length, what="encoded by T5",
                       hint="pass a larger max_sequence_length to keep it")  # fmt: skip
    n_chunks = max(len(entries[text][2]) for (texts, _), side in zip(sides, encoded_clip, strict=True)
                   for i, entries in enumerate(side) for text in texts[i])  # fmt: skip
    t5_length = max((len(side[text][1]) for (texts, _), side in zip(sides, encoded_t5, strict=True)
                     if side is not None for text in texts[n_clip]), default=max_sequence_length)  # fmt: skip
    out = []
    for (texts, _), clip_side, t5_side in zip(sides, encoded_clip, encoded_t5, strict=True):
        hidden, _, ids = assemble_texts([(texts[i], clip_side[i]) for i in range(n_clip)], n_chunks, repeats)
        pooled = [torch.stack([clip_side[i][text][1] for text in texts[i]]).repeat_interleave(repeats, dim=0)
                  for i in range(n_clip)]  # fmt: skip
        if t5_side is None:  # SD3 without T5: diffusers' zeros
            t5_hidden = hidden.new_zeros(hidden.shape[0], max_sequence_length, cond.t5_width)
            t5_ids = torch.full((hidden.shape[0], max_sequence_length), -1, dtype=torch.long, device=hidden.device)
            t5_rows = ()
        else:
            t5_hidden, t5_ids = (torch.stack(rows).repeat_interleave(repeats, dim=0)
                                 for rows in zip(*(_t5_padded(t5_side, text, t5_length) for text in texts[n_clip])))
            t5_rows = tuple(t5_side[text][2] for text in texts[n_clip] for _ in range(repeats))
        chunks = tuple(clip_side[0][text][3] for text in texts[0] for _ in range(repeats))
        if family == "sd3":
            embeds, pooled_all = sd3_tensors(hidden, pooled, t5_hidden)
            text_ids = None
        else:
            embeds, pooled_all, text_ids = flux_tensors(t5_hidden.to(pooled[0].dtype), pooled[0])
        out.append((embeds, pooled_all, ids, t5_ids, chunks, t5_rows, text_ids))
    negative = out[1] if len(out) > 1 else (None,) * 7
    return Conditioning(
        prompt_embeds=out[0][0], pooled_prompt_embeds=out[0][1],
        negative_prompt_embeds=negative[0], negative_pooled_prompt_embeds=negative[1],
        prompt_ids=out[0][2], negative_prompt_ids=negative[2], pipeline_takes_pooled=True,
        prompt_chunks=out[0][4], negative_chunks=negative[4] or (),
        t5_ids=out[0][3], negative_t5_ids=negative[3], text_ids=out[0][6],
        t5_tokens=out[0][5], negative_t5_tokens=negative[5] or (),
    )  # fmt: skip


def _t5_without_embeddings(
    cond: Any, texts: list[list[str]] | None, settings: EncodeSettings
) -> list[list[str]] | None:
    """``texts`` with T5's (the last list) free of ComfyUI ``embedding:name`` mentions of the CLIP parts' textual
    inversions (T5 never gets one; ComfyUI drops them there); other syntaxes leave names as text."""
    from .textual_inversion import expand_textual_inversion

    known = {name: 0 for added in cond._embeddings for name in added}
    if texts is None or not known:
        return texts
    return [*texts[:-1], [expand_textual_inversion(text, known, syntax=settings.syntax) for text in texts[-1]]]


def _t5_padded(entries: dict, text: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One text's T5 ``(hidden (length, H), ids (length,))``: a compel ``.and()`` makes T5's part longer
    (one window per part), so shorter ones get the empty text's windows after them, as compel pads."""
    import torch

    hidden, ids = entries[text][:2]
    if len(ids) < length:
        extra = (length - len(ids)) // len(entries[None][1])
        hidden = torch.cat([hidden, entries[None][0].repeat(extra, 1)])
        ids = torch.cat([ids, entries[None][1].repeat(extra)])
    return hidden, ids


def mmdit_negative_settings(settings: EncodeSettings, clip_skip_negative: str) -> EncodeSettings:
    """The negatives' settings: ``clip_skip`` dropped for ``"diffusers"`` (SD3's pipeline ignores it there)."""
    return replace(settings, clip_skip=None) if clip_skip_negative == "diffusers" else settings
