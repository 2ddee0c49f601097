"""The results of ``sdclip.inspection``: plain dataclasses with ``to_dict()`` / ``to_rows()``, shown as rich tables.

Every result prints as a table with ``rich.print(result)`` (``__rich__``) or gives it with ``to_table()``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..prompts.tokens import PromptToken


class Renderable:
    """Mixin: ``rich.print(result)`` and ``Console.print(result)`` show ``result.to_table()``."""

    def to_table(self) -> Any:  # pragma: no cover - every result overrides it
        raise NotImplementedError

    def __rich__(self) -> Any:
        return self.to_table()


def _table(title: str, columns: list[tuple[str, str]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name, justify in columns:
        table.add_column(name, justify=justify)
    return table


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _weight(value: float | None) -> str:
    if value is None:
        return ""
    text = f"{value:g}"
    return text if value == 1.0 else f"[bold]{text}[/bold]"


def _short(prompt: str, limit: int = 60) -> str:
    return repr(prompt if len(prompt) <= limit else prompt[: limit - 3] + "...")


def _where(chunk: int, position: int) -> str:
    return f"{chunk}:{position}"


def _token_table(result: Any) -> Any:
    """chunk:position, token, id, weight, and a red mark on truncated tokens."""
    from rich.markup import escape

    cut = len(result.truncated)
    seen = len(result.tokens) - cut
    title = f"{_short(result.prompt)} ({result.syntax}): {seen} tokens" + (f", {cut} truncated (dropped)" if cut else "")
    table = _table(escape(title), [("chunk:pos", "right"), ("token", "left"), ("id", "right"), ("weight", "right"),
                                   ("", "left")])  # fmt: skip
    for token in result.tokens:
        table.add_row(_where(token.chunk, token.position), escape(token.text), str(token.id), _weight(token.weight),
                      "[red]truncated[/red]" if token.truncated else "")  # fmt: skip
    for token in getattr(result, "t5_tokens", ()):  # SD3 / Flux: T5's tokens after CLIP's
        table.add_row(f"t5:{token.position}", escape(token.text), str(token.id), _weight(token.weight),
                      "[red]truncated[/red]" if token.truncated else "")  # fmt: skip
    return table


def _report_table(report: Any) -> Any:
    """One row per token: weight, norm, cosine to pooled, change from the empty prompt, neighbours."""
    from rich.markup import escape

    pooled = {"pooled": "pooled", "t5_eos_hidden_state": "T5's </s>"}.get(report.pooled_reference,
                                                                         "EOS (unprojected pooled)")
    title = f"{_short(report.prompt)}: {report.n_chunks} chunk(s), hidden size {report.hidden_size}; cos to {pooled}"
    table = _table(escape(title), [("chunk:pos", "right"), ("token", "left"), ("id", "right"), ("weight", "right"),
                                   ("norm", "right"), ("cos pooled", "right"), ("1-cos empty", "right"),
                                   ("nearest vocabulary tokens", "left")])  # fmt: skip
    for t in report.tokens:
        if t.truncated:
            table.add_row(_where(t.chunk, t.position), escape(t.text), str(t.id), _weight(t.weight),
                          "-", "-", "-", "[red]truncated (not seen)[/red]")  # fmt: skip
            continue
        nearest = "  ".join(f"{escape(n.text.removesuffix('</w>'))} {n.cosine:.2f}" for n in t.nearest)
        table.add_row(_where(t.chunk, t.position), escape(t.text), str(t.id), _weight(t.weight),
                      _number(t.norm, 2), _number(t.cos_pooled), _number(t.change_from_empty), nearest)  # fmt: skip
    return table


def _comparison_table(result: Any) -> Any:
    """The summary in the title; one row per aligned token pair, differences highlighted."""
    from rich.markup import escape

    title = (f"{_short(result.prompt_a, 40)} vs {_short(result.prompt_b, 40)}: pooled cosine {result.pooled_cosine:.4f}, "
             f"mean per-position cosine {result.mean_position_cosine:.4f}")  # fmt: skip
    table = _table(escape(title), [("op", "left"), ("a", "left"), ("b", "left"), ("row a", "right"),
                                   ("row b", "right"), ("weight a", "right"), ("weight b", "right"),
                                   ("cosine", "right")])  # fmt: skip
    styles = {"equal": "", "reweight": "yellow", "replace": "magenta", "delete": "red", "insert": "green"}
    for r in result.alignment:
        style = styles.get(r.op, "")
        op = f"[{style}]{r.op}[/{style}]" if style else r.op
        table.add_row(op, escape(r.text_a or ""), escape(r.text_b or ""),
                      "" if r.index_a is None else str(r.index_a), "" if r.index_b is None else str(r.index_b),
                      _weight(r.weight_a), _weight(r.weight_b), _number(r.cosine))  # fmt: skip
    return table


def _matrix_table(matrix: Any) -> Any:
    """The cosine matrix with numbered rows; the labels in the first column."""
    from rich.markup import escape

    table = _table(escape(f"{matrix.kind}: {matrix.title}"), [("#", "right"), (matrix.kind, "left")]
                   + [(str(i), "right") for i in range(len(matrix.labels))])  # fmt: skip
    for i, (label, row) in enumerate(zip(matrix.labels, matrix.values)):
        table.add_row(str(i), escape(label), *(f"{v:.3f}" for v in row))
    return table


@dataclass
class TokenList(Renderable):
    """The tokens of one prompt (``tokens()``).

    Attributes:
        prompt: the prompt text.
        syntax: the prompt syntax it was parsed with.
        tokens: BOS, the prompt's tokens and EOS of each chunk, then any truncated tokens.
        t5_tokens: SD3 / Flux: T5's tokens (its own ids; ``</s>`` ends them; then any truncated ones).
    """

    prompt: str
    syntax: str
    tokens: list[PromptToken]
    t5_tokens: list[PromptToken] = field(default_factory=list)

    @property
    def truncated(self) -> list[PromptToken]:
        """The tokens the model never sees."""
        return [token for token in self.tokens if token.truncated]

    def to_dict(self) -> dict[str, Any]:
        """The result as nested plain data (JSON-ready)."""
        out = {"prompt": self.prompt, "syntax": self.syntax, "tokens": [t.to_dict() for t in self.tokens]}
        return {**out, "t5_tokens": [t.to_dict() for t in self.t5_tokens]} if self.t5_tokens else out

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per row, for CSV or a data frame (with ``encoder``: ``clip`` or ``t5`` when T5 is listed)."""
        if not self.t5_tokens:
            return [t.to_dict() for t in self.tokens]
        return [{"encoder": name, **t.to_dict()} for name, listed in (("clip", self.tokens), ("t5", self.t5_tokens))
                for t in listed]  # fmt: skip

    def to_table(self) -> Any:
        """The result as a ``rich.table.Table``."""
        return _token_table(self)


@dataclass
class Neighbour:
    """A vocabulary token near another one: its text, id and cosine over the token embedding table."""

    text: str
    id: int
    cosine: float


@dataclass
class TokenStats:
    """One token of an ``EmbeddingReport``; the statistics are None for truncated tokens.

    Attributes:
        text, id, chunk, position, weight, truncated: as in ``PromptToken``.
        index: its row in ``prompt_embeds`` (``chunk * 77 + position``), None when truncated.
        norm: L2 norm of its hidden state.
        cos_pooled: cosine of its hidden state to the pooled reference (see ``EmbeddingReport``).
        cos_empty: cosine to the hidden state at the same position of the empty prompt; 1 - this is
            how much the token changes the conditioning there.
        nearest: the k vocabulary tokens whose input embeddings are closest to its own (itself left out).
    """

    text: str
    id: int
    chunk: int
    position: int
    weight: float
    truncated: bool
    index: int | None = None
    norm: float | None = None
    cos_pooled: float | None = None
    cos_empty: float | None = None
    nearest: list[Neighbour] = field(default_factory=list)

    @property
    def change_from_empty(self) -> float | None:
        """``1 - cos_empty``: 0 where the token leaves the empty prompt's conditioning unchanged."""
        return None if self.cos_empty is None else 1.0 - self.cos_empty


@dataclass
class EmbeddingReport(Renderable):
    """Per-token statistics of one encoded prompt (``embedding_report()``).

    Attributes:
        prompt: the prompt text.
        tokens: one entry per token, truncated ones included (with no statistics).
        pooled_reference: what ``cos_pooled`` measures against: ``"pooled"`` is
            ``pooled_prompt_embeds`` itself (a model without text projection, no clip skip: it is
            the final layer's EOS hidden state); ``"eos_hidden_state"`` is the EOS row of chunk 0 of
            ``prompt_embeds``, the pooled embedding before its projection, used when the pooled lives
            in a projected space of another meaning (CLIPTextModelWithProjection, SDXL) or another
            layer (clip skip); ``"t5_eos_hidden_state"`` (Flux, whose rows are T5's) is T5's ``</s>`` row.
        hidden_size: width H of the hidden states.
        n_chunks: k, the number of 77-token chunks (Flux's T5 rows: 1, or compel's ``.and()`` windows).
    """

    prompt: str
    tokens: list[TokenStats]
    pooled_reference: str
    hidden_size: int
    n_chunks: int

    def to_dict(self) -> dict[str, Any]:
        """The result as nested plain data (JSON-ready)."""
        return asdict(self)

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per row, for CSV or a data frame."""
        rows = []
        for token in self.tokens:
            row = {k: v for k, v in asdict(token).items() if k != "nearest"}
            row["nearest"] = " ".join(f"{n.text}({n.cosine:.3f})" for n in token.nearest)
            rows.append(row)
        return rows

    def to_table(self) -> Any:
        """The result as a ``rich.table.Table``."""
        return _report_table(self)


@dataclass
class AlignedToken:
    """One row of a ``Comparison``'s token alignment.

    Attributes:
        op: ``"equal"``, ``"reweight"`` (same token, other weight), ``"replace"``, ``"delete"`` (only
            in prompt a) or ``"insert"`` (only in prompt b).
        text_a, text_b: the token in each prompt (None where absent).
        index_a, index_b: its row in each prompt's ``prompt_embeds``.
        weight_a, weight_b: its weight in each prompt.
        cosine: cosine between the two hidden states (how far the token moved), None unless paired.
    """

    op: str
    text_a: str | None
    text_b: str | None
    index_a: int | None
    index_b: int | None
    weight_a: float | None
    weight_b: float | None
    cosine: float | None


@dataclass
class Comparison(Renderable):
    """How close two prompts' conditionings are (``compare()``).

    Attributes:
        prompt_a, prompt_b: the prompts.
        pooled_cosine: cosine of the two ``pooled_prompt_embeds``.
        mean_position_cosine: mean over positions of the cosine between ``prompt_embeds`` rows at the
            same position (all 77·k positions both have, padding included: the UNet attends to all).
        position_cosine: that cosine, position by position.
        alignment: the tokens of both prompts aligned (difflib over token ids), with their movement.
    """

    prompt_a: str
    prompt_b: str
    pooled_cosine: float
    mean_position_cosine: float
    position_cosine: list[float]
    alignment: list[AlignedToken]

    def to_dict(self) -> dict[str, Any]:
        """The result as nested plain data (JSON-ready)."""
        return asdict(self)

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per row, for CSV or a data frame."""
        return [asdict(row) for row in self.alignment]

    def to_table(self) -> Any:
        """The result as a ``rich.table.Table``."""
        return _comparison_table(self)


@dataclass
class SimilarityMatrix(Renderable):
    """Cosines between labelled vectors: prompts (``similarity_matrix``) or tokens (``token_similarity``).

    Attributes:
        labels: one label per row and column.
        values: the symmetric matrix, ``values[i][j]`` = cosine(i, j).
        kind: ``"prompts"`` or ``"tokens"``.
        title: what was compared.
    """

    labels: list[str]
    values: list[list[float]]
    kind: str
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The result as nested plain data (JSON-ready)."""
        return asdict(self)

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per row, for CSV or a data frame."""
        return [
            {"a": a, "b": b, "cosine": self.values[i][j]}
            for i, a in enumerate(self.labels)
            for j, b in enumerate(self.labels)
        ]

    def to_table(self) -> Any:
        """The result as a ``rich.table.Table``."""
        return _matrix_table(self)
