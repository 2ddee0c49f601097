"""What text conditioning returns, and the options that shape it.

``Conditioning`` is what ``TextConditioner.encode`` returns; ``EncoderSpec`` says how one text
encoder's hidden states become conditioning (SD 1.x/2.x vs SDXL); ``EncodeSettings`` holds every
option besides the text that changes an encoding, and keys the conditioner's cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import PromptError
from ..models.families import SDXL_SPEC, EncoderSpec  # noqa: F401  (re-exported: defined with the families)
from ..prompts.syntaxes import get_syntax
from .weighting import MODES

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

    For SDXL ``hidden`` is 768 + 1280 (both encoders' hidden states side by side) and ``dim`` 1280
    (the second encoder's projected ``text_embeds``).
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor
    prompt_ids: torch.Tensor
    negative_prompt_ids: torch.Tensor
    pipeline_takes_pooled: bool = field(default=False, repr=False)

    def pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments to pass to a diffusers pipeline call.

        Example:
            >>> images = pipe(**cond.encode("a cat").pipeline_kwargs(), num_inference_steps=20)  # doctest: +SKIP
        """
        kwargs = {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}
        if self.pipeline_takes_pooled:
            kwargs["pooled_prompt_embeds"] = self.pooled_prompt_embeds
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        return kwargs

    def tensors(self) -> dict[str, torch.Tensor]:
        """All tensors by field name (for saving with safetensors)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pipeline_takes_pooled"}


@dataclass(frozen=True)
class EncodeSettings:
    """Everything besides the text that changes an encoding (and so keys the cache)."""

    clip_skip: int | None
    syntax: str = "plain"
    truncate: bool = True
    weighting: str | None = None  # resolved: None (no weights), "a1111", "comfy" or "multiply"


def resolve_settings(clip_skip: Any, syntax: Any, truncate: Any, weighting: Any) -> EncodeSettings:
    if clip_skip is not None and (not isinstance(clip_skip, int) or clip_skip < 0):
        raise PromptError(f"clip_skip: expected None or an integer >= 0, got {clip_skip!r}")
    default_weighting = get_syntax(syntax).weighting  # the one check of syntax=, and its own weighting
    if not isinstance(truncate, bool):
        raise PromptError(f"truncate: expected True or False, got {truncate!r}")
    if weighting is not None and weighting not in MODES:
        raise PromptError(f"weighting: expected None or one of {', '.join(map(repr, MODES))}, got {weighting!r}")
    return EncodeSettings(clip_skip, syntax, truncate, weighting or default_weighting)
