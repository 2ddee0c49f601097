"""Inspection of Flux's conditioning, whose ``prompt_embeds`` are all T5's: one row per T5 token.

The same result types as for CLIP's rows (``EmbeddingReport``, ``Comparison``, ``SimilarityMatrix``), read the
way Flux uses its tensors:

- per-token statistics (norm, cosine to the empty text at the same row, neighbours) are over T5's rows of
  ``prompt_embeds``, labelled with T5's own token strings and ids (``list_t5_tokens``: chunk 0, position = row;
  compel's ``.and()`` gives one ``max_sequence_length`` window per part, chunk k, row ``k * window + position``);
  neighbours come from T5's input-embedding table;
- ``cos_pooled`` measures against T5's ``</s>`` row (``pooled_reference="t5_eos_hidden_state"``): CLIP-L's pooled
  vector lives in another space (768 wide, not T5's), and T5 has no pooled output of its own;
- ``Comparison.pooled_cosine`` is the cosine of the two CLIP-L pooled vectors (``pooled_prompt_embeds``), the
  vector the pipeline pools; the per-position cosines run over T5's rows up to the longer prompt's (last) ``</s>``
  (the padding after it is the same ``<pad>`` for both and would swamp the mean at 512 rows), within the rows
  both prompts have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..prompts.tokens import PromptToken
from .results import Comparison, EmbeddingReport, SimilarityMatrix
from .rows import align_tokens, cosine, nearest_in_table, token_stats

if TYPE_CHECKING:
    from ..conditioning.types import Conditioning

__all__ = ["T5_REFERENCE", "flux_compare", "flux_embedding_report", "flux_token_similarity", "is_flux"]

T5_REFERENCE = "t5_eos_hidden_state"
"""``EmbeddingReport.pooled_reference`` of a Flux report: T5's ``</s>`` row of ``prompt_embeds``."""


def is_flux(cond: Any) -> bool:
    """Whether ``cond``'s ``prompt_embeds`` are T5's rows (Flux).

    Example:
        >>> is_flux(cond)  # an SD 1.x conditioner
        False
    """
    return getattr(cond, "family", None) == "flux"


def _t5_tokens(cond: Any, result: Conditioning) -> list[PromptToken]:
    """The first prompt's T5 tokens (``</s>`` included, padding not, truncated ones flagged) from the encoding."""
    from ..conditioning.t5 import list_t5_tokens  # no import-time work: conditioning loads on first use

    return list_t5_tokens(result.t5_tokens[0], cond.t5.tokenizer)


def _kept(listed: list[PromptToken], tokens: Any) -> list[tuple[PromptToken, int]]:
    """The tokens T5 sees with their row: ``window * window length + position`` (compel's ``.and()`` gives one
    ``max_sequence_length`` window per part, listed as chunks 0, 1, ...; otherwise one window)."""
    width = len(tokens.windows[0].ids) if tokens.windows else len(tokens.ids)
    return [(t, t.chunk * width + t.position) for t in listed if not t.truncated]


def _rows_seen(tokens: Any) -> int:
    """How many rows reach the last window's ``</s>`` (padding after it not counted)."""
    if not tokens.windows:
        return tokens.length
    return len(tokens.ids) - len(tokens.windows[-1].ids) + tokens.windows[-1].length


def flux_embedding_report(cond: Any, prompt: str, *, k: int, options: dict[str, Any]) -> EmbeddingReport:
    """``embedding_report`` for Flux (see the module): T5's rows, their ``</s>`` as the reference.

    Example:
        >>> report = flux_embedding_report(flux_cond, "a cat", k=1, options={})  # flux_cond: a tiny Flux conditioner
        >>> [t.text for t in report.tokens], report.pooled_reference, report.hidden_size
        (['▁a', '▁cat', '</s>'], 't5_eos_hidden_state', 384)
    """
    import torch

    result = cond.encode(prompt, "", **options)  # the empty text as the negative: its rows in the same call
    listed = _t5_tokens(cond, result)
    kept = _kept(listed, result.t5_tokens[0])
    hidden, empty = result.prompt_embeds[0].float(), result.negative_prompt_embeds[0].float()  # (L, W)
    eos = result.t5_tokens[0].length - 1  # </s> closes the (first window's) kept tokens
    row_indices = [row for _, row in kept]
    rows = torch.tensor(row_indices, dtype=torch.long, device=hidden.device)
    with torch.inference_mode():
        states = hidden[rows]  # (T, W)
        norms = states.norm(dim=-1).tolist()
        cos_eos = cosine(states, hidden[eos][None]).tolist()
        cos_empty = cosine(states, empty[rows]).tolist()
    neighbours = nearest_in_table(cond.t5.model, cond.t5.tokenizer, [t.id for t, _ in kept], k=k)
    stats = token_stats(listed, row_indices, norms, cos_eos, cos_empty, neighbours)
    return EmbeddingReport(prompt, stats, T5_REFERENCE, hidden.shape[-1], max(1, len(result.t5_tokens[0].windows)))


def flux_token_similarity(cond: Any, prompt: str, *, options: dict[str, Any]) -> SimilarityMatrix:
    """``token_similarity`` for Flux: cosine between T5's rows of every pair of T5 tokens, labelled with T5's strings.

    Example:
        >>> flux_token_similarity(flux_cond, "a cat", options={}).labels
        ['▁a', '▁cat', '</s>']
    """
    import torch

    result = cond.encode(prompt, **options)
    kept = _kept(_t5_tokens(cond, result), result.t5_tokens[0])
    with torch.inference_mode():
        states = torch.nn.functional.normalize(result.prompt_embeds[0, [row for _, row in kept]].float(), dim=-1)
        values = (states @ states.T).tolist()  # (T, T)
    return SimilarityMatrix([t.text for t, _ in kept], values, "tokens", title=prompt)


def flux_compare(cond: Any, prompt_a: str, prompt_b: str, *, options: dict[str, Any]) -> Comparison:
    """``compare`` for Flux (see the module): CLIP-L pooled cosine; T5's rows position by position and aligned.

    Example:
        >>> result = flux_compare(flux_cond, "a cat", "a dog", options={})
        >>> [(r.op, r.text_a, r.text_b) for r in result.alignment], len(result.position_cosine)
        ([('equal', '▁a', '▁a'), ('replace', '▁cat', '▁dog'), ('equal', '</s>', '</s>')], 3)
    """
    import torch

    encoded = [cond.encode(p, **options) for p in (prompt_a, prompt_b)]
    kept = [_kept(_t5_tokens(cond, result), result.t5_tokens[0]) for result in encoded]
    a, b = (result.prompt_embeds[0].float() for result in encoded)  # (L, W)
    length = min(max(_rows_seen(result.t5_tokens[0]) for result in encoded), a.shape[0], b.shape[0])
    with torch.inference_mode():
        pooled = float(cosine(encoded[0].pooled_prompt_embeds[0], encoded[1].pooled_prompt_embeds[0]))
        position_cosine = cosine(a[:length], b[:length]).tolist()
    return Comparison(prompt_a, prompt_b, pooled, sum(position_cosine) / len(position_cosine), position_cosine,
                      align_tokens(kept[0], kept[1], a, b))  # fmt: skip
