"""T5's part of SD3 / Flux conditioning: text -> token ids and weights -> hidden states -> weighted.

Plain functions, as :mod:`.core` is for CLIP. T5 sees one sequence of ``max_sequence_length`` tokens
(diffusers' ``padding="max_length"``): the text's tokens, ``</s>``, then ``<pad>``; longer text is cut to
``max_sequence_length - 1`` tokens and ``</s>`` (as diffusers). There is no chunking and ``BREAK`` is
ignored (T5 has no 77-token windows).

Weights (``syntax="a1111"`` / ``"comfy"``): each run of text is tokenized on its own (as ComfyUI and
sd_embed do) and its tokens carry its weight; ``</s>`` and padding carry 1.0. Then, per token whose weight
``w`` is not 1: ``weighting="comfy"`` (ComfyUI's ``encode_token_weights``, its T5 too):
``h = e + (h - e) * w`` with ``e`` the encoding of the empty text (``</s>`` then ``<pad>``, ComfyUI's
``gen_empty_tokens`` for T5, which has no start token); ``weighting="a1111"`` maps to sd_embed's rule for
T5, ``h = h * w`` (no mean restoration: sd_embed restores no mean for T5), as does ``"multiply"``.
``syntax="compel"`` follows compel's rule for T5 instead (``CompelForFlux``: masked downweighting, blends,
one window per ``.and()`` part), in :func:`sdclip.conditioning.compel_math.encode_combined_t5`.
Two departures from sd_embed: the sequence is padded to ``max_sequence_length`` like diffusers' (sd_embed
encodes the unpadded tokens), and ``</s>`` comes once at the end (sd_embed tokenizes every run with its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import PromptError
from ..prompts.parsed import Blend, CombinedPrompt, Run
from ..prompts.syntaxes import get_syntax
from ..prompts.tokens import PromptToken
from .cached import split_cached
from .weighting import apply_weights

if TYPE_CHECKING:
    import torch

__all__ = ["T5Tokens", "T5_WEIGHTING", "combined_t5_tokens", "empty_t5_ids", "encode_t5_texts", "list_t5_tokens",
           "run_t5", "t5_tokens", "t5_window"]

T5_WEIGHTING = {"a1111": "multiply", "comfy": "comfy", "multiply": "multiply", None: None}
"""The rule T5 uses for each CLIP weighting mode (see the module)."""


@dataclass(frozen=True)
class T5Tokens:
    """One text's T5 input.

    Attributes:
        ids: ``max_sequence_length`` token ids: the text's, ``</s>``, then padding.
        weights: one per id (1.0 at ``</s>`` and padding).
        length: how many ids are not padding (``</s>`` included).
        truncated_text: what was cut to fit, else None.
        windows: compel's ``.and()``: each part's own window (``ids`` is them one after the other;
            ``length`` is the first's); empty otherwise.
    """

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    length: int
    truncated_text: str | None = None
    windows: tuple[T5Tokens, ...] = ()


def t5_tokens(text: str, tokenizer: Any, *, syntax: str = "plain", max_length: int = 256) -> T5Tokens:
    """``text`` as T5 token ids and weights, padded or cut to ``max_length`` as diffusers does.

    A compel ``.and()`` (a syntax with ``structured`` prompts) gives one window per part, as compel's
    T5 reads it: ``ids`` and ``weights`` are the windows one after the other, ``windows`` each of them.

    Example:
        >>> from sdclip.testing_mmdit import tiny_t5_tokenizer
        >>> tokens = t5_tokens("a (cat:1.5)", tiny_t5_tokenizer(), syntax="a1111", max_length=5)
        >>> tokens.ids, tokens.weights, tokens.length
        ((4, 12, 1, 0, 0), (1.0, 1.5, 1.0, 1.0, 1.0), 3)
        >>> t5_tokens('("a cat", "a").and()', tiny_t5_tokenizer(), syntax="compel", max_length=3).ids
        (4, 12, 1, 4, 1, 0)
    """
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise PromptError(f"max_sequence_length: expected an integer >= 1, got {max_length!r}")
    if syntax == "plain":
        return t5_window([(text, 1.0)], tokenizer, max_length)
    structure = get_syntax(syntax).structured
    if structure is None:
        items = get_syntax(syntax).parse(text).items
        return t5_window([(item.text, item.weight) for item in items if isinstance(item, Run)], tokenizer, max_length)
    return combined_t5_tokens(structure(text), tokenizer, max_length)


def combined_t5_tokens(combined: CombinedPrompt, tokenizer: Any, max_length: int) -> T5Tokens:
    """What T5 reads of a prompt with ``.and()`` parts: one window per part, one after the other (a blend
    shows its first prompt). :func:`t5_tokens` of a syntax with ``structured`` prompts, from the parsed form.

    Example:
        >>> from sdclip.prompts.compel import parse_compel
        >>> from sdclip.testing_mmdit import tiny_t5_tokenizer
        >>> combined_t5_tokens(parse_compel('("a cat", "a").and()'), tiny_t5_tokenizer(), max_length=3).ids
        (4, 12, 1, 4, 1, 0)
    """
    windows = tuple(t5_window([(item.text, item.weight) for item in (part.parts[0] if isinstance(part, Blend) else part).items
                             if isinstance(item, Run)], tokenizer, max_length)
                    for part in combined.parts)  # fmt: skip
    if len(windows) == 1:
        return windows[0]
    cut = " ".join(window.truncated_text for window in windows if window.truncated_text) or None
    return T5Tokens(tuple(i for w in windows for i in w.ids), tuple(x for w in windows for x in w.weights),
                    windows[0].length, cut, windows)  # fmt: skip


def t5_window(runs: list[tuple[str, float]], tokenizer: Any, max_length: int) -> T5Tokens:
    """One ``max_length`` window of ``(text, weight)`` runs, each tokenized on its own: the runs' tokens
    (cut to ``max_length - 1``), ``</s>``, then padding.

    Example:
        >>> from sdclip.testing_mmdit import tiny_t5_tokenizer
        >>> t5_window([("a", 1.0), ("cat dog", 0.5)], tiny_t5_tokenizer(), 4)
        T5Tokens(ids=(4, 12, 13, 1), weights=(1.0, 0.5, 0.5, 1.0), length=4, truncated_text=None, windows=())
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids, weights = [], []
    for run_text, weight in runs:
        if run_text:
            run = tokenizer(run_text, add_special_tokens=False).input_ids
            ids += run
            weights += [float(weight)] * len(run)
    truncated = None
    if len(ids) > max_length - 1:
        truncated = tokenizer.decode(ids[max_length - 1 :])
        ids, weights = ids[: max_length - 1], weights[: max_length - 1]
    length = len(ids) + 1
    padding = max_length - length
    return T5Tokens(tuple(ids + [eos] + [pad] * padding), tuple(weights + [1.0] * (padding + 1)), length, truncated)


def list_t5_tokens(tokens: T5Tokens, tokenizer: Any) -> list[PromptToken]:
    """T5's tokens as ``PromptToken`` (chunk 0; T5's own ids): the text's and ``</s>``, not the padding, then
    the truncated ones, flagged, at the positions they would have had. compel's ``.and()`` windows are
    chunks 0, 1, ...

    Example:
        >>> from sdclip.testing_mmdit import tiny_t5_tokenizer
        >>> tokenizer = tiny_t5_tokenizer()
        >>> [(t.text, t.id, t.truncated) for t in list_t5_tokens(t5_tokens("a cat dog", tokenizer, max_length=3), tokenizer)]
        [('▁a', 4, False), ('▁cat', 12, False), ('</s>', 1, False), ('▁dog', 13, True)]
    """
    if tokens.windows:  # compel's .and(): window k's tokens as chunk k
        return [replace(token, chunk=k) for k, window in enumerate(tokens.windows)
                for token in list_t5_tokens(window, tokenizer)]  # fmt: skip
    kept = list(tokens.ids[: tokens.length])
    listed = [PromptToken(name, token_id, 0, position, tokens.weights[position])
              for position, (name, token_id) in enumerate(zip(tokenizer.convert_ids_to_tokens(kept), kept))]  # fmt: skip
    if tokens.truncated_text:
        cut = tokenizer(tokens.truncated_text, add_special_tokens=False).input_ids
        listed += [PromptToken(name, token_id, 0, tokens.length + k, truncated=True)
                   for k, (name, token_id) in enumerate(zip(tokenizer.convert_ids_to_tokens(cut), cut))]  # fmt: skip
    return listed


def empty_t5_ids(tokenizer: Any, max_length: int) -> tuple[int, ...]:
    """The empty text's ids, ComfyUI's anchor for weights: ``</s>`` then padding.

    Example:
        >>> from sdclip.testing_mmdit import tiny_t5_tokenizer
        >>> empty_t5_ids(tiny_t5_tokenizer(), 4)
        (1, 0, 0, 0)
    """
    return (tokenizer.eos_token_id,) + (tokenizer.pad_token_id,) * (max_length - 1)


def run_t5(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """T5's last hidden state for ``ids (N, L)``: ``(N, L, H)`` on ``ids``' device, in the model's dtype.

    No attention mask, as diffusers' SD3 and Flux pipelines: padding tokens attend and are attended to.

    Example:
        >>> import torch
        >>> from sdclip.testing_mmdit import tiny_t5_encoder
        >>> run_t5(tiny_t5_encoder(vocab_size=200), torch.tensor([[4, 1, 0]])).shape
        torch.Size([1, 3, 384])
    """
    return model(input_ids=ids.to(model.device)).last_hidden_state.to(ids.device)


def encode_t5_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], *, syntax: str, weighting: str | None, max_length: int,
    device: Any, truncated: list[tuple[str, str]] | None = None, cache: Any = None, cache_key: tuple = (),
) -> dict[str, tuple[torch.Tensor, torch.Tensor, T5Tokens]]:
    """Per unique text: ``(hidden (L, H), ids (L,), T5Tokens)`` on ``device``, weighted, through ``cache``.

    Texts cut to ``max_length`` are added to ``truncated`` as ``(text, what was cut)``. ``cache`` (``get``
    / ``put``) is keyed ``(*cache_key, text)``; entries are contiguous copies.

    Example:
        >>> import torch
        >>> from sdclip.testing_mmdit import tiny_t5_encoder, tiny_t5_tokenizer
        >>> tokenizer = tiny_t5_tokenizer()
        >>> out = encode_t5_texts(tiny_t5_encoder(vocab_size=len(tokenizer)), tokenizer, ["a cat"], syntax="plain",
        ...                       weighting=None, max_length=8, device="cpu")
        >>> out["a cat"][0].shape, out["a cat"][1].tolist()
        (torch.Size([8, 384]), [4, 12, 1, 0, 0, 0, 0, 0])
    """
    import torch

    mode = T5_WEIGHTING.get(weighting, weighting)
    results, todo = split_cached(cache, texts, key=lambda text: (*cache_key, text))
    if not todo:
        return results
    tokens = [t5_tokens(text, tokenizer, syntax=syntax, max_length=max_length) for text in todo]
    if truncated is not None:
        truncated += [(text, one.truncated_text) for text, one in zip(todo, tokens, strict=True) if one.truncated_text]
    weights = torch.tensor([one.weights for one in tokens], dtype=torch.float32)  # (N, L)
    weighted = (weights != 1).any(dim=-1) if mode is not None else torch.zeros(len(todo), dtype=torch.bool)
    rows = [one.ids for one in tokens]
    if mode == "comfy" and weighted.any():
        rows.append(empty_t5_ids(tokenizer, max_length))
    ids = torch.tensor(rows, dtype=torch.long)  # (N [+1], L)
    hidden = run_t5(model, ids).to(device)  # (N [+1], L, H)
    if not torch.isfinite(hidden).all():
        raise PromptError(
            f"prompt {todo[0][:200]!r}: T5's output is infinite or NaN in {hidden.dtype}; T5 v1.1 overflows in "
            "float16: load it in bfloat16 or float32"
        )
    if weighted.any():
        empty = hidden[-1:] if mode == "comfy" else None
        result = apply_weights(hidden[: len(todo)][weighted], weights[weighted].to(device), mode=mode, empty_hidden=empty)
        if not torch.isfinite(result).all():
            raise PromptError(f"prompt {todo[0][:200]!r}: a weight makes T5's conditioning infinite or NaN in "
                              f"{hidden.dtype}; use weights of a sensible size (usually 0 to 2)")  # fmt: skip
        hidden[: len(todo)][weighted] = result
    ids = ids.to(device)
    for row, (text, one) in enumerate(zip(todo, tokens, strict=True)):
        entry = (hidden[row].clone(), ids[row].clone(), one)
        results[text] = entry
        if cache is not None:
            cache.put((*cache_key, text), entry)
    return results
