"""Prompt weights applied to CLIP hidden states: A1111's, ComfyUI's, or a plain multiply.

Pure functions on tensors. The weights come from :mod:`sdclip.prompts.chunking` (one per token, 1.0 at BOS, EOS
and padding); the hidden states are the text encoder's output for those same chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sdclip.errors import PromptError

__all__ = ["MODES", "apply_weights"]

MODES: tuple[str, ...] = ("a1111", "comfy", "multiply")
"""The weighting modes :func:`apply_weights` understands."""


def apply_weights(hidden: Tensor, weights: Tensor, *, mode: str, empty_hidden: Tensor | None = None) -> Tensor:
    """Scale each token's hidden state by its prompt weight.

    ``"a1111"`` is A1111's "Original" emphasis: multiply, then rescale so the mean over tokens and
    channels equals the unweighted mean. sdclip takes that mean per batch row (one prompt's chunk);
    A1111 takes it over its whole batch of chunks, so there a prompt's result depends on what else is in
    the batch. At batch size 1, which is how A1111 usually encodes, the two are the same. If the weighted
    mean is exactly 0 (A1111 would divide by it and give ``nan``) the row is only multiplied.

    ``"comfy"`` is ComfyUI's ``encode_token_weights``: ``(hidden - empty_hidden) * w + empty_hidden`` at
    every token whose weight is not 1.0, with ``empty_hidden`` the encoding of the empty prompt's chunk
    (:func:`sdclip.prompts.chunking.empty_chunk`). Tokens at weight 1.0 come back bit for bit.

    ``"multiply"`` is ``hidden * w`` (A1111's "No norm").

    The arithmetic runs in float32, or float64 for float64 input, so fp16/bf16 hidden states neither
    overflow in the means nor lose the small differences ``"comfy"`` scales; the result is cast back.

    Args:
        hidden: (B, T, H) hidden states, T usually 77; any floating dtype.
        weights: (B, T) weight per token.
        mode: one of :data:`MODES`.
        empty_hidden: (1, T, H) or (B, T, H) hidden states of the empty prompt; needed for ``"comfy"``.

    Returns:
        (B, T, H) weighted hidden states, in ``hidden``'s dtype and device.

    Raises:
        PromptError: unknown ``mode``, ``"comfy"`` without ``empty_hidden``, or shapes that do not fit.

    Example:
        >>> hidden = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])  # (1, 2, 2)
        >>> apply_weights(hidden, torch.tensor([[1.0, 2.0]]), mode="multiply")
        tensor([[[1., 3.],
                 [4., 4.]]])
        >>> apply_weights(hidden, torch.tensor([[1.0, 2.0]]), mode="a1111")  # mean 2 before and after
        tensor([[[0.6667, 2.0000],
                 [2.6667, 2.6667]]])
        >>> empty = torch.zeros(1, 2, 2)
        >>> apply_weights(hidden, torch.tensor([[1.0, 0.5]]), mode="comfy", empty_hidden=empty)
        tensor([[[1., 3.],
                 [1., 1.]]])
    """
    if mode not in MODES:
        raise PromptError(f"mode: expected one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if hidden.dim() != 3 or tuple(weights.shape) != tuple(hidden.shape[:2]):
        raise PromptError(
            f"weights: expected shape (B, T) = {tuple(hidden.shape[:2])} for hidden states (B, T, H), "
            f"got weights {tuple(weights.shape)} and hidden {tuple(hidden.shape)}"
        )
    compute = torch.promote_types(hidden.dtype, torch.float32)
    h = hidden.to(compute)  # (B, T, H)
    w = weights.to(device=hidden.device, dtype=compute).unsqueeze(-1)  # (B, T, 1)

    if mode == "multiply":
        return (h * w).to(hidden.dtype)

    if mode == "a1111":
        z = h * w
        original_mean = h.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        new_mean = z.mean(dim=(1, 2), keepdim=True)
        scale = torch.where(new_mean == 0, torch.ones_like(new_mean), original_mean / new_mean)
        return (z * scale).to(hidden.dtype)

    if empty_hidden is None:
        raise PromptError(
            "empty_hidden: mode 'comfy' needs the hidden states of the empty prompt's chunk, got None; "
            "encode sdclip.prompts.chunking.empty_chunk(tokenizer) and pass them"
        )
    if empty_hidden.dim() != 3 or empty_hidden.shape[0] not in (1, hidden.shape[0]) or empty_hidden.shape[1:] != hidden.shape[1:]:
        raise PromptError(
            f"empty_hidden: expected shape (1, T, H) or (B, T, H) with (B, T, H) = {tuple(hidden.shape)}, "
            f"got {tuple(empty_hidden.shape)}"
        )
    e = empty_hidden.to(device=hidden.device, dtype=compute)  # (1 or B, T, H)
    z = ((h - e) * w + e).to(hidden.dtype)
    return torch.where(w == 1.0, hidden, z)  # as ComfyUI, weight 1.0 leaves a token untouched
