"""The encoder core: token chunks -> hidden states -> weighting -> padded, assembled batch tensors.

Plain functions on ``(model, spec, chunks ...)`` with no cache, lock or state, so each step can be
tested on its own against transformers' outputs; ``TextConditioner`` adds the cache, the options and
the textual-inversion vocabulary on top. Shapes: N chunks, T = 77 tokens per chunk, H hidden width,
D pooled width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ModelSourceError, PromptError
from ..prompts.chunking import ChunkedPrompt, empty_chunk
from ..prompts.syntaxes import get_syntax
from .cached import split_cached
from .weighting import apply_weights

if TYPE_CHECKING:
    import torch

    from ..prompts.chunking import TokenChunk
    from .settings import EncodeSettings
    from .types import Conditioning, EncoderSpec

__all__ = ["assemble", "assemble_texts", "build_conditioning", "encode_chunks", "encode_texts", "pad_chunks", "run_encoder"]


def run_encoder(
    model: Any, spec: EncoderSpec, ids: torch.Tensor, *, eos_token_id: int, clip_skip: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a CLIP text model on chunk ids: ``(hidden (N, T, H), pooled (N, D))``.

    ``hidden`` is ``hidden_states[-(clip_skip + spec.skip_offset)]``, through the final layer norm when
    ``spec.final_norm`` (the last hidden state itself when nothing is skipped). ``pooled`` is the final
    hidden state at each row's first EOS, projected when the model has a ``text_projection``.

    Example:
        >>> from sdclip.conditioning.types import EncoderSpec
        >>> import torch
        >>> ids = torch.tensor([cond.encoders[0].tokenizer("a cat", padding="max_length").input_ids])
        >>> hidden, pooled = run_encoder(cond.text_encoder, EncoderSpec(), ids, eos_token_id=49407)
        >>> hidden.shape, pooled.shape
        (torch.Size([1, 77, 128]), torch.Size([1, 128]))
    """
    import torch

    skip = clip_skip or 0
    output = model(ids, output_hidden_states=skip > 0 or spec.skip_offset > 1)
    last = output.last_hidden_state  # (N, T, H), after the final layer norm
    if skip == 0 and spec.skip_offset == 1 and spec.final_norm:
        hidden = last
    else:
        hidden = output.hidden_states[-(skip + spec.skip_offset)]
        if spec.final_norm:
            text_model = getattr(model, "text_model", model)  # transformers 5's CLIPTextModel is the text model
            hidden = text_model.final_layer_norm(hidden)
    eos_position = (ids == eos_token_id).int().argmax(dim=-1)  # (N,) first EOS: padding may also be EOS
    pooled = last[torch.arange(last.shape[0], device=last.device), eos_position]  # (N, H)
    if hasattr(model, "text_projection"):
        pooled = model.text_projection(pooled)  # (N, D)
    return hidden, pooled


def encode_chunks(
    model: Any,
    spec: EncoderSpec,
    chunks: Sequence[TokenChunk],
    *,
    eos_token_id: int,
    clip_skip: int | None = None,
    weighting: str | None = None,
    empty: TokenChunk | None = None,
    empty_hidden: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode chunks and apply their weights: ``(hidden (N, T, H), pooled (N, D), ids (N, T))``.

    Identical chunks run through the model once. Chunks whose weights are all 1 come back exactly as
    encoded. ``weighting="comfy"`` moves weighted tokens away from the empty chunk's encoding:
    ``empty_hidden`` (T, H) when known, else ``empty`` is encoded alongside. ``forward``
    (``ids (U, T) -> (hidden, pooled)``) replaces ``run_encoder`` for the model call, e.g.
    ``cuda_graphs.encoder_forward``; by default the model runs eagerly.

    Raises:
        PromptError: a weighted chunk is not finite in the model's dtype (a weight too large); the
            message names the chunk's text from ``names`` (one per chunk) and its largest weight.

    Example:
        >>> from sdclip.conditioning.types import EncoderSpec
        >>> from sdclip.prompts.chunking import chunk_prompt
        >>> chunks = chunk_prompt("a (cat:1.5)", cond.tokenizer, syntax="a1111").chunks
        >>> hidden, pooled, ids = encode_chunks(cond.text_encoder, EncoderSpec(), chunks, eos_token_id=49407,
        ...                                     weighting="a1111")
        >>> hidden.shape, ids[0, 2].item() == chunks[0].ids[2]
        (torch.Size([1, 77, 128]), True)
    """
    import torch

    device = model.device
    unique = {ids: row for row, ids in enumerate(dict.fromkeys(chunk.ids for chunk in chunks))}
    needs_empty = weighting == "comfy" and empty_hidden is None
    if needs_empty:
        if empty is None:
            raise PromptError("empty: weighting 'comfy' needs the empty chunk or its hidden states (empty_hidden)")
        unique.setdefault(empty.ids, len(unique))
    unique_ids = torch.tensor(list(unique), dtype=torch.long, device=device)  # (U, T)
    if forward is None:
        unique_hidden, unique_pooled = run_encoder(model, spec, unique_ids, eos_token_id=eos_token_id,
                                                   clip_skip=clip_skip)
    else:
        unique_hidden, unique_pooled = forward(unique_ids)
    if not (torch.isfinite(unique_hidden).all() and torch.isfinite(unique_pooled).all()):  # one reduction each
        bad = next(i for i, chunk in enumerate(chunks) if not torch.isfinite(unique_hidden[unique[chunk.ids]]).all())
        name = names[bad] if names is not None else f"chunk {bad}"
        raise ModelSourceError(
            f"prompt {_shown(name)}: the text encoder's output is infinite or NaN in {unique_hidden.dtype} (its "
            "weights overflow); check the checkpoint, or load it in fp32 if it overflows in fp16/bf16"
        )
    row = torch.tensor([unique[chunk.ids] for chunk in chunks], device=device)  # (N,)
    hidden, pooled, ids = unique_hidden[row], unique_pooled[row], unique_ids[row]
    if weighting is None:
        return hidden, pooled, ids
    weights = torch.tensor([chunk.weights for chunk in chunks], dtype=torch.float32, device=device)  # (N, T)
    weighted = (weights != 1).any(dim=-1)  # (N,) chunks with all weights 1 stay exactly as encoded
    if not weighted.any():
        return hidden, pooled, ids
    if weighting == "comfy":
        empty_hidden = unique_hidden[unique[empty.ids]] if needs_empty else empty_hidden
        empty_hidden = empty_hidden[None]  # (1, T, H)
    result = apply_weights(hidden[weighted], weights[weighted], mode=weighting, empty_hidden=empty_hidden)
    finite = torch.isfinite(result).flatten(1).all(dim=-1)  # (W,)
    if not finite.all():
        bad = int(weighted.nonzero()[int((~finite).nonzero()[0])])
        name = names[bad] if names is not None else f"chunk {bad}"
        largest = max(chunks[bad].weights, key=abs)
        raise PromptError(
            f"prompt {_shown(name)}: weight {largest:g} makes the conditioning infinite or NaN in {hidden.dtype}; "
            "use weights of a sensible size (usually 0 to 2; each level of nested brackets multiplies by 1.1)"
        )
    hidden[weighted] = result
    return hidden, pooled, ids


def _shown(text: str, limit: int = 200) -> str:
    """``text`` quoted, its middle cut when long, so both ends (where weights usually sit) show."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit // 2]!r}...{text[-limit // 2 :]!r}"


def pad_chunks(
    hidden: torch.Tensor, ids: torch.Tensor, n_chunks: int, empty_hidden: torch.Tensor, empty_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One text's ``hidden (k, T, H)`` and ``ids (k, T)`` padded with the empty chunk to ``n_chunks`` and
    flattened: ``(hidden (T·n, H), ids (T·n,))``.

    Example:
        >>> import torch
        >>> hidden, ids = pad_chunks(torch.ones(1, 3, 2), torch.ones(1, 3), 2, torch.zeros(3, 2), torch.zeros(3))
        >>> hidden.shape, ids.tolist()
        (torch.Size([6, 2]), [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    """
    import torch

    extra = n_chunks - len(ids)
    if extra > 0:
        hidden = torch.cat([hidden, empty_hidden[None].expand(extra, *empty_hidden.shape)])
        ids = torch.cat([ids, empty_ids[None].expand(extra, *empty_ids.shape)])
    return hidden.flatten(0, 1), ids.flatten()


def assemble(rows: list[list[tuple]], repeats: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch tensors from each row's per-encoder entries ``(hidden (T·k, H), pooled (D,), ids (T·k,))``.

    Returns ``(hidden (B·n, T·k, ΣH), pooled (B·n, D), ids (B·n, T·k))``: the encoders' hidden states
    side by side on the last axis, pooled from the last encoder (SDXL: bigG's projected ``text_embeds``),
    ids from the first; each row repeated ``repeats`` times.

    Example:
        >>> import torch
        >>> row = [(torch.ones(3, 2), torch.ones(4), torch.ones(3)), (torch.zeros(3, 5), torch.zeros(6), torch.ones(3))]
        >>> [tuple(t.shape) for t in assemble([row], 2)]
        [(2, 3, 7), (2, 6), (2, 3)]
    """
    import torch

    hidden = torch.stack([torch.cat([entry[0] for entry in row], dim=-1) for row in rows])
    pooled = torch.stack([row[-1][1] for row in rows])
    ids = torch.stack([row[0][2] for row in rows])
    return tuple(t.repeat_interleave(repeats, dim=0) for t in (hidden, pooled, ids))


def encode_texts(
    model: Any,
    tokenizer: Any,
    spec: EncoderSpec,
    texts: Sequence[str],
    settings: EncodeSettings,
    *,
    chunk: Callable[[str], ChunkedPrompt],
    truncated: list[tuple[str, str]] | None = None,
    cache: Any = None,
    cache_key: tuple = (),
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str | None, tuple]:
    """Per unique text: ``(hidden (k, T, H), pooled (D,), ids (k, T), ChunkedPrompt)``, through ``cache``.

    Pooled comes from the first chunk, as in A1111 and ComfyUI. The key ``None`` holds the empty chunk
    (BOS, EOS, padding), which pads prompts to a common number of chunks and anchors comfy weighting.
    ``chunk`` turns a text into chunks; texts cut by truncation are added to ``truncated``. ``cache``
    (``get`` / ``put``, keyed ``(*cache_key, text, settings)``) receives contiguous copies, each checked
    against its chunks, so an entry never keeps a whole batch alive and is never of the wrong shape.
    ``forward`` is passed to :func:`encode_chunks` (the model call; default: eager ``run_encoder``).

    Example:
        >>> from sdclip.conditioning.settings import resolve_settings
        >>> from sdclip.conditioning.types import EncoderSpec
        >>> from sdclip.prompts.chunking import chunk_prompt
        >>> settings = resolve_settings(None, "plain", False, None)
        >>> out = encode_texts(cond.text_encoder, cond.tokenizer, EncoderSpec(), ["a cat", "cat " * 80], settings,
        ...                    chunk=lambda text: chunk_prompt(text, cond.tokenizer, truncate=False))
        >>> [(text and text[:5], tuple(out[text][0].shape)) for text in out]
        [('a cat', (1, 77, 128)), ('cat c', (2, 77, 128)), (None, (1, 77, 128))]
    """
    structure = get_syntax(settings.syntax).structured
    if structure is not None:  # compel's blends and .and(): parts encoded and combined with compel's math
        from .compel_math import encode_combined_texts

        return encode_combined_texts(model, tokenizer, spec, texts, settings, structure=structure,
                                     truncated=truncated, cache=cache, cache_key=cache_key)
    needs_empty = not settings.truncate or settings.weighting == "comfy"
    results, todo = split_cached(cache, [*texts, None] if needs_empty else texts,
                                 key=lambda text: (*cache_key, text, settings))
    if not todo:
        return results
    empty = empty_chunk(tokenizer)
    chunked = {text: chunk(text) for text in todo if text is not None}
    if truncated is not None:
        truncated += [(text, prompt.truncated_text) for text, prompt in chunked.items() if prompt.truncated_text]
    if None in todo:
        chunked[None] = ChunkedPrompt((empty,), None)
    flat = [(text, one) for text, prompt in chunked.items() for one in prompt.chunks]
    hidden, pooled, ids = encode_chunks(
        model, spec, [one for _, one in flat], eos_token_id=tokenizer.eos_token_id, clip_skip=settings.clip_skip,
        weighting=settings.weighting, empty=empty, empty_hidden=results[None][0][0] if None in results else None,
        names=[text or "" for text, _ in flat], forward=forward,
    )  # fmt: skip
    start = 0
    for text, prompt in chunked.items():
        count = len(prompt.chunks)
        # copies: an entry must not keep the whole batch's tensors alive
        entry = (hidden[start : start + count].clone(), pooled[start].clone(), ids[start : start + count].clone(), prompt)
        start += count
        if entry[0].shape[:2] != entry[2].shape or entry[2].shape != (count, len(empty.ids)):
            raise RuntimeError(f"sdclip bug: encoded {tuple(entry[0].shape)} for {count} chunk(s) of {text!r}")
        results[text] = entry
        if cache is not None:
            cache.put((*cache_key, text, settings), entry)
    return results


def assemble_texts(
    encoded: list[tuple[list[str], dict]], n_chunks: int, repeats: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch tensors for one side (prompts or negatives): per encoder ``(texts, encode_texts' result)``.

    Each text is padded to ``n_chunks`` with its encoder's empty chunk, then :func:`assemble` puts the
    encoders side by side and repeats each row ``repeats`` times.

    Example:
        >>> from sdclip.conditioning.settings import resolve_settings
        >>> from sdclip.conditioning.types import EncoderSpec
        >>> from sdclip.prompts.chunking import chunk_prompt
        >>> settings = resolve_settings(None, "plain", False, None)
        >>> out = encode_texts(cond.text_encoder, cond.tokenizer, EncoderSpec(), ["a cat"], settings,
        ...                    chunk=lambda text: chunk_prompt(text, cond.tokenizer, truncate=False))
        >>> [tuple(t.shape) for t in assemble_texts([(["a cat", "a cat"], out)], 2, 1)]
        [(2, 154, 128), (2, 128), (2, 154)]
    """

    def padded(entries: dict, text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden, pooled, ids, _ = entries[text]
        if len(ids) < n_chunks:
            hidden, ids = pad_chunks(hidden, ids, n_chunks, entries[None][0][0], entries[None][2][0])
            return hidden, pooled, ids
        return hidden.flatten(0, 1), pooled, ids.flatten()

    n_rows = len(encoded[0][0])
    return assemble([[padded(entries, texts[row]) for texts, entries in encoded] for row in range(n_rows)], repeats)


def build_conditioning(
    sides: list[tuple[tuple[list[str], dict], tuple[list[str], dict]]],
    prompts: list[str],
    repeats: int,
    *,
    zero_negative: bool = False,
    pipeline_takes_pooled: bool = False,
    no_negative: bool = False,
) -> Conditioning:
    """The ``Conditioning`` of one ``encode`` call from each encoder's ``((texts, encoded), (negative
    texts, encoded))`` (``encode_texts``' results): both sides padded to the batch's largest number of
    chunks, each row repeated ``repeats`` times; ``zero_negative`` gives zero negatives (ids -1), as
    diffusers' SDXL pipelines; ``no_negative`` (nothing was encoded for them) leaves the negatives None.
    ``prompts`` are the first encoder's prompts (the rows' chunks).

    Example:
        >>> from sdclip.conditioning.settings import resolve_settings
        >>> from sdclip.conditioning.types import EncoderSpec
        >>> from sdclip.prompts.chunking import chunk_prompt
        >>> out = encode_texts(cond.text_encoder, cond.tokenizer, EncoderSpec(), ["a cat", ""],
        ...                    resolve_settings(None, "plain", True, None),
        ...                    chunk=lambda text: chunk_prompt(text, cond.tokenizer))
        >>> result = build_conditioning([((["a cat"], out), ([""], out))], ["a cat"], 2)
        >>> result.prompt_embeds.shape, result.negative_prompt_embeds.shape
        (torch.Size([2, 77, 128]), torch.Size([2, 77, 128]))
    """
    import torch

    from .types import Conditioning

    n_chunks = max(len(encoded[text][2]) for side in sides for texts, encoded in side for text in texts)

    def chunks(side: int) -> tuple[ChunkedPrompt | None, ...]:  # the first encoder's, per output row
        texts, encoded = sides[0][side]
        return tuple(encoded[text][3] if texts else None for text in texts or prompts
                     for _ in range(repeats))  # fmt: skip

    prompt_embeds, pooled, prompt_ids = assemble_texts([side[0] for side in sides], n_chunks, repeats)
    if no_negative:
        negative_embeds = negative_pooled = negative_ids = None
    elif zero_negative:  # as diffusers' SDXL pipelines: no text encoded, no token ids
        negative_embeds, negative_pooled = torch.zeros_like(prompt_embeds), torch.zeros_like(pooled)
        negative_ids = torch.full_like(prompt_ids, -1)
    else:
        negative_embeds, negative_pooled, negative_ids = assemble_texts([side[1] for side in sides], n_chunks, repeats)
    return Conditioning(
        prompt_embeds=prompt_embeds,
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=negative_embeds,
        negative_pooled_prompt_embeds=negative_pooled,
        prompt_ids=prompt_ids,
        negative_prompt_ids=negative_ids,
        pipeline_takes_pooled=pipeline_takes_pooled,
        prompt_chunks=chunks(0),
        negative_chunks=() if no_negative else chunks(1),
    )
