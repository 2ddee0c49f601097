"""Per-row steps every inspection shares, whichever encoder made the rows (CLIP, or T5 for Flux).

``nearest_in_table``: the vocabulary tokens nearest to some tokens in an input-embedding table;
``align_tokens``: two prompts' tokens aligned by difflib over their ids, with how far each paired row moved;
``token_stats``: the per-token rows of an embedding report, truncated tokens included.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from ..errors import PromptError
from ..prompts.tokens import PromptToken
from .results import AlignedToken, Neighbour, TokenStats

if TYPE_CHECKING:
    import torch

__all__ = ["align_tokens", "cosine", "nearest_in_table", "token_stats"]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine along the last dimension, in float32.

    Example:
        >>> import torch
        >>> cosine(torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 1.0]])).tolist()
        [0.7071067690849304]
    """
    import torch

    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def nearest_in_table(model: Any, tokenizer: Any, token_ids: list[int], *, k: int = 5) -> list[list[Neighbour]]:
    """The ``k`` tokens of ``model``'s input-embedding table (V, H) closest (cosine) to each of ``token_ids``,
    each token itself left out, named by ``tokenizer``; one matrix product.

    Example:
        >>> from sdclip.testing_mmdit import tiny_t5_encoder, tiny_t5_tokenizer
        >>> tokenizer = tiny_t5_tokenizer()
        >>> rows = nearest_in_table(tiny_t5_encoder(vocab_size=len(tokenizer)), tokenizer, [12], k=2)
        >>> len(rows[0]), 12 in [n.id for n in rows[0]]
        (2, False)
    """
    import torch

    if not isinstance(k, int) or k < 0:
        raise PromptError(f"k: expected an integer >= 0, got {k!r}")
    if not token_ids or k == 0:
        return [[] for _ in token_ids]
    with torch.inference_mode():
        table = torch.nn.functional.normalize(model.get_input_embeddings().weight.float(), dim=-1)  # (V, H)
        ids = torch.tensor(token_ids, device=table.device)
        sims = table[ids] @ table.T  # (T, V)
        sims[torch.arange(len(token_ids)), ids] = float("-inf")  # a token is not its own neighbour
        values, indices = sims.topk(min(k, table.shape[0] - 1), dim=-1)  # (T, k)
    names = tokenizer.convert_ids_to_tokens(indices.flatten().tolist())
    rows, flat = [], list(zip(names, indices.flatten().tolist(), values.flatten().tolist()))
    for start in range(0, len(flat), indices.shape[1]):
        rows.append([Neighbour(text, int(i), float(v)) for text, i, v in flat[start : start + indices.shape[1]]])
    return rows


def align_tokens(
    kept_a: list[tuple[PromptToken, int]], kept_b: list[tuple[PromptToken, int]], a: torch.Tensor, b: torch.Tensor
) -> list[AlignedToken]:
    """The tokens of two prompts (``(token, row)`` pairs) aligned by difflib over their ids; ``a`` / ``b`` are the
    prompts' rows ``(S, H)``: a pair's cosine is between its two rows.

    Example:
        >>> import torch
        >>> from sdclip.prompts.tokens import PromptToken
        >>> cat, dog = PromptToken("cat", 1, 0, 0), PromptToken("dog", 2, 0, 0)
        >>> rows = align_tokens([(cat, 0)], [(dog, 0)], torch.ones(1, 2), torch.ones(1, 2))  # (token, row); rows
        >>> [(r.op, r.text_a, r.text_b, round(r.cosine, 4)) for r in rows]
        [('replace', 'cat', 'dog', 1.0)]
    """

    def row(op: str, i: int | None, j: int | None) -> AlignedToken:
        ta, ia = kept_a[i] if i is not None else (None, None)
        tb, ib = kept_b[j] if j is not None else (None, None)
        pair = float(cosine(a[ia], b[ib])) if ia is not None and ib is not None else None
        if op == "equal" and ta.weight != tb.weight:
            op = "reweight"
        return AlignedToken(op, ta and ta.text, tb and tb.text, ia, ib, ta and ta.weight, tb and tb.weight, pair)

    ids_a, ids_b = [t.id for t, _ in kept_a], [t.id for t, _ in kept_b]
    alignment = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ids_a, ids_b, autojunk=False).get_opcodes():
        for n in range(max(i2 - i1, j2 - j1)):
            i = i1 + n if i1 + n < i2 else None
            j = j1 + n if j1 + n < j2 else None
            kind = op if i is not None and j is not None else ("delete" if j is None else "insert")
            alignment.append(row(kind, i, j))
    return alignment


def token_stats(listed: list[PromptToken], rows: list[int], norms: list[float], cos_reference: list[float],
                cos_empty: list[float], neighbours: list[list[Neighbour]]) -> list[TokenStats]:
    """One ``TokenStats`` per listed token: a truncated token gets none of the numbers, the others take the
    next entry of ``rows`` (its row in the hidden states), ``norms``, the cosines and ``neighbours`` in order.

    Example:
        >>> token = PromptToken("cat</w>", 2368, 0, 1, 1.0, False)
        >>> token_stats([token], [1], [2.0], [0.5], [0.25], [[]])[0].norm
        2.0
    """
    stats, seen = [], iter(range(len(rows)))
    for t in listed:
        if t.truncated:
            stats.append(TokenStats(t.text, t.id, t.chunk, t.position, t.weight, True))
            continue
        i = next(seen)
        stats.append(TokenStats(t.text, t.id, t.chunk, t.position, t.weight, False, rows[i], norms[i],
                                cos_reference[i], cos_empty[i], neighbours[i]))  # fmt: skip
    return stats
