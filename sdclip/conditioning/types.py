"""What text conditioning returns, and the options that shape it.

``Conditioning`` is what ``TextConditioner.encode`` returns, with the token chunks it was built from;
``EncoderSpec`` says how one text encoder's hidden states become conditioning (SD 1.x/2.x vs SDXL).
``EncodeSettings`` (the options that key the cache) lives in :mod:`.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from ..models.families import SDXL_SPEC, EncoderSpec  # noqa: F401  (re-exported: defined with the families)
from ..prompts.chunking import ChunkedPrompt
from .settings import EncodeSettings, resolve_settings  # noqa: F401  (kept importable from here)
from .t5 import T5Tokens

if TYPE_CHECKING:
    import torch


@dataclass
class Conditioning:
    """What a diffusers pipeline takes instead of prompt text.

    Attributes:
        prompt_embeds: (B·n, 77·k, hidden) per-token hidden states, k = number of 77-token chunks.
        pooled_prompt_embeds: (B·n, dim) pooled embedding (EOS token, projected when the model has a
            text projection).
        negative_prompt_embeds: (B·n, 77·k, hidden), same k as the prompt.
        negative_pooled_prompt_embeds: (B·n, dim).
        prompt_ids: (B·n, 77·k) int64 token ids fed to the (first) text encoder.
        negative_prompt_ids: (B·n, 77·k) int64; all -1 when the negative conditioning is zeros
            rather than an encoded prompt (SDXL's ``force_zeros_for_empty_prompt``).
        pipeline_takes_pooled: whether the pipeline's ``__call__`` takes the pooled pair (SDXL does,
            SD 1.x/2.x do not).
        prompt_chunks: per row (B·n), the ``ChunkedPrompt`` the first encoder's rows were built from:
            chunk ``c``'s token at ``p`` is row ``c * 77 + p`` of ``prompt_embeds``; rows past its
            chunks are padding (the empty chunk). Its ``truncated_text`` is what was cut.
        negative_chunks: the same for the negatives; None in rows that are zeros.
        t5_ids, negative_t5_ids: SD3 / Flux: (B·n, L) int64 ids fed to T5 (-1 when SD3 has no T5).
        text_ids: Flux: ``encode_prompt``'s (L, 3) zeros.
        t5_tokens, negative_t5_tokens: SD3 / Flux: per row, the ``T5Tokens`` (ids, weights, truncation).

    With ``negative_prompt=False`` (and for Flux without a negative prompt) nothing is encoded for the
    negatives: their fields are None and ``pipeline_kwargs`` leaves them out.

    Example:
        >>> out = cond.encode("a (cat:1.5)", syntax="a1111")
        >>> chunk = out.prompt_chunks[0].chunks[0]
        >>> chunk.ids[:4] == tuple(out.prompt_ids[0, :4].tolist()), chunk.weights[:4]
        (True, (1.0, 1.0, 1.5, 1.0))

    For SDXL ``hidden`` is 768 + 1280 (both encoders' hidden states side by side) and ``dim`` 1280
    (the second encoder's projected ``text_embeds``).
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None
    negative_pooled_prompt_embeds: torch.Tensor | None
    prompt_ids: torch.Tensor
    negative_prompt_ids: torch.Tensor | None
    pipeline_takes_pooled: bool = field(default=False, repr=False)
    prompt_chunks: tuple[ChunkedPrompt, ...] = field(default=(), repr=False, compare=False)
    negative_chunks: tuple[ChunkedPrompt | None, ...] = field(default=(), repr=False, compare=False)
    t5_ids: torch.Tensor | None = None
    negative_t5_ids: torch.Tensor | None = None
    text_ids: torch.Tensor | None = None
    t5_tokens: tuple[T5Tokens, ...] = field(default=(), repr=False, compare=False)
    negative_t5_tokens: tuple[T5Tokens, ...] = field(default=(), repr=False, compare=False)

    def pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments to pass to a diffusers pipeline call.

        Example:
            >>> sorted(cond.encode("a cat").pipeline_kwargs())
            ['negative_prompt_embeds', 'prompt_embeds']
            >>> images = pipe(**cond.encode("a cat").pipeline_kwargs(), num_inference_steps=2, output_type="np").images
        """
        kwargs = {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}
        if self.pipeline_takes_pooled:
            kwargs["pooled_prompt_embeds"] = self.pooled_prompt_embeds
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        return {name: value for name, value in kwargs.items() if value is not None}

    def tensors(self) -> dict[str, torch.Tensor]:
        """All tensors by field name (for saving with safetensors); fields that are None are left out."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name in _TENSOR_FIELDS and getattr(self, f.name) is not None}  # fmt: skip


_TENSOR_FIELDS = (
    "prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds", "negative_pooled_prompt_embeds",
    "prompt_ids", "negative_prompt_ids", "t5_ids", "negative_t5_ids", "text_ids",
)  # fmt: skip

