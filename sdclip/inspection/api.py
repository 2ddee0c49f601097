"""What the text encoder makes of a prompt: tokens, per-token statistics, prompt comparisons.

Built on ``TextConditioner.encode``: the tensors a pipeline gets and the token chunks they were built
from (``Conditioning.prompt_chunks``), so what is inspected is exactly what conditions the UNet. Results are
plain dataclasses with ``to_dict()`` / ``to_rows()`` that also print as rich tables
(``rich.print(report)``); ``sdclip.plots`` draws them.

Positions: a prompt of k chunks is encoded to ``prompt_embeds`` of shape (1, 77·k, H); the token at
``(chunk, position)`` is row ``chunk * 77 + position``, called its ``index`` here.

The examples use ``cond``, a ``TextConditioner`` (``TextConditioner.from_pretrained(...)``); the tests
run them on a tiny random one, so they show structure, not values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .results import (
    AlignedToken,
    Comparison,
    EmbeddingReport,
    Neighbour,
    SimilarityMatrix,
    TokenList,
    TokenStats,
)
from ..errors import PromptError, PromptTypeError
from ..prompts.tokens import PromptToken, prompt_tokens
from .flux import flux_compare, flux_embedding_report, flux_token_similarity, is_flux
from .rows import align_tokens, nearest_in_table, token_stats
from .rows import cosine as _cosine

if TYPE_CHECKING:
    import torch

    from ..conditioning.conditioner import TextConditioner

__all__ = [
    "AlignedToken", "Comparison", "EmbeddingReport", "Neighbour", "SimilarityMatrix", "TokenList", "TokenStats",
    "check_options", "compare", "embedding_report", "nearest_tokens", "similarity_matrix", "token_similarity",
    "tokens",
]  # fmt: skip



# -- helpers -------------------------------------------------------------------------------------


def _check_prompt(prompt: Any, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise PromptTypeError(f"{name}: expected a string, got {type(prompt).__name__}")
    return prompt


def _options(syntax: str, truncate: bool, weighting: str | None = None) -> dict[str, Any]:
    """The prompt options for ``cond.parse`` (syntax, truncate) / ``cond.encode`` (and weighting), checked."""
    check_options(syntax, weighting)
    return {"syntax": syntax, "truncate": truncate} | ({"weighting": weighting} if weighting is not None else {})


def check_options(syntax: str = "plain", weighting: str | None = None) -> None:
    """Raise ``PromptError`` for an unknown prompt syntax or weighting (before any model is loaded).

    Example:
        >>> check_options("a1111")
        >>> check_options("markdown")
        Traceback (most recent call last):
        ...
        sdclip.errors.PromptError: syntax: expected one of 'plain', 'a1111', 'comfy', 'compel', got 'markdown'
    """
    from ..conditioning.settings import resolve_settings

    resolve_settings(None, syntax, True, weighting)


def _kept(tokens: list[PromptToken], chunk_length: int) -> list[tuple[PromptToken, int]]:
    """The tokens the model sees, with their row in ``prompt_embeds``."""
    return [(t, t.chunk * chunk_length + t.position) for t in tokens if not t.truncated]


def _encoded_tokens(cond: TextConditioner, result: Any) -> list[PromptToken]:
    """The first row's tokens, from the chunks the conditioning was built from (no second parse)."""
    return prompt_tokens(result.prompt_chunks[0], cond.tokenizer)


# -- API -----------------------------------------------------------------------------------------


def tokens(prompt: str, source: Any = None, *, syntax: str = "plain", truncate: bool = True) -> TokenList:
    """How ``prompt`` tokenizes: text, id, chunk, position, weight and truncation of each token.

    Needs no weights: ``source`` is a ``TextConditioner``, a CLIP tokenizer, a model source (whose
    tokenizer is read, not its weights), or None for the tokenizer that ships with sdclip
    (clip-vit-large-patch14's). For SD3 / Flux (a conditioner or a pipeline folder) T5's tokens are
    listed too, with T5's ids, up to the pipeline's default ``max_sequence_length`` (256 / 512).

    Args:
        prompt: the prompt.
        source: a ``TextConditioner``, a ``transformers`` CLIP tokenizer, a model folder / hub id, or None.
        syntax: ``"plain"``, ``"a1111"`` or ``"comfy"`` (weights and ``BREAK``).
        truncate: cut at the 77-token limit (True, as diffusers) or split into chunks (False).

    Returns:
        A ``TokenList``; padding is not listed, truncated tokens are, flagged.

    Raises:
        PromptTypeError: ``prompt`` is not a string.
        PromptError: unknown ``syntax``, or one this conditioner cannot read.

    Example:
        >>> from sdclip.inspection import tokens
        >>> [(t.text, t.id, t.position) for t in tokens("a cat").tokens]
        [('<|startoftext|>', 49406, 0), ('a</w>', 320, 1), ('cat</w>', 2368, 2), ('<|endoftext|>', 49407, 3)]
    """
    import os

    from ..conditioning.conditioner import TextConditioner
    from ..conditioning.mmdit import DEFAULT_MAX_SEQUENCE_LENGTH
    from ..conditioning.t5 import list_t5_tokens, t5_tokens
    from ..models.loading import tokenizer_for_source
    from ..models.mmdit import t5_tokenizer_for_source
    from ..prompts.tokens import tokenize_prompt

    _check_prompt(prompt)
    options = _options(syntax, truncate)
    t5 = None
    if isinstance(source, TextConditioner):
        parsed = source.parse(prompt, **options)
        t5 = (source.t5.tokenizer, source.family) if getattr(source, "t5", None) is not None else None
    else:
        path = source is not None and isinstance(source, (str, os.PathLike))
        tokenizer = tokenizer_for_source(source) if source is None or path else source
        parsed = tokenize_prompt(prompt, tokenizer, **options)
        t5 = t5_tokenizer_for_source(source) if path else None
    t5_listed = [] if t5 is None else list_t5_tokens(
        t5_tokens(prompt, t5[0], syntax=syntax, max_length=DEFAULT_MAX_SEQUENCE_LENGTH[t5[1]]), t5[0])
    return TokenList(prompt=prompt, syntax=syntax, tokens=list(parsed), t5_tokens=t5_listed)


def nearest_tokens(cond: TextConditioner, token_ids: list[int], *, k: int = 5) -> list[list[Neighbour]]:
    """The ``k`` vocabulary tokens whose input embeddings are closest (cosine) to each token's.

    One matrix product over the first encoder's token embedding table (V, H); each token itself is
    left out. A learned (textual-inversion) token added to the tokenizer and table is looked up like
    any other: its neighbours tell what it resembles to the model.

    Args:
        cond: the conditioner whose first text encoder's embedding table is searched.
        token_ids: the tokens to look up.
        k: neighbours per token.

    Returns:
        One list of ``k`` ``Neighbour`` per token id, closest first.

    Example:
        >>> from sdclip.inspection import nearest_tokens
        >>> cat = cond.tokenizer.convert_tokens_to_ids("cat</w>")
        >>> rows = nearest_tokens(cond, [cat], k=3)
        >>> len(rows[0]), rows[0][0].cosine >= rows[0][2].cosine, cat in [n.id for n in rows[0]]
        (3, True, False)
    """
    return nearest_in_table(cond.text_encoder, cond.tokenizer, token_ids, k=k)


def embedding_report(
    cond: TextConditioner,
    prompt: str,
    *,
    k: int = 5,
    syntax: str = "plain",
    truncate: bool = True,
    weighting: str | None = None,
    clip_skip: int | None = None,
) -> EmbeddingReport:
    """Per-token statistics of a prompt's conditioning: norm, cosine to pooled and to the empty prompt, neighbours.

    For each token the model sees: the L2 norm of its row of ``prompt_embeds``; its cosine to the
    pooled reference (see ``EmbeddingReport.pooled_reference``); its cosine to the same position in
    the empty prompt's encoding (near 1: the token barely changes the conditioning there); and the
    ``k`` vocabulary tokens nearest to its input embedding (``nearest_tokens``).

    SD3: CLIP's rows (T5's follow them). Flux, whose ``prompt_embeds`` are all T5's: one entry per T5 token with
    T5's own strings and ids (position = row), cosines to T5's ``</s>`` row (``pooled_reference`` is
    ``"t5_eos_hidden_state"``: CLIP-L's pooled vector is another space), neighbours from T5's embedding table
    (see ``sdclip.inspection.flux``).

    Args:
        cond: the text conditioner.
        prompt: the prompt.
        k: nearest vocabulary tokens per token (0 for none).
        syntax, truncate, weighting, clip_skip: passed to ``cond.encode`` when not the default.

    Returns:
        An ``EmbeddingReport``.

    Raises:
        PromptTypeError: ``prompt`` is not a string.
        PromptError: unknown ``syntax`` / ``weighting``, or one this conditioner cannot read.

    Example:
        >>> from sdclip.inspection import embedding_report
        >>> report = embedding_report(cond, "a photo of a cat", k=3)
        >>> [t.text for t in report.tokens]
        ['<|startoftext|>', 'a</w>', 'photo</w>', 'of</w>', 'a</w>', 'cat</w>', '<|endoftext|>']
        >>> report.pooled_reference, round(report.tokens[0].cos_empty, 4), len(report.tokens[-1].nearest)
        ('pooled', 1.0, 3)
    """
    import torch

    _check_prompt(prompt)
    options = _options(syntax, truncate, weighting)
    if clip_skip is not None:
        options["clip_skip"] = clip_skip
    if is_flux(cond):
        return flux_embedding_report(cond, prompt, k=k, options=options)
    result = cond.encode(prompt, "", **options)  # the empty prompt, encoded in the same call (not SDXL's zeros)
    parsed = _encoded_tokens(cond, result)
    chunk_length = cond.tokenizer.model_max_length
    clip_rows = result.prompt_ids.shape[1]  # SD3: T5's rows follow CLIP's
    hidden, empty = result.prompt_embeds[0, :clip_rows].float(), result.negative_prompt_embeds[0, :chunk_length].float()
    ids = result.prompt_ids[0]
    kept = _kept(parsed, chunk_length)

    projected = hasattr(cond.encoders[-1].model, "text_projection") or len(cond.encoders) > 1
    if not projected and not clip_skip and result.pooled_prompt_embeds.shape[-1] == hidden.shape[-1]:
        reference, reference_name = result.pooled_prompt_embeds[0].float(), "pooled"
    else:
        eos = int((ids[:chunk_length] == cond.tokenizer.eos_token_id).int().argmax())
        reference, reference_name = hidden[eos], "eos_hidden_state"

    rows = torch.tensor([index for _, index in kept], dtype=torch.long, device=hidden.device)
    with torch.inference_mode():
        states = hidden[rows]  # (T, H)
        norms = states.norm(dim=-1).tolist()
        cos_pooled = _cosine(states, reference[None]).tolist()
        cos_empty = _cosine(states, empty[rows % chunk_length]).tolist()
    neighbours = nearest_tokens(cond, [token.id for token, _ in kept], k=k)

    report_tokens = token_stats(parsed, [index for _, index in kept], norms, cos_pooled, cos_empty, neighbours)
    return EmbeddingReport(prompt, report_tokens, reference_name, hidden.shape[-1], hidden.shape[0] // chunk_length)


def token_similarity(
    cond: TextConditioner,
    prompt: str,
    *,
    syntax: str = "plain",
    truncate: bool = True,
    weighting: str | None = None,
) -> SimilarityMatrix:
    """Cosine between the hidden states of every pair of tokens the model sees in one prompt.

    Labels are the token texts (``</w>`` dropped), prefixed with the chunk when there are several. Flux: T5's
    rows and token strings.

    Example:
        >>> from sdclip.inspection import token_similarity
        >>> matrix = token_similarity(cond, "a cat")
        >>> matrix.labels
        ['<|startoftext|>', 'a', 'cat', '<|endoftext|>']
    """
    import torch

    _check_prompt(prompt)
    if is_flux(cond):  # T5's rows, labelled with T5's token strings
        return flux_token_similarity(cond, prompt, options=_options(syntax, truncate, weighting))
    result = cond.encode(prompt, **_options(syntax, truncate, weighting))
    chunk_length = cond.tokenizer.model_max_length
    kept = _kept(_encoded_tokens(cond, result), chunk_length)
    with torch.inference_mode():
        states = torch.nn.functional.normalize(result.prompt_embeds[0, [i for _, i in kept]].float(), dim=-1)
        values = (states @ states.T).tolist()  # (T, T)
    several = len({token.chunk for token, _ in kept}) > 1
    labels = [(f"{t.chunk}:" if several else "") + t.text.removesuffix("</w>") for t, _ in kept]
    return SimilarityMatrix(labels, values, "tokens", title=prompt)


def compare(
    cond: TextConditioner,
    prompt_a: str,
    prompt_b: str,
    *,
    syntax: str = "plain",
    truncate: bool = True,
    weighting: str | None = None,
) -> Comparison:
    """How close two prompts' conditionings are, overall and token by token.

    Args:
        cond: the text conditioner.
        prompt_a, prompt_b: the prompts.
        syntax, truncate, weighting: passed on when not the default.

    Returns:
        A ``Comparison``: pooled cosine, mean and per-position cosine of ``prompt_embeds``, and the
        token alignment with how far each paired token's hidden state moved. SD3: CLIP's rows. Flux: the pooled
        cosine is CLIP-L's pooled vectors' (what the pipeline pools), positions and alignment are T5's rows
        and tokens, positions up to the longer prompt's ``</s>`` (not the shared padding).

    Example:
        >>> from sdclip.inspection import compare
        >>> result = compare(cond, "a photo of a cat", "a photo of a dog")
        >>> [(r.op, r.text_a, r.text_b) for r in result.alignment if r.op != "equal"]
        [('replace', 'cat</w>', 'dog</w>')]
    """
    import torch

    _check_prompt(prompt_a, "prompt_a")
    _check_prompt(prompt_b, "prompt_b")
    encode_options = _options(syntax, truncate, weighting)
    chunk_length = cond.tokenizer.model_max_length
    if is_flux(cond):
        return flux_compare(cond, prompt_a, prompt_b, options=encode_options)
    encoded = [cond.encode(p, **encode_options) for p in (prompt_a, prompt_b)]
    kept = [_kept(_encoded_tokens(cond, result), chunk_length) for result in encoded]
    a, b = (result.prompt_embeds[0, : result.prompt_ids.shape[1]].float() for result in encoded)
    length = min(a.shape[0], b.shape[0])
    with torch.inference_mode():
        pooled = float(_cosine(encoded[0].pooled_prompt_embeds[0], encoded[1].pooled_prompt_embeds[0]))
        position_cosine = _cosine(a[:length], b[:length]).tolist()

    return Comparison(prompt_a, prompt_b, pooled, sum(position_cosine) / len(position_cosine), position_cosine,
                      align_tokens(kept[0], kept[1], a, b))  # fmt: skip


def similarity_matrix(
    cond: TextConditioner,
    prompts: list[str],
    *,
    syntax: str = "plain",
    truncate: bool = True,
    weighting: str | None = None,
) -> SimilarityMatrix:
    """Cosine between the pooled embeddings of every pair of prompts, encoded as one batch.

    Example:
        >>> from sdclip.inspection import similarity_matrix
        >>> matrix = similarity_matrix(cond, ["a cat", "a dog", "a car"])
        >>> len(matrix.values), round(matrix.values[0][0], 4), matrix.values[0][1] == matrix.values[1][0]
        (3, 1.0, True)
    """
    import torch

    if isinstance(prompts, str) or not prompts:
        raise PromptError("prompts: expected a non-empty list of prompts")
    for i, prompt in enumerate(prompts):
        _check_prompt(prompt, f"prompts[{i}]")
    result = cond.encode(list(prompts), **_options(syntax, truncate, weighting))
    with torch.inference_mode():
        pooled = torch.nn.functional.normalize(result.pooled_prompt_embeds.float(), dim=-1)  # (N, D)
        values = (pooled @ pooled.T).clamp(-1.0, 1.0).tolist()
    return SimilarityMatrix(list(prompts), values, "prompts", title="pooled cosine")
