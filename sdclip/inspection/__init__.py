"""What the text encoder makes of a prompt: tokens, per-token statistics, comparisons, similarities.

The functions live in ``api`` and their result types in ``results``; both are re-exported here, so
``from sdclip import inspection`` then ``inspection.tokens(...)`` is the way to use them.
"""

from .api import (
    AlignedToken,
    Comparison,
    EmbeddingReport,
    Neighbour,
    SimilarityMatrix,
    TokenList,
    TokenStats,
    check_options,
    compare,
    embedding_report,
    nearest_tokens,
    similarity_matrix,
    token_similarity,
    tokens,
)

__all__ = [
    "AlignedToken", "Comparison", "EmbeddingReport", "Neighbour", "SimilarityMatrix", "TokenList", "TokenStats",
    "check_options", "compare", "embedding_report", "nearest_tokens", "similarity_matrix", "token_similarity",
    "tokens",
]  # fmt: skip
