"""Token ids and per-token weights for a prompt, in CLIP's 77-token windows.

Plain Python over a tokenizer object: no torch. Three layouts; each syntax names its own
(:attr:`sdclip.prompts.parsed.Syntax.layout`):

* ``"diffusers"`` (the ``"plain"`` syntax's) with ``truncate=True`` is what diffusers does: one window,
  the rest cut off; with ``truncate=False`` it is the ``"a1111"`` layout.
* ``"a1111"`` is A1111's ``tokenize_line``: 75 tokens a chunk,
  ``BREAK`` starts a new chunk, and a chunk that fills up hands the words after its last comma (if
  that comma is among its last 20 tokens) to the next chunk.
* ``"comfy"`` is ComfyUI's ``SDTokenizer.tokenize_with_weights``: a weighted run of 8 tokens or more is
  split across windows where it has to be, a shorter one moves whole to the next window. As in current
  ComfyUI, a run is tokenized whole (cut only before ``embedding:``); older ComfyUI releases cut it at
  every space, so there the unit that moves or splits was a single word.

Every chunk is laid out ``BOS, tokens, EOS, padding`` with ``tokenizer.pad_token_id`` as padding. For SD
1.x tokenizers padding is EOS, so this is A1111's ``BOS + tokens + EOS * (76 - n)`` token for token; for
tokenizers with a separate pad token (SD 2.x pads with ``!``) it is the layout A1111 builds for them in
``process_tokens`` and ComfyUI and diffusers build directly.

Textual-inversion embeddings are not looked up here: ``embedding:name`` and trigger words are tokenized
as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import PromptError
from .parsed import Break, Item, Run
from .parser import parse
from .syntaxes import get_syntax

__all__ = ["CHUNK_LENGTH", "ChunkedPrompt", "TokenChunk", "chunk_items", "chunk_prompt", "empty_chunk"]

CHUNK_LENGTH = 75
"""Prompt tokens per chunk; a chunk holds ``CHUNK_LENGTH + 2`` ids with BOS and EOS."""

COMMA_BACKTRACK = 20
"""A1111's default ``comma_padding_backtrack``: how far back a full chunk looks for a comma."""

MAX_WORD_LENGTH = 8
"""ComfyUI's ``max_word_length``: runs this long or longer may be split across windows."""

# ComfyUI splits a weighted run before each "embedding:" that follows a space or newline, so an
# embedding and the text around it are separate groups in its window layout.
_RE_EMBEDDING_SPLIT = re.compile(r" embedding:|\nembedding:")

_Run = list[tuple[int, float]]  # (token id, weight) pairs of one chunk or one group, without specials


class Tokenizer(Protocol):
    """What the chunker uses of a ``transformers`` CLIP tokenizer."""

    bos_token_id: int
    eos_token_id: int
    pad_token_id: int | None
    unk_token_id: int | None

    def __call__(self, text: str | list[str], **kwargs: Any) -> Mapping[str, Any]: ...  # noqa: D102

    def convert_tokens_to_ids(self, tokens: str) -> int: ...  # noqa: D102

    def decode(self, token_ids: list[int], **kwargs: Any) -> str: ...  # noqa: D102


@dataclass(frozen=True)
class TokenChunk:
    """One 77-token window of a prompt.

    Attributes:
        ids: ``CHUNK_LENGTH + 2`` token ids: BOS, the prompt's tokens, EOS, then padding.
        weights: one weight per id; 1.0 at BOS, EOS and padding.
        n_tokens: how many of ``ids`` are prompt tokens (not BOS, EOS or padding).
    """

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    n_tokens: int

    @property
    def tokens(self) -> tuple[int, ...]:
        """The prompt's token ids in this chunk, without BOS, EOS and padding."""
        return self.ids[1 : 1 + self.n_tokens]


@dataclass(frozen=True)
class ChunkedPrompt:
    """A prompt as chunks for the text encoder.

    Attributes:
        chunks: at least one chunk; the empty prompt is one chunk of BOS, EOS and padding.
        truncated_text: the dropped tokens, decoded, when ``truncate=True`` cut some off; else None.
    """

    chunks: tuple[TokenChunk, ...]
    truncated_text: str | None

    @property
    def n_tokens(self) -> int:
        """Prompt tokens over all chunks (BOS, EOS and padding not counted)."""
        return sum(chunk.n_tokens for chunk in self.chunks)


def chunk_prompt(text: str, tokenizer: Tokenizer, *, syntax: str = "plain", truncate: bool = True) -> ChunkedPrompt:
    """Tokenize a prompt into 77-token chunks with a weight per token.

    ``syntax="plain"`` with ``truncate=True`` gives exactly the ids of
    ``tokenizer(text, padding="max_length", max_length=77, truncation=True)``, as diffusers encodes, and
    ``truncated_text`` is what diffusers' warning prints. Otherwise the prompt is parsed with
    :func:`~sdclip.prompts.parser.parse`, each run tokenized on its own, and laid out the way A1111
    (``"a1111"``, and ``"plain"`` as one run at weight 1.0) or ComfyUI (``"comfy"``) does: the layout is
    the syntax's own (:attr:`~sdclip.prompts.parsed.Syntax.layout`), so a registered syntax chunks too.

    With ``truncate=True`` only the first chunk is kept: for ``"a1111"`` that is the first 75 tokens up
    to the first ``BREAK`` (no comma backtrack, which only decides what moves to a next chunk), for
    ``"comfy"`` ComfyUI's first window. ``truncated_text`` then decodes every token dropped.

    Args:
        text: the prompt.
        tokenizer: a CLIP tokenizer (``sdclip.models.tokenizer.load_tokenizer()``).
        syntax: ``"plain"``, ``"a1111"``, ``"comfy"`` or a registered syntax.
        truncate: keep only the first chunk.

    Returns:
        The chunks, and the text truncation dropped.

    Raises:
        PromptTypeError: ``text`` is not a string.
        PromptError: ``syntax`` is unknown.

    Example:
        >>> from sdclip.models.tokenizer import load_tokenizer
        >>> tok = load_tokenizer()
        >>> prompt = chunk_prompt("a (cat:1.5)", tok, syntax="a1111")
        >>> prompt.chunks[0].ids[:4], prompt.chunks[0].weights[:4], prompt.chunks[0].n_tokens
        ((49406, 320, 2368, 49407), (1.0, 1.0, 1.5, 1.0), 2)
        >>> len(chunk_prompt("cat " * 80, tok, syntax="a1111", truncate=False).chunks)
        2
    """
    items = parse(text, syntax).items  # validates text and syntax for every branch
    layout = get_syntax(syntax).layout
    if layout == "diffusers" and truncate:
        if len(items) != 1 or not isinstance(items[0], Run) or items[0].weight != 1.0:
            raise PromptError(f"syntax {syntax!r}: the diffusers layout takes one run at weight 1.0, got {items!r:.80}")
        return _diffusers_chunk(items[0].text, tokenizer)  # diffusers' own cut of exactly that text
    layout = "comfy" if layout == "comfy" else "a1111"
    if get_syntax(syntax).structured is None:
        return chunk_items(items, tokenizer, layout=layout, truncate=truncate)
    # compel's .and(): each part (between breaks) has chunks of its own, and truncation cuts each part
    parts: list[list[Item]] = [[]]
    for item in items:
        parts.append([]) if isinstance(item, Break) else parts[-1].append(item)
    chunked = [chunk_items(tuple(part), tokenizer, layout=layout, truncate=truncate) for part in parts]
    dropped = " ".join(c.truncated_text for c in chunked if c.truncated_text) or None
    return ChunkedPrompt(tuple(chunk for c in chunked for chunk in c.chunks), dropped)


def chunk_items(items: tuple[Item, ...], tokenizer: Tokenizer, *, layout: str = "a1111", truncate: bool = True) -> ChunkedPrompt:
    """Chunks for already-parsed runs and breaks (what :func:`chunk_prompt` does after parsing).

    Syntaxes that combine several encodings (compel's ``.and()`` and blends) chunk each part with it.

    Example:
        >>> from sdclip.models.tokenizer import load_tokenizer
        >>> chunk_items((Run("a"), Run("cat", 1.5)), load_tokenizer()).chunks[0].weights[:4]
        (1.0, 1.0, 1.5, 1.0)
    """
    if layout == "comfy":
        windows = _comfy_layout(_comfy_groups([item for item in items if isinstance(item, Run)], tokenizer))
    else:
        tokenized = _tokenize(tokenizer, [item.text if isinstance(item, Run) else "" for item in items])
        backtrack = 0 if truncate else COMMA_BACKTRACK
        windows = _a1111_layout(items, tokenized, comma=_comma_id(tokenizer), backtrack=backtrack)
    truncated_text = None
    if truncate:
        dropped = [token for window in windows[1:] for token, _ in window]
        windows = windows[:1]
        truncated_text = tokenizer.decode(dropped) if dropped else None
    return ChunkedPrompt(tuple(_make_chunk(window, tokenizer) for window in windows), truncated_text)


def empty_chunk(tokenizer: Tokenizer) -> TokenChunk:
    """The chunk of the empty prompt: BOS, EOS, then padding, all at weight 1.0.

    Encoders pad a batch's shorter prompts to the longest with it (A1111's ``empty_chunk``; for SD 1.x
    tokenizers, whose padding is EOS, it is BOS followed by 76 EOS).

    Args:
        tokenizer: a CLIP tokenizer.

    Returns:
        A chunk with ``n_tokens == 0``.

    Example:
        >>> from sdclip.models.tokenizer import load_tokenizer
        >>> chunk = empty_chunk(load_tokenizer())
        >>> chunk.ids[:3], len(chunk.ids), set(chunk.weights)
        ((49406, 49407, 49407), 77, {1.0})
    """
    return _make_chunk([], tokenizer)


def _pad_id(tokenizer: Tokenizer) -> int:
    # A tokenizer without a pad token pads with EOS, as A1111 and ComfyUI do for SD 1.x.
    return tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id


def _comma_id(tokenizer: Tokenizer) -> int | None:
    # A1111 looks up ",</w>" in the vocabulary; convert_tokens_to_ids answers unk for a missing token.
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    return None if comma == tokenizer.unk_token_id else comma


def _make_chunk(window: _Run, tokenizer: Tokenizer) -> TokenChunk:
    padding = CHUNK_LENGTH - len(window)
    ids = (tokenizer.bos_token_id, *(t for t, _ in window), tokenizer.eos_token_id) + (_pad_id(tokenizer),) * padding
    weights = (1.0, *(w for _, w in window), 1.0) + (1.0,) * padding
    return TokenChunk(ids=ids, weights=weights, n_tokens=len(window))


def _tokenize(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no BOS/EOS, no truncation (A1111's ``tokenize``)."""
    if not texts:
        return []
    # verbose=False: texts longer than 77 tokens are expected here, not worth transformers' warning.
    return tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]


def _diffusers_chunk(text: str, tokenizer: Tokenizer) -> ChunkedPrompt:
    length = CHUNK_LENGTH + 2
    # One call, always with the same settings (no truncation, no padding): a fast tokenizer keeps its
    # truncation and padding as shared state, so calls with different settings from several threads
    # would tokenize with each other's. The cut and the padding are done here, as transformers does them.
    untruncated = tokenizer(text, truncation=False, verbose=False)["input_ids"]  # BOS ... EOS
    n_tokens = len(untruncated) - 2
    if n_tokens > CHUNK_LENGTH:
        ids = untruncated[: length - 1] + untruncated[-1:]  # BOS, the first 75 tokens, EOS
    else:
        ids = untruncated + [tokenizer.pad_token_id] * (length - len(untruncated))
    # diffusers warns with batch_decode(untruncated[:, 76:-1]): the tokens past the 75 kept ones.
    truncated_text = tokenizer.decode(untruncated[length - 1 : -1]) if n_tokens > CHUNK_LENGTH else None
    chunk = TokenChunk(ids=tuple(ids), weights=(1.0,) * length, n_tokens=min(n_tokens, CHUNK_LENGTH))
    return ChunkedPrompt((chunk,), truncated_text)


def _a1111_layout(items: tuple[Item, ...], tokenized: list[list[int]], *, comma: int | None, backtrack: int) -> list[_Run]:
    """A1111's ``tokenize_line`` without embeddings: the prompt tokens of each chunk.

    Kept from upstream on purpose: a leading ``BREAK`` gives an empty first chunk, and so does each
    further ``BREAK`` in a row; a trailing ``BREAK`` adds none; the empty prompt is one empty chunk; a
    comma that opens a new chunk is not remembered for backtracking.
    """
    chunks: list[_Run] = []
    chunk: _Run = []
    last_comma = -1
    for item, tokens in zip(items, tokenized, strict=True):
        if isinstance(item, Break):
            chunks.append(chunk)
            chunk, last_comma = [], -1
            continue
        weight = item.weight
        for token in tokens:
            if token == comma:
                last_comma = len(chunk)
            elif backtrack and len(chunk) == CHUNK_LENGTH and last_comma != -1 and len(chunk) - last_comma <= backtrack:
                # Full, with a comma near the end: the words after it open the next chunk instead.
                chunks.append(chunk[: last_comma + 1])
                chunk, last_comma = chunk[last_comma + 1 :], -1
            if len(chunk) == CHUNK_LENGTH:
                chunks.append(chunk)
                chunk, last_comma = [], -1
            chunk.append((token, weight))
    if chunk or not chunks:
        chunks.append(chunk)
    return chunks


def _comfy_groups(runs: list[Run], tokenizer: Tokenizer) -> list[_Run]:
    """ComfyUI's token groups: each weighted run, cut before every ``embedding:``, tokenized whole."""
    pieces: list[tuple[str, float]] = []
    for run in runs:
        first, *rest = _RE_EMBEDDING_SPLIT.split(run.text)
        pieces += [(piece, run.weight) for piece in [first, *("embedding:" + r for r in rest)] if piece]
    tokenized = _tokenize(tokenizer, [piece for piece, _ in pieces])
    return [[(token, weight) for token in tokens] for tokens, (_, weight) in zip(tokenized, pieces, strict=True)]


def _comfy_layout(groups: list[_Run]) -> list[_Run]:
    """ComfyUI's window filling: the prompt tokens of each window."""
    windows: list[_Run] = [[]]
    for group in groups:
        splittable = len(group) >= MAX_WORD_LENGTH
        while group:
            room = CHUNK_LENGTH - len(windows[-1])
            if len(group) <= room:
                windows[-1].extend(group)
                break
            if splittable:
                windows[-1].extend(group[:room])
                group = group[room:]
            windows.append([])
    return windows
