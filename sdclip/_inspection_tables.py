"""Rich tables for ``sdclip.inspection``'s results (kept apart so the API module stays about the math)."""

from __future__ import annotations

from typing import Any


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


def token_table(result: Any) -> Any:
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
    return table


def report_table(report: Any) -> Any:
    """One row per token: weight, norm, cosine to pooled, change from the empty prompt, neighbours."""
    from rich.markup import escape

    pooled = "pooled" if report.pooled_reference == "pooled" else "EOS (unprojected pooled)"
    title = f"{_short(report.prompt)}: {report.n_chunks} chunk(s), hidden size {report.hidden_size}; cos to {pooled}"
    table = _table(escape(title), [("chunk:pos", "right"), ("token", "left"), ("id", "right"), ("weight", "right"),
                                   ("norm", "right"), ("cos pooled", "right"), ("1-cos empty", "right"),
                                   ("nearest vocabulary tokens", "left")])  # fmt: skip
    for t in report.tokens:
        if t.truncated:
            table.add_row(_where(t.chunk, t.position), escape(t.text), str(t.id), _weight(t.weight),
                          "-", "-", "-", "[red]truncated (not seen)[/red]")  # fmt: skip
            continue
        nearest = "  ".join(f"{escape(n.text)} {n.cosine:.2f}" for n in t.nearest)
        table.add_row(_where(t.chunk, t.position), escape(t.text), str(t.id), _weight(t.weight),
                      _number(t.norm, 2), _number(t.cos_pooled), _number(t.change_from_empty), nearest)  # fmt: skip
    return table


def comparison_table(result: Any) -> Any:
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


def matrix_table(matrix: Any) -> Any:
    """The cosine matrix with numbered rows; the labels in the first column."""
    from rich.markup import escape

    table = _table(escape(f"{matrix.kind}: {matrix.title}"), [("#", "right"), (matrix.kind, "left")]
                   + [(str(i), "right") for i in range(len(matrix.labels))])  # fmt: skip
    for i, (label, row) in enumerate(zip(matrix.labels, matrix.values)):
        table.add_row(str(i), escape(label), *(f"{v:.3f}" for v in row))
    return table
