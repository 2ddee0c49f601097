"""PickScore (Kirstain et al., 2023): a CLIP model fine-tuned on human preferences (Pick-a-Pic).

Formula (PickScore's README): ``score = logit_scale.exp() * cos(text_embeds, image_embeds)`` with the
projected features of an HF ``CLIPModel`` (``get_text_features`` / ``get_image_features``); over one
prompt's candidate images, ``softmax(scores)`` is the probability each is preferred
(``PickScoreScorer.rank`` gives both). Input: 224 x 224 pixels preprocessed as ``CLIPImageProcessor``
(the published processor, laion/CLIP-ViT-H-14-laion2B-s32B-b79K: bicubic short-side resize, center crop,
OpenAI mean/std). The published model is ViT-H/14 (``yuvalkirstain/PickScore_v1``); any ``CLIPModel``
works. Scores are about 18..23 for the published model (logit_scale.exp() = 100).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import PromptTypeError, WeightsNotAvailableError
from .clip_scorer import ClipScorer
from .ranking import Ranking

if TYPE_CHECKING:
    import torch

DEFAULT_PICKSCORE = "yuvalkirstain/PickScore_v1"


@dataclass(frozen=True)
class PickRanking(Ranking):
    """A ``Ranking`` with PickScore's preference probabilities: ``probabilities[k]`` is that of image
    ``indices[k]`` (the softmax of the scores over the prompt's images)."""

    probabilities: tuple[float, ...] = ()


class PickScoreScorer(ClipScorer):
    """PickScore of each (image, prompt) pair: ``logit_scale.exp() * cos``.

    Example:
        >>> import tempfile, torch
        >>> from sdclip.testing import random_clip_model, save_clip_folder
        >>> scorer = PickScoreScorer.from_pretrained(save_clip_folder(random_clip_model(), tempfile.mkdtemp()),
        ...                                          device="cpu")
        >>> ranking = scorer.rank(torch.rand(3, 3, 64, 64), "a cat")
        >>> round(sum(ranking.probabilities), 4)
        1.0
    """

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = DEFAULT_PICKSCORE, **options: Any) -> PickScoreScorer:  # type: ignore[override]
        """Load a ``CLIPModel`` (default ``yuvalkirstain/PickScore_v1``) as ``ClipScorer.from_pretrained`` does.

        Raises:
            WeightsNotAvailableError: the weights are neither local nor downloadable (names the metric).
        """
        try:
            return super().from_pretrained(source, **options)  # type: ignore[return-value]
        except WeightsNotAvailableError as error:
            raise WeightsNotAvailableError(f"metric 'pickscore': {error} (the published model is "
                                           f"{DEFAULT_PICKSCORE} on the Hugging Face hub)") from error

    def pair_scores(self, image_features: torch.Tensor, text_features: torch.Tensor | None) -> torch.Tensor:
        """``logit_scale.exp() * cos`` per row, (B,) float32."""
        import torch

        scale = self.model.logit_scale.detach().float().exp()
        return scale * torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1, eps=1e-12)

    def rank(self, images: Any, prompt: str) -> PickRanking:
        """Rank images against one prompt, best first, with PickScore's softmax preference probabilities."""
        if not isinstance(prompt, str):
            raise PromptTypeError(f"prompt: expected a string, got {type(prompt).__name__}")
        ranking = Ranking.from_scores(self.score(images, prompt).tolist(), prompt=prompt)
        finite = [s for s in ranking.scores if not math.isnan(s)]
        top = max(finite, default=0.0)
        weights = [0.0 if math.isnan(s) else math.exp(s - top) for s in ranking.scores]
        total = sum(weights) or 1.0
        return PickRanking(ranking.prompt, ranking.indices, ranking.scores, tuple(w / total for w in weights))
