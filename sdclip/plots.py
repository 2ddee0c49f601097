"""Matplotlib figures of inspection results and score files.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global figure state, no
GUI backend needed): save it with ``fig.savefig("x.png")``, or let a notebook show it inline. Needs the
``plots`` extra (``pip install sdclip[plots]``).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SdclipError
from .prompts.lists import printable
from .scoring.ranking import ranked_groups
from .scoring.score_files import ScoreRow

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .inspection.api import EmbeddingReport, SimilarityMatrix


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise SdclipError("plots need matplotlib: run `pip install 'sdclip[plots]'`") from error
    return Figure(figsize=(width, height), layout="constrained")


def _label(text: str) -> str:
    return text.removesuffix("</w>")


def _wrap(text: str, width: int = 60, lines: int = 2) -> str:
    return textwrap.shorten(text, width * lines) if len(text) > width * lines else "\n".join(textwrap.wrap(text, width))


def plot_similarity(matrix: SimilarityMatrix, *, annotate: bool | None = None) -> Figure:
    """Heatmap of a cosine matrix: token by token of one prompt, or prompt by prompt.

    Args:
        matrix: from ``inspection.token_similarity`` or ``inspection.similarity_matrix``.
        annotate: write each cosine in its cell (default: when there are at most 12 rows).

    Returns:
        The figure, one axes and a colour bar; labels on both axes.

    Example:
        >>> from sdclip.inspection import SimilarityMatrix
        >>> fig = plot_similarity(SimilarityMatrix(["a", "b"], [[1.0, 0.5], [0.5, 1.0]], "prompts"))
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['a', 'b']
    """
    n = len(matrix.labels)
    labels = [_label(label) if matrix.kind == "tokens" else textwrap.shorten(label, 40) for label in matrix.labels]
    margin = 0.075 * max(len(label) for label in labels) + 0.5  # inches the tick labels take
    side = min(max(3.0, (0.28 if n > 20 else 0.5) * n + 1.0), 24.0)
    fig = _figure(side + margin + 1.5, side + margin + 0.6)
    ax = fig.subplots()
    low = min(min(row) for row in matrix.values)
    image = ax.imshow(matrix.values, cmap="viridis", vmin=min(low, 0.99), vmax=1.0)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8 if n > 20 else 10)
    ax.set_yticks(range(n), labels, fontsize=8 if n > 20 else 10)
    if annotate if annotate is not None else n <= 12:
        middle = (min(low, 0.99) + 1.0) / 2
        for i, row in enumerate(matrix.values):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if value > middle else "white")  # fmt: skip
    what = "token-by-token cosine of hidden states" if matrix.kind == "tokens" else "prompt-by-prompt pooled cosine"
    title = f"{what}: {matrix.title}" if matrix.title and matrix.kind == "tokens" else what
    ax.set_title(_wrap(title, int(8 * (side + margin))), fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="cosine")
    return fig


def plot_token_report(report: EmbeddingReport) -> Figure:
    """Bar charts of an embedding report, token by token: hidden-state norm, change from the empty prompt, weight.

    Truncated tokens are not drawn (the model never sees them); the title counts them.

    Returns:
        A figure of three stacked axes sharing the token axis.

    Example:
        >>> from sdclip.inspection import EmbeddingReport, TokenStats
        >>> report = EmbeddingReport("a", [TokenStats("a</w>", 320, 0, 1, 1.5, False, 1, 2.0, 0.5, 0.9)],
        ...                          "pooled", 4, 1)
        >>> len(plot_token_report(report).axes)
        3
    """
    seen = [t for t in report.tokens if not t.truncated]
    cut = len(report.tokens) - len(seen)
    several = report.n_chunks > 1
    labels = [(f"{t.chunk}:" if several else "") + _label(t.text) for t in seen]
    x = range(len(seen))
    width = min(max(5.0, 0.3 * len(seen) + 2.0), 30.0)
    fig = _figure(width, 6.5)
    norm_ax, change_ax, weight_ax = fig.subplots(3, 1, sharex=True, height_ratios=[3, 3, 1.5])
    colours = ["tab:orange" if t.weight > 1 else "tab:purple" if t.weight < 1 else "tab:blue" for t in seen]
    norm_ax.bar(x, [t.norm for t in seen], color=colours)
    norm_ax.set_ylabel("hidden-state\nnorm")
    change_ax.bar(x, [t.change_from_empty for t in seen], color=colours)
    change_ax.set_ylabel("1 - cos to\nempty prompt")
    weight_ax.bar(x, [t.weight for t in seen], color=colours)
    weight_ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    weight_ax.set_ylabel("weight")
    weight_ax.set_xticks(list(x), labels, rotation=90, fontsize=8 if len(seen) > 30 else 9)
    for axis in (norm_ax, change_ax, weight_ax):
        axis.grid(axis="y", alpha=0.3)
    title = f"per-token conditioning: {report.prompt}" + (f" ({cut} truncated tokens not shown)" if cut else "")
    norm_ax.set_title(_wrap(title, int(9 * width)), fontsize=10)
    return fig


def _thumbnail(path: Path, size: int) -> tuple[object | None, str]:
    """(the image shrunk to ``size`` pixels, "") or (None, why it cannot be drawn)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # the size check below stands in for PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and image.width * image.height > limit:
                return None, "over the decompression-bomb limit"
            image.draft("RGB", (size, size))
            image = image.convert("RGB")
            image.thumbnail((size, size))
            return image, ""
    except Image.UnidentifiedImageError:
        return None, "not an image"
    except Image.DecompressionBombError:
        return None, "over the decompression-bomb limit"
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        return None, textwrap.shorten(str(error) or type(error).__name__, 40)


def _resolve_image(image: str, roots: Sequence[Path]) -> Path | None:
    path = Path(image).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    for root in roots:
        if (root / path).is_file():
            return root / path
    return None


def plot_ranked_grid(
    rows: Sequence[ScoreRow],
    *,
    images_root: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    top: int = 8,
    columns: int = 4,
    thumbnail: int = 256,
) -> Figure:
    """An image grid of one prompt's ranked images, best first, with rank and score in each caption.

    Args:
        rows: the scored rows of one prompt (``score_files.ranked_groups(...)[prompt]``), best first.
        images_root: folder(s) that relative image paths are looked up in, in order (default: the
            current folder). An image found in none is drawn as a grey "missing" tile; one that cannot
            be read (corrupt, not an image, over PIL's decompression-bomb limit) as a grey tile saying why.
        top: draw at most this many images.
        columns: images per grid row.
        thumbnail: images are shrunk to fit this many pixels.

    Returns:
        The figure, one axes per image.

    Example:
        >>> from sdclip.scoring.score_files import ScoreRow
        >>> fig = plot_ranked_grid([ScoreRow("nowhere.png", "a cat", 31.2, 1)])
        >>> fig.axes[0].get_title()
        '#1  31.200\\nnowhere.png (missing)'
    """
    rows = list(rows)[:top]
    if not rows:
        raise SdclipError("plot_ranked_grid: no scored rows to draw")
    if images_root is None or isinstance(images_root, (str, os.PathLike)):
        roots = [Path(images_root or ".")]
    else:
        roots = [Path(root) for root in images_root]
    columns = max(1, min(columns, len(rows)))
    grid_rows = -(-len(rows) // columns)
    fig = _figure(2.6 * columns, 2.9 * grid_rows + 0.6)
    axes = fig.subplots(grid_rows, columns, squeeze=False).flatten()
    for place, (axis, row) in enumerate(zip(axes, rows), start=1):
        path = _resolve_image(row.image, roots)
        name = printable(Path(row.image).name)
        rank = row.rank if row.rank is not None else place
        image, why = _thumbnail(path, thumbnail) if path is not None else (None, "")
        if image is None:
            axis.imshow([[[0.8, 0.8, 0.8]]])
            name += " (missing)" if path is None else f" (unreadable: {why})"
        else:
            axis.imshow(image)
        axis.set_title(f"#{rank}  {row.score:.3f}\n{textwrap.shorten(name, 32 if path is None or image else 80)}",
                       fontsize=9)
        axis.set_axis_off()
    for axis in axes[len(rows) :]:
        axis.set_visible(False)
    fig.suptitle(_wrap(printable(rows[0].prompt), 12 * columns), fontsize=11)
    return fig


def plot_score_histogram(rows: Sequence[ScoreRow], *, bins: int = 30) -> Figure:
    """Histogram of the scores of a run; one colour per prompt when there are at most 6 prompts.

    Rows with an error are not drawn; the title counts them.

    Example:
        >>> from sdclip.scoring.score_files import ScoreRow
        >>> fig = plot_score_histogram([ScoreRow("a.png", "cat", 20.0), ScoreRow("b.png", "cat", 30.0)])
        >>> fig.axes[0].get_xlabel()
        'CLIP score'
    """
    groups = ranked_groups(list(rows))
    scores = [row.score for group in groups.values() for row in group]
    if not scores:
        raise SdclipError("plot_score_histogram: no scored rows (every row has an error)")
    errors = sum(row.score is None for row in rows)
    fig = _figure(7.0, 4.2)
    from matplotlib.ticker import MaxNLocator  # after _figure: it says how to install matplotlib

    ax = fig.subplots()
    low, high = min(scores), max(scores)
    edges = [low + (high - low) * i / bins for i in range(bins + 1)] if high > low else bins
    if 1 < len(groups) <= 6:
        for prompt, group in groups.items():
            ax.hist([row.score for row in group], bins=edges, alpha=0.55,
                    label=textwrap.shorten(printable(prompt), 40))
    else:
        ax.hist(scores, bins=edges, color="tab:blue")
    mean = sum(scores) / len(scores)
    ax.axvline(mean, color="black", linestyle="--", linewidth=1, label="mean of all")
    ax.legend(fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("CLIP score")
    ax.set_ylabel("images")
    title = f"{len(scores)} scores, {len(groups)} prompt(s), mean {mean:.3f}"
    ax.set_title(title + (f" ({errors} row(s) with errors skipped)" if errors else ""), fontsize=10)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Save ``fig`` as a PNG (its folder created) and return the path.

    Example:
        >>> from sdclip.inspection import SimilarityMatrix
        >>> import tempfile, pathlib
        >>> path = save_figure(plot_similarity(SimilarityMatrix(["a"], [[1.0]], "prompts")),
        ...                    pathlib.Path(tempfile.mkdtemp()) / "m.png")
        >>> path.stat().st_size > 1000
        True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path
