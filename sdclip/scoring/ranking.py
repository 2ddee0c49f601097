"""Ranking scored images: per prompt ranks, groups best first, and a run's summary.

Plain Python over scores and score-file rows (``ScoreRow``); no torch. ``ClipScorer.rank`` returns a
``Ranking``; ``sdclip score`` ranks and summarises its rows with ``rank_rows`` and ``summarize``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .metrics import ClipScoreState

if TYPE_CHECKING:
    from .score_files import ScoreRow


@dataclass(frozen=True)
class Ranking:
    """Images of one prompt, best first. Ties keep input order; failed (NaN) images come last.

    Attributes:
        prompt: the prompt they were ranked against.
        indices: image indices (into the images given), best first.
        scores: ``scores[k]`` is the CLIP score (``100 * cos``) of image ``indices[k]``.

    Example:
        >>> r = Ranking.from_scores([20.5, 31.0, 20.5], prompt="a cat")
        >>> r.indices, r.best, r.ranks
        ((1, 0, 2), 1, (2, 1, 3))
    """

    prompt: str
    indices: tuple[int, ...]
    scores: tuple[float, ...]

    @classmethod
    def from_scores(cls, scores: Sequence[float], *, prompt: str = "") -> Ranking:
        """Rank ``scores`` (one per image, input order) best first; stable, NaN last."""
        values = [float(s) for s in scores]
        order = sorted(range(len(values)), key=lambda i: (1, 0.0) if math.isnan(values[i]) else (0, -values[i]))
        return cls(prompt, tuple(order), tuple(values[i] for i in order))  # sorted() is stable: ties by index

    @property
    def best(self) -> int:
        """Index of the best image."""
        return self.indices[0]

    @property
    def best_score(self) -> float:
        """Score of the best image."""
        return self.scores[0]

    @property
    def ranks(self) -> tuple[int, ...]:
        """Rank of each image in input order (1 = best)."""
        ranks = [0] * len(self.indices)
        for position, index in enumerate(self.indices):
            ranks[index] = position + 1
        return tuple(ranks)

    def top(self, k: int) -> tuple[int, ...]:
        """Indices of the ``k`` best images."""
        return self.indices[:k]

    def __len__(self) -> int:
        return len(self.indices)


def rank_rows(rows: Sequence[ScoreRow]) -> list[ScoreRow]:
    """``rows`` with each scored row's rank within its prompt (1 = best; ties by order; failed rows: None).

    Example:
        >>> from sdclip.scoring.score_files import ScoreRow
        >>> rows = [ScoreRow("a.png", "cat", 20.0), ScoreRow("b.png", "cat", 30.0), ScoreRow("c.png", "cat", None, error="x")]
        >>> [row.rank for row in rank_rows(rows)]
        [2, 1, None]
    """
    ranked = [dataclasses.replace(row, rank=None) for row in rows]
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(ranked):
        if not row.error and row.score is not None:
            groups.setdefault(row.prompt, []).append(index)
    for prompt, indices in groups.items():
        ranking = Ranking.from_scores([ranked[i].score for i in indices], prompt=prompt)  # type: ignore[misc]
        for index, rank in zip(indices, ranking.ranks):
            ranked[index] = dataclasses.replace(ranked[index], rank=rank)
    return ranked


def ranked_groups(rows: Sequence[ScoreRow]) -> dict[str, list[ScoreRow]]:
    """Scored rows grouped by prompt (in order of first appearance), best first.

    Rows are ordered by the file's rank when every row of the group has one, else by score.

    Example:
        >>> from sdclip.scoring.score_files import ScoreRow
        >>> rows = [ScoreRow("a.png", "cat", 20.0), ScoreRow("b.png", "cat", 30.0)]
        >>> [row.image for row in ranked_groups(rows)["cat"]]
        ['b.png', 'a.png']
    """
    groups: dict[str, list[ScoreRow]] = {}
    for row in rows:
        if row.score is not None:
            groups.setdefault(row.prompt, []).append(row)
    for group in groups.values():
        if all(row.rank is not None for row in group):
            group.sort(key=lambda row: (row.rank, -row.score))  # type: ignore[operator]
        else:
            group.sort(key=lambda row: -row.score)  # type: ignore[operator]
    return groups


@dataclass(frozen=True)
class PromptSummary:
    """One prompt of a run: how many images, how many failed, the mean score and the best image.

    Attributes:
        prompt: the prompt.
        images: rows for it (scored and failed).
        failed: rows with an error.
        mean_score: mean CLIP score of the scored rows (None when none was scored).
        best_image: the image ranked first (None when none was scored).
        best_score: its score.
    """

    prompt: str
    images: int
    failed: int
    mean_score: float | None
    best_image: str | None
    best_score: float | None


def summarize(rows: Sequence[ScoreRow]) -> list[PromptSummary]:
    """One summary per prompt, in order of first appearance; the best image is the lowest rank (else score).

    Example:
        >>> from sdclip.scoring.score_files import ScoreRow
        >>> summarize([ScoreRow("a.png", "cat", 20.0, 2), ScoreRow("b.png", "cat", 30.0, 1)])
        [PromptSummary(prompt='cat', images=2, failed=0, mean_score=25.0, best_image='b.png', best_score=30.0)]
    """
    order: dict[str, list[ScoreRow]] = {}
    for row in rows:
        order.setdefault(row.prompt, []).append(row)
    best = ranked_groups([row for row in rows if not row.error])
    summaries = []
    for prompt, group in order.items():
        ok = [row.score for row in group if not row.error and row.score is not None]
        top = best.get(prompt, [None])[0]
        summaries.append(PromptSummary(prompt, len(group), len(group) - len(ok), sum(ok) / len(ok) if ok else None,
                                       top.image if top else None, top.score if top else None))
    return summaries


def clip_score(rows: Sequence[ScoreRow]) -> tuple[float, int] | None:
    """torchmetrics' CLIPScore of a run: the mean over scored pairs, then clamped at 0; and the pair count.

    Example:
        >>> from sdclip.scoring.score_files import ScoreRow
        >>> clip_score([ScoreRow("a.png", "cat", 20.0), ScoreRow("b.png", "cat", None, error="x")])
        (20.0, 1)
    """
    scores = [row.score for row in rows if not row.error and row.score is not None and not math.isnan(row.score)]
    if not scores:
        return None
    state = ClipScoreState(total=math.fsum(scores), count=len(scores))  # rows hold 100 * cos already
    return state.compute(), state.count
