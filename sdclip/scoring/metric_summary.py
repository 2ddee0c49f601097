"""Per-prompt and overall means of each metric of a multi-metric run (what ``sdclip score`` prints).

Plain Python over ``ScoreRow``s (``ScoreRow.metrics``); no torch. Failed rows count as failed and enter
no mean; a metric with no scored row has mean None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .score_files import ScoreRow


@dataclass(frozen=True)
class MetricSummary:
    """One prompt (or the whole run, ``prompt=None``) of a multi-metric run.

    Attributes:
        prompt: the prompt, None for the overall line.
        images: rows (scored and failed).
        failed: rows with an error.
        means: ``(metric, mean)`` per metric, in column order (None when no row was scored).
        best_image: the image ranked first by the rank-by metric (None overall or when none was scored).
    """

    prompt: str | None
    images: int
    failed: int
    means: tuple[tuple[str, float | None], ...]
    best_image: str | None = None


def _means(rows: Sequence[ScoreRow], metrics: Sequence[str]) -> tuple[tuple[str, float | None], ...]:
    means = []
    for name in metrics:
        values = [v for row in rows if not row.error and (v := row.metric(name)) is not None and not math.isnan(v)]
        means.append((name, math.fsum(values) / len(values) if values else None))
    return tuple(means)


def summarize_metrics(rows: Sequence[ScoreRow], metrics: Sequence[str]) -> list[MetricSummary]:
    """One summary per prompt (order of first appearance), then the overall one (``prompt=None``).

    Example:
        >>> from sdclip.scoring.score_files import ScoreRow
        >>> rows = [ScoreRow("a.png", "cat", 6.0, 1, "", (("clip", 30.0), ("aesthetic", 6.0))),
        ...         ScoreRow("b.png", "cat", 4.0, 2, "", (("clip", 32.0), ("aesthetic", 4.0))),
        ...         ScoreRow("c.png", "dog", None, None, "bad", (("clip", None), ("aesthetic", None)))]
        >>> [(s.prompt, s.means, s.best_image) for s in summarize_metrics(rows, ["clip", "aesthetic"])]
        [('cat', (('clip', 31.0), ('aesthetic', 5.0)), 'a.png'), ('dog', (('clip', None), ('aesthetic', None)), None), (None, (('clip', 31.0), ('aesthetic', 5.0)), None)]
    """
    groups: dict[str, list[ScoreRow]] = {}
    for row in rows:
        groups.setdefault(row.prompt, []).append(row)
    summaries = []
    for prompt, group in groups.items():
        scored = [row for row in group if not row.error and row.score is not None]
        best = min(scored, key=lambda row: (row.rank if row.rank is not None else math.inf, -row.score),  # type: ignore[operator]
                   default=None)
        summaries.append(MetricSummary(prompt, len(group), len(group) - len(scored), _means(group, metrics),
                                       best.image if best else None))
    failed = sum(1 for row in rows if row.error or row.score is None)
    summaries.append(MetricSummary(None, len(rows), failed, _means(rows, metrics)))
    return summaries
