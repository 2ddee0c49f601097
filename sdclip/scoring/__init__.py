"""Images in, scores out: the ``Scorer`` base any metric plugs into, the CLIP scorer, the aesthetic and
preference metrics, several metrics in one pass, the aggregate metrics, the scorer registry, ranking,
score files and image input."""

from .aesthetic import AestheticScorer
from .base import ScoredBatch, Scorer, pooled_features
from .clip_scorer import ClipScorer, Ranking
from .hpsv2 import HpsV2Scorer
from .multi import MultiScoredBatch, MultiScorer, score_many
from .pickscore import PickRanking, PickScoreScorer
from .registry import available_scorers, load_scorer, register_scorer, unregister_scorer

__all__ = [
    "AestheticScorer", "ClipScorer", "HpsV2Scorer", "MultiScoredBatch", "MultiScorer", "PickRanking",
    "PickScoreScorer", "Ranking", "ScoredBatch", "Scorer", "available_scorers", "load_scorer", "pooled_features",
    "register_scorer", "score_many", "unregister_scorer",
]  # fmt: skip
