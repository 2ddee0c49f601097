"""Images in, scores out: the ``Scorer`` base any metric plugs into, the CLIP scorer, the aggregate
metrics, the scorer registry, ranking, score files and image input."""

from .base import ScoredBatch, Scorer, pooled_features
from .clip_scorer import ClipScorer, Ranking
from .registry import available_scorers, load_scorer, register_scorer, unregister_scorer

__all__ = [
    "ClipScorer", "Ranking", "ScoredBatch", "Scorer", "available_scorers", "load_scorer", "pooled_features",
    "register_scorer", "unregister_scorer",
]  # fmt: skip
