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

The family-specific steps are the layout of a part's tokens and the model call: ``_Encoder`` for CLIP
(:func:`hidden_states`), ``_T5Encoder`` for T5 in SD3 / Flux (:func:`encode_combined_t5`), which follows
``CompelForFlux``: one ``max_length`` window per part (no start token; ``</s>`` then ``<pad>``), the same
weighting, masking and blends anchored on the empty text's encoding, ``.and()`` concatenating windows.

Textual inversion: a multi-vector name ``tok`` (added tokens ``tok``, ``tok_1`` ...) expands in each run
as compel's ``DiffusersTextualInversionManager`` expands it (diffusers' ``maybe_convert_prompt``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import PromptError
from ..prompts.chunking import ChunkedPrompt, chunk_items, empty_chunk
from ..prompts.parsed import Blend, CombinedPrompt, ParsedPrompt, Run
from .cached import split_cached
from .t5 import empty_t5_ids, t5_window
from .textual_inversion import expand_textual_inversion
from .weighting import apply_weights

if TYPE_CHECKING:
    import torch

    from .settings import EncodeSettings
    from .types import EncoderSpec

__all__ = ["encode_combined_t5", "encode_combined_texts", "hidden_states", "multi_vector_names"]

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
    """One CLIP encoder's model, tokenizer and options, with its empty chunk encoded once."""

    def __init__(self, model: Any, tokenizer: Any, spec: EncoderSpec, settings: EncodeSettings) -> None:
        import torch

        self.model, self.tokenizer, self.spec, self.settings = model, tokenizer, spec, settings
        self.empty = empty_chunk(tokenizer)
        self.empty_ids = torch.tensor([self.empty.ids], device=model.device)  # (1, T)
        self.empty_hidden, self.empty_pooled = self.run(self.empty_ids, None)  # (1, T, H), (1, D)
        self.multi_vector = multi_vector_names(tokenizer)

    def run(self, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return hidden_states(self.model, self.spec, ids, mask, clip_skip=self.settings.clip_skip,
                             eos_token_id=self.tokenizer.eos_token_id)

    def layout(self, runs: list[Run]) -> tuple[torch.Tensor, torch.Tensor, list, list[int], list]:
        """``(ids (k, T), weights (k, T), (row, position) of each prompt token, tokens per run, chunks)``."""
        import torch

        if self.multi_vector:  # compel's DiffusersTextualInversionManager: tok -> tok tok_1 ... per fragment
            runs = [Run(expand_textual_inversion(run.text, self.multi_vector), run.weight) for run in runs]
        chunked = chunk_items(tuple(runs), self.tokenizer, truncate=self.settings.truncate)
        device = self.model.device
        ids = torch.tensor([chunk.ids for chunk in chunked.chunks], device=device)  # (k, T)
        weights = torch.tensor([chunk.weights for chunk in chunked.chunks], dtype=torch.float32, device=device)
        # where each run's tokens sit: prompt tokens fill chunks in order, after each chunk's BOS
        slots = [(c, 1 + p) for c, chunk in enumerate(chunked.chunks) for p in range(chunk.n_tokens)]
        counts = [len(t) for t in self.tokenizer([run.text for run in runs], add_special_tokens=False,
                                                 truncation=False, verbose=False)["input_ids"]]  # fmt: skip
        return ids, weights, slots, counts, list(chunked.chunks)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor | None:
        return self.run(ids[:1], None)[1][0]  # unweighted, unmasked: as diffusers

    def part(self, parsed: ParsedPrompt) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, list]:
        """One part's ``(hidden (k, T, H), pooled (D,) or None, ids (k, T), chunks)`` with compel's
        weighting and masking."""
        import torch

        runs = [item for item in parsed.items if isinstance(item, Run)]
        ids, weights, slots, counts, pieces = self.layout(runs)
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
            factors = torch.tensor(lerp, dtype=hidden.dtype, device=hidden.device)
            factors = factors / torch.sum(factors)
            hidden = torch.sum(hidden * factors.reshape(-1, 1, 1, 1), dim=0)
        else:
            hidden = hidden[0]
        return hidden, self.pooled(ids), ids, pieces

    def padded(self, tensor: torch.Tensor, count: int, empty: torch.Tensor) -> torch.Tensor:
        import torch

        extra = count - len(tensor)
        return tensor if extra <= 0 else torch.cat([tensor, empty.expand(extra, *empty.shape[1:])])

    def combined(self, prompt: CombinedPrompt) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, list]:
        """``(hidden (k, T, H), pooled (D,) or None, ids (k, T), chunks)`` of a whole combined prompt."""
        import torch

        hiddens, pooled, ids, chunks = [], None, [], []
        for part, weight in zip(prompt.parts, prompt.weights, strict=True):
            if isinstance(part, Blend):
                encoded = [self.part(sub) for sub in part.parts]
                longest = max(len(h) for h, _, _, _ in encoded)
                factors = torch.tensor(part.weights, dtype=self.empty_hidden.dtype, device=self.empty_hidden.device)
                if part.normalize:
                    factors = factors / torch.sum(factors)
                stacked = torch.stack([self.padded(h, longest, self.empty_hidden) for h, _, _, _ in encoded])
                hidden = torch.sum(stacked * factors.reshape(-1, 1, 1, 1), dim=0)  # (P, k, T, H) -> (k, T, H)
                part_pooled = None if encoded[0][1] is None else torch.sum(
                    torch.stack([p for _, p, _, _ in encoded]) * factors.reshape(-1, 1), dim=0)
                part_ids = self.padded(encoded[0][2], longest, self.empty_ids)  # the first prompt's, as compel
                part_chunks = encoded[0][3] + [self.empty] * (longest - len(encoded[0][3]))
            else:
                hidden, part_pooled, part_ids, part_chunks = self.part(part)
            if weight != 1:  # compel: empty + (c - empty) * w, the empty prompt padded to c's length
                hidden = self.empty_hidden + (hidden - self.empty_hidden) * weight
            hiddens.append(hidden)
            ids.append(part_ids)
            chunks += part_chunks
            pooled = part_pooled if pooled is None else pooled
        return torch.cat(hiddens), pooled, torch.cat(ids), chunks


class _T5Encoder(_Encoder):
    """T5 as compel's ``EmbeddingsProvider`` reads it (``CompelForFlux``): one ``max_length`` window per
    part, no start token, the text's tokens then ``</s>`` and ``<pad>``, last hidden state."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int) -> None:
        import torch

        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        self.empty, self.multi_vector, self.cut = None, {}, []
        self.empty_ids = torch.tensor([empty_t5_ids(tokenizer, max_length)], device=model.device)  # (1, L)
        self.empty_hidden, _ = self.run(self.empty_ids, None)  # (1, L, H)

    def run(self, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state, None

    def layout(self, runs: list[Run]) -> tuple[torch.Tensor, torch.Tensor, list, list[int], list]:
        import torch

        window = t5_window([(run.text, run.weight) for run in runs], self.tokenizer, self.max_length)
        if window.truncated_text:  # cut as diffusers and compel cut (truncate_long_prompts=True)
            self.cut.append(window.truncated_text)
        counts = [len(self.tokenizer(run.text, add_special_tokens=False).input_ids) if run.text else 0 for run in runs]
        device = self.model.device
        return (torch.tensor([window.ids], device=device), torch.tensor([window.weights], device=device),
                [(0, p) for p in range(window.length - 1)], counts, [None])  # fmt: skip

    def pooled(self, ids: torch.Tensor) -> None:
        return None


def multi_vector_names(tokenizer: Any) -> dict[str, int]:
    """Added tokens ``tok`` followed by ``tok_1`` ... in ``tokenizer``: ``{tok: vector count}``, the rule
    of diffusers' ``maybe_convert_prompt`` (which compel's ``DiffusersTextualInversionManager`` calls).

    Example:
        >>> from sdclip.models.tokenizer import copy_tokenizer
        >>> mine = copy_tokenizer(cond.tokenizer)
        >>> _ = mine.add_tokens(["<style>", "<style>_1", "<style>_2", "<one>"])
        >>> multi_vector_names(mine)
        {'<style>': 3}
    """
    added = tokenizer.get_added_vocab()
    names = {}
    for token in added:
        count = 1
        while f"{token}_{count}" in added:
            count += 1
        if count > 1:
            names[token] = count
    return names


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
        raise PromptError(f"weighting: syntax {settings.syntax!r} combines encodings with compel's math, which weights "
                          f"as 'comfy', got {settings.weighting!r} (pass weighting=None for the syntax's own; a "
                          f"structured syntax is registered with weighting='comfy')")
    results, todo = split_cached(cache, [*texts, None], key=lambda text: (*cache_key, text, settings))
    if not todo:
        return results
    encoder = _Encoder(model, tokenizer, spec, settings)
    for text in todo:
        if text is None:
            entry = (encoder.empty_hidden.clone(), encoder.empty_pooled[0].clone(), encoder.empty_ids.clone(),
                     ChunkedPrompt((encoder.empty,), None))
        else:
            hidden, pooled, ids, chunks = encoder.combined(structure(text))
            _check_finite(text, hidden, pooled)
            entry = (hidden, pooled, ids, ChunkedPrompt(tuple(chunks), None))
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


def _check_finite(text: str, hidden: torch.Tensor, pooled: torch.Tensor | None) -> None:
    import torch

    if not (torch.isfinite(hidden).all() and (pooled is None or torch.isfinite(pooled).all())):
        raise PromptError(f"prompt {text[:80]!r}: a weight makes the conditioning infinite or NaN in "
                          f"{hidden.dtype}; use weights of a sensible size")


def encode_combined_t5(
    model: Any, tokenizer: Any, texts: Sequence[str], *, structure: Any, max_length: int, device: Any,
    truncated: list[tuple[str, str]] | None = None, cache: Any = None, cache_key: tuple = (),
) -> dict[str | None, tuple]:
    """:func:`~.t5.encode_t5_texts` for a syntax with ``structured`` prompts, with compel's math on T5 as
    ``CompelForFlux`` applies it: per text ``(hidden (m·L, H), ids (m·L,), T5Tokens)`` on ``device``, ``m``
    the number of ``.and()`` parts (each a ``max_length`` window, concatenated as compel concatenates),
    plus the empty text (``</s>`` then ``<pad>``: compel's padding and weighting anchor) under ``None``.
    ``T5Tokens`` is what inspection shows (the syntax's ``parse``).

    Example:
        >>> from sdclip.prompts.compel import parse_compel
        >>> from sdclip.testing_mmdit import tiny_t5_encoder, tiny_t5_tokenizer
        >>> tokenizer = tiny_t5_tokenizer()
        >>> out = encode_combined_t5(tiny_t5_encoder(vocab_size=len(tokenizer)), tokenizer, ['("a cat", "a").and()'],
        ...                          structure=parse_compel, max_length=8, device="cpu")
        >>> out['("a cat", "a").and()'][1].tolist()
        [4, 12, 1, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0]
    """
    from .t5 import combined_t5_tokens

    results, todo = split_cached(cache, [*texts, None], key=lambda text: (*cache_key, text))
    if not todo:
        return results
    encoder = _T5Encoder(model, tokenizer, max_length)
    for text in todo:
        if text is None:
            entry = (encoder.empty_hidden[0].to(device), encoder.empty_ids[0].to(device), None)
        else:
            encoder.cut = []
            combined = structure(text)
            hidden, _, ids, _ = encoder.combined(combined)  # (m, L, H), (m, L)
            _check_finite(text, hidden, None)
            shown = combined_t5_tokens(combined, tokenizer, max_length)
            entry = (hidden.flatten(0, 1).to(device), ids.flatten().to(device), shown)
            if truncated is not None:
                truncated += [(text, cut) for cut in encoder.cut]
        results[text] = entry
        if cache is not None:
            cache.put((*cache_key, text), entry)
    return results
