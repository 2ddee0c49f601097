"""Images in, scores out: the CLIP scorer, ranking, score files and image input."""

from .clip_scorer import ClipScorer, Ranking

__all__ = ["ClipScorer", "Ranking"]
