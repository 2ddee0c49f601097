"""Score-file rows -> the report's data: metric columns, prompts, and image links relative to the report.

Plain Python (no torch). An image's link is its path resolved against ``images_root`` (relative paths in a
score file are relative to the folder the run started in), then made relative to the report's folder and
URL-quoted, so the report and its images can move together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.request import pathname2url

from ..scoring.score_files import ScoreRow


def metric_names(rows: Sequence[ScoreRow]) -> list[str]:
    """The report's metric columns: a multi-metric file's own, else ``["clip"]`` (the ``score`` column).

    Example:
        >>> metric_names([ScoreRow("a.png", "cat", 30.0)])
        ['clip']
        >>> metric_names([ScoreRow("a.png", "cat", 5.0, metrics=(("clip", 30.0), ("aesthetic", 5.0)))])
        ['clip', 'aesthetic']
    """
    for row in rows:
        if row.metrics:
            return [name for name, _ in row.metrics]
    return ["clip"]


def image_link(image: str, *, images_root: str | os.PathLike | None, report_dir: Path) -> str:
    """The URL (relative to the report's folder) of a score file's image path.

    Example:
        >>> image_link("out/a b.png", images_root="/runs/1", report_dir=Path("/runs/1/report"))
        '../out/a%20b.png'
    """
    path = Path(image)
    if not path.is_absolute():
        path = Path(images_root or ".") / path
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(report_dir))
    return pathname2url(relative)


def _value(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)


def report_data(
    rows: Sequence[ScoreRow], *, report_dir: Path, images_root: str | os.PathLike | None = None,
    rank_by: str | None = None, link: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """The JSON the report's script reads: ``{"metrics", "rankBy", "prompts", "rows"}``.

    Each row is ``[image, link or None when it is the image path itself, prompt index, rank, error, metric
    values...]`` (compact for 10,000s of rows).

    Example:
        >>> data = report_data([ScoreRow("a.png", "cat", 30.0, 1)], report_dir=Path("/r"), images_root="/r")
        >>> data["metrics"], data["prompts"], data["rows"]
        (['clip'], ['cat'], [['a.png', None, 0, 1, '', 30.0]])
    """
    metrics = metric_names(rows)
    if rank_by is None:  # the metric the score column repeats
        first = next((row for row in rows if row.metrics and row.score is not None), None)
        rank_by = next((n for n, v in first.metrics if v == first.score), metrics[0]) if first else metrics[0]
    prompts: dict[str, int] = {}
    table = []
    for row in rows:
        index = prompts.setdefault(row.prompt, len(prompts))
        values = [_value(row.metric(name)) for name in metrics] if row.metrics else [_value(row.score)]
        href = link(row.image) if link else image_link(row.image, images_root=images_root, report_dir=report_dir)
        table.append([row.image, None if href == row.image else href, index, row.rank, row.error, *values])
    return {"metrics": metrics, "rankBy": rank_by, "prompts": list(prompts), "rows": table}
