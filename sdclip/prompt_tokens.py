"""What a prompt becomes, token by token: text, id, chunk, position, weight, and whether it was cut.

Pure Python over the tokenizer (no torch), shared by ``sdclip tokens``, ``TextConditioner.parse`` and
``sdclip.inspection``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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


def plain_prompt_tokens(text: str, tokenizer: Any) -> list[PromptToken]:
    """Tokens of ``text`` as diffusers feeds them: BOS, up to 75 tokens, EOS; the rest marked truncated.

    Padding is not listed. Truncated tokens keep the positions they would have had.

    Example:
        >>> from sdclip.tokenizer import load_tokenizer
        >>> [(t.text, t.id, t.position) for t in plain_prompt_tokens("a cat", load_tokenizer())]
        [('<|startoftext|>', 49406, 0), ('a</w>', 320, 1), ('cat</w>', 2368, 2), ('<|endoftext|>', 49407, 3)]
    """
    ids = tokenizer(text, verbose=False).input_ids  # BOS ... EOS, untruncated
    limit = tokenizer.model_max_length
    body = ids[1:-1]
    kept, cut = body[: limit - 2], body[limit - 2 :]
    names = tokenizer.convert_ids_to_tokens(ids[:1] + kept + ids[-1:] + cut)
    sequence = ids[:1] + kept + ids[-1:]
    tokens = [PromptToken(names[i], token_id, 0, i) for i, token_id in enumerate(sequence)]
    offset = len(sequence)
    tokens += [
        PromptToken(names[offset + i], token_id, 0, len(sequence) - 1 + i, truncated=True)
        for i, token_id in enumerate(cut)
    ]
    return tokens
