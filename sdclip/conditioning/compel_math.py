"""compel's embedding math for prompts that combine encodings: weighting, downweighting by masking,
blends and ``.and()`` (``damian0815/compel``, ``embeddings_provider.py`` and ``compel.py``).

Per text encoder (compel's multi-encoder provider does each encoder on its own and concatenates, and
every step here is linear per encoder, so per encoder is the same):

* a part's runs are chunked as A1111 chunks (one 77-token window when truncating, which is compel's
  layout; longer prompts split as A1111 splits them, not at compel's sentence ends);
* ``base``: every token at weight ``w != 1`` moves away from the empty prompt's encoding,
  ``empty + (z - empty) * w`` (compel's upweighting; ComfyUI's formula, :func:`~.weighting.apply_weights`);
* each run at weight ``w < 1`` also gets an encoding with its tokens masked out of attention (compel
  2.x's default ``DownweightMode.MASK``), weighted the same way, and the part is the normalized sum
  ``(base + sum_r tan((1 - max(w_r, 1e-5)) * pi / 2) * masked_r) / (1 + sum_r tan(...))``;
* a blend is ``sum_i w_i * part_i`` (weights divided by their sum unless ``no_normalize``), parts padded
  to a common length with the empty chunk's encoding;
* ``.and()`` concatenates the parts on the token axis, each first moved away from the empty prompt's
  encoding by its weight when that weight is not 1.

Pooled (SDXL): compel encodes the raw prompt string, syntax characters and all, for the pooled vector
(compel#96). sdclip takes it from the first part's unweighted tokens (for a blend, the same blend of its
parts' pooled vectors), as diffusers would compute it for the plain text.

The model call is the only family-specific step: :func:`hidden_states` for CLIP; a new encoder family
(T5) needs only its own version of that function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import PromptError
from ..prompts.chunking import ChunkedPrompt, chunk_items, empty_chunk
from ..prompts.parsed import Blend, CombinedPrompt, ParsedPrompt, Run
from .cached import split_cached
from .weighting import apply_weights

if TYPE_CHECKING:
    import torch

    from .settings import EncodeSettings
    from .types import EncoderSpec

__all__ = ["encode_combined_texts", "hidden_states"]

_EPSILON = 1e-5  # compel's floor for a downweighted run's weight (tan(pi / 2) is infinite)


def hidden_states(model: Any, spec: EncoderSpec, ids: torch.Tensor, mask: torch.Tensor | None, *,
                  clip_skip: int | None, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A CLIP text model's ``(hidden (N, T, H), pooled (N, D))`` for ``ids (N, T)`` with an attention
    ``mask (N, T)`` (1 = attend; None = all), taken as :func:`~.core.run_encoder` takes them
    (``clip_skip``, the family's layer and final norm; pooled at the first EOS, projected when the model
    has a projection).

    Example:
        >>> import torch
        >>> from sdclip.conditioning.types import EncoderSpec
        >>> ids = torch.tensor([cond.tokenizer("a cat", padding="max_length").input_ids])
        >>> hidden, pooled = hidden_states(cond.text_encoder, EncoderSpec(), ids, torch.ones_like(ids), clip_skip=None,
        ...                                eos_token_id=49407)
        >>> hidden.shape, pooled.shape
        (torch.Size([1, 77, 128]), torch.Size([1, 128]))
    """
    import torch

    skip = clip_skip or 0
    output = model(ids, attention_mask=mask, output_hidden_states=True)
    last = output.last_hidden_state
    if skip == 0 and spec.skip_offset == 1 and spec.final_norm:
        hidden = last
    else:
        hidden = output.hidden_states[-(skip + spec.skip_offset)]
        if spec.final_norm:
            hidden = getattr(model, "text_model", model).final_layer_norm(hidden)
    eos_position = (ids == eos_token_id).int().argmax(dim=-1)  # (N,) the first EOS: padding may be EOS too
    pooled = last[torch.arange(last.shape[0], device=last.device), eos_position]
    if hasattr(model, "text_projection"):
        pooled = model.text_projection(pooled)
    return hidden, pooled


class _Encoder:
    """One text encoder's model, tokenizer and options, with its empty chunk encoded once."""

    def __init__(self, model: Any, tokenizer: Any, spec: EncoderSpec, settings: EncodeSettings) -> None:
        import torch

        self.model, self.tokenizer, self.spec, self.settings = model, tokenizer, spec, settings
        self.empty = empty_chunk(tokenizer)
        ids = torch.tensor([self.empty.ids], device=model.device)
        self.empty_hidden, self.empty_pooled = self.run(ids, None)  # (1, T, H), (1, D)

    def run(self, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return hidden_states(self.model, self.spec, ids, mask, clip_skip=self.settings.clip_skip,
                             eos_token_id=self.tokenizer.eos_token_id)

    def part(self, parsed: ParsedPrompt) -> tuple[torch.Tensor, torch.Tensor, ChunkedPrompt]:
        """One part's ``(hidden (k, T, H), pooled (D,), chunks)`` with compel's weighting and masking."""
        import torch

        runs = [item for item in parsed.items if isinstance(item, Run)]
        chunked = chunk_items(tuple(runs), self.tokenizer, truncate=self.settings.truncate)
        device = self.model.device
        ids = torch.tensor([chunk.ids for chunk in chunked.chunks], device=device)  # (k, T)
        weights = torch.tensor([chunk.weights for chunk in chunked.chunks], dtype=torch.float32, device=device)
        # where each run's tokens sit: prompt tokens fill chunks in order, after each chunk's BOS
        slots = [(c, 1 + p) for c, chunk in enumerate(chunked.chunks) for p in range(chunk.n_tokens)]
        counts = [len(t) for t in self.tokenizer([run.text for run in runs], add_special_tokens=False,
                                                 truncation=False, verbose=False)["input_ids"]]  # fmt: skip
        masks = [torch.ones_like(ids)]
        lerp = [1.0]
        start = 0
        for run, count in zip(runs, counts, strict=True):
            mine = slots[start : start + count]
            start += count
            if run.weight < 1 and mine:
                mask = torch.ones_like(ids)
                for c, p in mine:
                    mask[c, p] = 0
                masks.append(mask)
                lerp.append(math.tan((1.0 - max(_EPSILON, run.weight)) * math.pi / 2))
        rows = ids.repeat(len(masks), 1)  # (E·k, T): the base, then one masked copy per downweighted run
        hidden, _ = self.run(rows, torch.cat(masks))
        if (weights != 1).any():
            hidden = apply_weights(hidden, weights.repeat(len(masks), 1), mode="comfy", empty_hidden=self.empty_hidden)
        hidden = hidden.unflatten(0, (len(masks), len(ids)))  # (E, k, T, H)
        if len(masks) > 1:  # compel's apply_embedding_weights(normalize=True)
            factors = torch.tensor(lerp, dtype=hidden.dtype, device=device)
            factors = factors / torch.sum(factors)
            hidden = torch.sum(hidden * factors.reshape(-1, 1, 1, 1), dim=0)
        else:
            hidden = hidden[0]
        _, pooled = self.run(ids[:1], None)  # unweighted, unmasked: as diffusers
        return hidden, pooled[0], chunked

    def padded(self, hidden: torch.Tensor, count: int) -> torch.Tensor:
        import torch

        extra = count - len(hidden)
        return hidden if extra <= 0 else torch.cat([hidden, self.empty_hidden.expand(extra, -1, -1)])

    def combined(self, prompt: CombinedPrompt) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ChunkedPrompt]:
        """``(hidden (k, T, H), pooled (D,), ids (k, T), chunks)`` of a whole combined prompt."""
        import torch

        hiddens, pooled, chunks = [], None, []
        for part, weight in zip(prompt.parts, prompt.weights, strict=True):
            if isinstance(part, Blend):
                encoded = [self.part(sub) for sub in part.parts]
                longest = max(len(h) for h, _, _ in encoded)
                factors = torch.tensor(part.weights, dtype=self.empty_hidden.dtype, device=self.model.device)
                if part.normalize:
                    factors = factors / torch.sum(factors)
                stacked = torch.stack([self.padded(h, longest) for h, _, _ in encoded])  # (P, k, T, H)
                hidden = torch.sum(stacked * factors.reshape(-1, 1, 1, 1), dim=0)
                part_pooled = torch.sum(torch.stack([p for _, p, _ in encoded]) * factors.reshape(-1, 1), dim=0)
                first = encoded[0][2].chunks
                part_chunks = first + (self.empty,) * (longest - len(first))
            else:
                hidden, part_pooled, chunked = self.part(part)
                part_chunks = chunked.chunks
            if weight != 1:  # compel: empty + (c - empty) * w, the empty prompt padded to c's length
                hidden = self.empty_hidden + (hidden - self.empty_hidden) * weight
            hiddens.append(hidden)
            chunks += part_chunks
            pooled = part_pooled if pooled is None else pooled
        ids = torch.tensor([chunk.ids for chunk in chunks], device=self.model.device)
        return torch.cat(hiddens), pooled, ids, ChunkedPrompt(tuple(chunks), None)


def encode_combined_texts(
    model: Any,
    tokenizer: Any,
    spec: EncoderSpec,
    texts: Sequence[str],
    settings: EncodeSettings,
    *,
    structure: Any,
    truncated: list[tuple[str, str]] | None = None,
    cache: Any = None,
    cache_key: tuple = (),
) -> dict[str | None, tuple]:
    """:func:`~.core.encode_texts` for a syntax with ``structured`` prompts: the same result per text,
    ``(hidden (k, T, H), pooled (D,), ids (k, T), ChunkedPrompt)``, plus the empty chunk under ``None``.

    Raises:
        PromptError: a weighting other than compel's was asked for, or a weight makes the result non-finite.

    Example:
        >>> from sdclip.conditioning.settings import resolve_settings
        >>> from sdclip.conditioning.types import EncoderSpec
        >>> from sdclip.prompts.compel import parse_compel
        >>> out = encode_combined_texts(cond.text_encoder, cond.tokenizer, EncoderSpec(), ['("a", "b").and()'],
        ...                             resolve_settings(None, "compel", True, None), structure=parse_compel)
        >>> tuple(out['("a", "b").and()'][0].shape)
        (2, 77, 128)
    """
    import torch

    if settings.weighting != "comfy":
        raise PromptError(f"weighting: syntax {settings.syntax!r} uses compel's own weighting; pass weighting=None, "
                          f"got {settings.weighting!r}")
    results, todo = split_cached(cache, [*texts, None], key=lambda text: (*cache_key, text, settings))
    if not todo:
        return results
    encoder = _Encoder(model, tokenizer, spec, settings)
    for text in todo:
        if text is None:
            entry = (encoder.empty_hidden.clone(), encoder.empty_pooled[0].clone(),
                     torch.tensor([encoder.empty.ids], device=model.device), ChunkedPrompt((encoder.empty,), None))
        else:
            hidden, pooled, ids, chunked = encoder.combined(structure(text))
            if not (torch.isfinite(hidden).all() and torch.isfinite(pooled).all()):
                raise PromptError(f"prompt {text[:80]!r}: a weight makes the conditioning infinite or NaN in "
                                  f"{hidden.dtype}; use weights of a sensible size")
            entry = (hidden, pooled, ids, chunked)
            if truncated is not None:
                truncated += [(text, t) for t in _dropped(structure(text), tokenizer, settings)]
        results[text] = entry
        if cache is not None:
            cache.put((*cache_key, text, settings), entry)
    return results


def _dropped(prompt: CombinedPrompt, tokenizer: Any, settings: EncodeSettings) -> list[str]:
    """The text truncation cut from each part (for the truncation warning)."""
    if not settings.truncate:
        return []
    parts = [sub for part in prompt.parts for sub in (part.parts if isinstance(part, Blend) else (part,))]
    cut = [chunk_items(tuple(i for i in p.items if isinstance(i, Run)), tokenizer).truncated_text for p in parts]
    return [text for text in cut if text]
