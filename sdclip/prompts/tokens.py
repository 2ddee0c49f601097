"""What a prompt becomes, token by token: text, id, chunk, position, weight, and whether it was cut.

Pure Python over the tokenizer (no torch), shared by ``sdclip tokens``, ``TextConditioner.parse`` and
``sdclip.inspection``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .chunking import ChunkedPrompt, chunk_prompt


@dataclass(frozen=True)
class PromptToken:
    """One token of a tokenized prompt.

    Attributes:
        text: the token as the vocabulary spells it (``</w>`` marks a word end).
        id: its vocabulary id.
        chunk: which 77-token chunk it lands in (0 for the first).
        position: its index within that chunk (0 is the start-of-text token).
        weight: its emphasis weight (1.0 for plain text).
        truncated: True when the model never sees it (past the token limit with truncation on).
    """

    text: str
    id: int
    chunk: int
    position: int
    weight: float = 1.0
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The token as a plain dict."""
        return asdict(self)


def prompt_tokens(chunked: ChunkedPrompt, tokenizer: Any) -> list[PromptToken]:
    """List the tokens of a chunked prompt: each chunk's BOS, tokens and EOS (not its padding), then
    the truncated tokens, at the positions they would have had after the last chunk's tokens.

    Example:
        >>> from sdclip.models.tokenizer import load_tokenizer
        >>> tok = load_tokenizer()
        >>> [(t.text, t.position) for t in prompt_tokens(chunk_prompt("a cat", tok), tok)]
        [('<|startoftext|>', 0), ('a</w>', 1), ('cat</w>', 2), ('<|endoftext|>', 3)]
    """
    listed: list[PromptToken] = []
    for index, chunk in enumerate(chunked.chunks):
        end = chunk.n_tokens + 2  # BOS, tokens, EOS
        names = tokenizer.convert_ids_to_tokens(list(chunk.ids[:end]))
        listed += [
            PromptToken(name, token_id, index, position, chunk.weights[position])
            for position, (name, token_id) in enumerate(zip(names, chunk.ids[:end]))
        ]
    if chunked.truncated_text:
        last = len(chunked.chunks) - 1
        cut = tokenizer(chunked.truncated_text, add_special_tokens=False, verbose=False).input_ids
        first = chunked.chunks[-1].n_tokens + 1
        names = tokenizer.convert_ids_to_tokens(cut)
        listed += [PromptToken(n, i, last, first + k, truncated=True) for k, (n, i) in enumerate(zip(names, cut))]
    return listed


def tokenize_prompt(text: str, tokenizer: Any, *, syntax: str = "plain", truncate: bool = True) -> list[PromptToken]:
    """Chunk ``text`` as the conditioner would and list its tokens (no weights or model needed).

    Example:
        >>> from sdclip.models.tokenizer import load_tokenizer
        >>> [(t.text, t.weight) for t in tokenize_prompt("(cat:1.5)", load_tokenizer(), syntax="a1111")][1]
        ('cat</w>', 1.5)
    """
    return prompt_tokens(chunk_prompt(text, tokenizer, syntax=syntax, truncate=truncate), tokenizer)
