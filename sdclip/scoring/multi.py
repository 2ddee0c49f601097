"""Several metrics in one pass over the images: ``MultiScorer`` and ``score_many``.

Each image is decoded and preprocessed once per distinct preprocessing (CLIP L/14, PickScore's and
HPS v2's ViT-H/14 all use 224 px, bicubic, OpenAI mean/std: one decode for all four), each distinct vision
model runs once per image (``clip`` and ``aesthetic`` on one L/14 share its forward), and each metric's
text features are cached by its own scorer. Batches come out in order with one (B,) score tensor per metric.

A metric that runs on another metric's model names it in ``backbone`` (``AestheticScorer.backbone =
"clip"``): ``MultiScorer.from_pretrained`` then builds it on that scorer instead of loading a second copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ImageInputError, PromptError, ScorerError
from ..prompts.lists import one_per
from .base import Scorer
from .clip_scorer import ClipScorer
from .gpu_decode import device_index
from .images import image_list
from .pipeline import ImagePipeline
from .registry import scorer_class

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MultiScoredBatch:
    """Scores of one batch of images for every metric.

    Attributes:
        start: index (in the images given) of this batch's first image.
        scores: metric name -> (B,) float32 on the CPU; NaN where the image failed.
        errors: per image, None or why it failed (only with ``errors="return"``).
    """

    start: int
    scores: dict[str, torch.Tensor]
    errors: tuple[str | None, ...]


def _vision_key(scorer: Scorer) -> tuple:
    """Scorers with equal keys compute identical ``embed_images`` (same method on the same model object)."""
    model = getattr(scorer, "model", None) if isinstance(scorer, ClipScorer) else None
    return (type(scorer).embed_images, id(model) if model is not None else id(scorer))


def _decode_key(scorer: Scorer) -> tuple:
    """Scorers with equal keys take the same pixels (one decode and preprocess serves them all)."""
    return (scorer.preprocess_config, str(scorer.device), scorer.dtype, scorer.preprocessing, scorer.exif_transpose)


class MultiScorer:
    """Score images with several metrics at once, sharing decoding and vision passes.

    Args:
        scorers: metric name -> scorer (``load_scorer`` / ``from_pretrained`` results), in column order.

    Example:
        >>> import tempfile, torch
        >>> from sdclip.scoring import ClipScorer
        >>> from sdclip.scoring.aesthetic import AestheticScorer
        >>> from sdclip.testing import random_clip_model, save_clip_folder
        >>> clip = ClipScorer.from_pretrained(save_clip_folder(random_clip_model(), tempfile.mkdtemp()), device="cpu")
        >>> head = [(torch.randn(1, 96), torch.zeros(1))]
        >>> multi = MultiScorer({"clip": clip, "aesthetic": AestheticScorer.on(clip, head)})
        >>> multi.vision_passes  # clip and aesthetic share one vision forward per image
        1
        >>> {name: tuple(s.shape) for name, s in multi.score(torch.rand(3, 3, 64, 64), "a cat").items()}
        {'clip': (3,), 'aesthetic': (3,)}
    """

    def __init__(self, scorers: Mapping[str, Scorer]) -> None:
        if not isinstance(scorers, Mapping) or not scorers:
            raise ScorerError("scorers: expected a non-empty mapping of metric name -> Scorer")
        for name, scorer in scorers.items():
            if not isinstance(name, str) or not name or not isinstance(scorer, Scorer):
                raise ScorerError(f"scorers[{name!r}]: expected a metric name -> Scorer, got {type(scorer).__name__}")
        devices = {str(scorer.device) for scorer in scorers.values()}
        if len(devices) > 1:
            raise ScorerError(f"scorers: all metrics must run on one device, got {', '.join(sorted(devices))}")
        self.scorers = dict(scorers)
        self.batch_size = min(scorer.batch_size for scorer in self.scorers.values())

    @classmethod
    def from_pretrained(
        cls, metrics: Sequence[str], *, sources: Mapping[str, Any] | None = None, **options: Any
    ) -> MultiScorer:
        """Load each metric by its registry name (``available_scorers()``).

        Args:
            metrics: names in column order, e.g. ``["clip", "aesthetic", "pickscore"]``.
            sources: metric name -> its source (weights file, folder or hub id); default: each metric's own.
            **options: options every metric takes (device, dtype, batch_size, preprocessing, workers,
                allow_pickle, local_files_only, exif_transpose).

        A metric whose class names a ``backbone`` (``aesthetic``: ``"clip"``) is built on that metric's
        scorer when it is also asked for (one model in memory, one vision pass), else on a backbone loaded
        from ``sources[backbone]`` (its default when absent).
        """
        names = list(dict.fromkeys(metrics))
        if not names:
            raise ScorerError("metrics: expected at least one metric name")
        sources = dict(sources or {})
        loaded: dict[str, Scorer] = {}
        for name in sorted(names, key=lambda n: getattr(scorer_class(n), "backbone", None) is not None):
            metric_cls = scorer_class(name)
            kwargs = dict(options)
            backbone = getattr(metric_cls, "backbone", None)
            if backbone is not None:
                kwargs = {"clip_model": loaded[backbone]} if backbone in loaded else {
                    **kwargs, "clip_model": sources.get(backbone) or _default_source(backbone)}
                for key in ("allow_pickle", "local_files_only"):  # the head's own file may be a hub file
                    if key in options:
                        kwargs[key] = options[key]
            source = sources.get(name)
            loaded[name] = metric_cls.from_pretrained(**kwargs) if source is None else \
                metric_cls.from_pretrained(source, **kwargs)
        return cls({name: loaded[name] for name in names})

    @property
    def names(self) -> list[str]:
        """Metric names, in column order."""
        return list(self.scorers)

    @property
    def vision_passes(self) -> int:
        """How many vision forwards each image gets (metrics on one model share one)."""
        return len({_vision_key(scorer) for scorer in self.scorers.values()})

    def iter_scores(
        self, images: Any, prompts: str | Sequence[str] | None = None, *,
        errors: Literal["raise", "return"] = "raise",
    ) -> Iterator[MultiScoredBatch]:
        """Per-image scores of every metric, batch by batch, in order (as ``Scorer.iter_scores``)."""
        import torch

        if errors not in ("raise", "return"):
            raise ScorerError(f"errors: expected 'raise' or 'return', got {errors!r}")
        items = image_list(images)
        texts = None
        if any(scorer.uses_text for scorer in self.scorers.values()):
            if prompts is None:
                text_metrics = ", ".join(n for n, s in self.scorers.items() if s.uses_text)
                raise PromptError(f"prompts: metrics {text_metrics} compare images with text; pass one prompt per "
                                  "image or a single string for all")
            texts = one_per(prompts, len(items), name="prompts", what="prompt", per="image")
        groups: dict[tuple, list[str]] = {}
        for name, scorer in self.scorers.items():
            groups.setdefault(_decode_key(scorer), []).append(name)
        pipelines = [self._pipeline(self.scorers[names[0]]).batches(items) for names in groups.values()]
        known: dict[str, dict[str, torch.Tensor]] = {name: {} for name in self.scorers}
        for batches in zip(*pipelines):
            messages = tuple(next((b.errors[i] for b in batches if b.errors[i]), None) for i in range(batches[0].size))
            if errors == "raise" and any(messages):
                raise ImageInputError(next(m for m in messages if m))
            scores = {}
            for batch, names in zip(batches, groups.values()):
                features: dict[tuple, torch.Tensor] = {}
                for name in names:
                    scorer = self.scorers[name]
                    key = _vision_key(scorer)
                    if key not in features:
                        features[key] = self._features(scorer, batch)
                    text = None
                    if scorer.uses_text:
                        batch_texts = texts[batch.start : batch.start + batch.size]  # type: ignore[index]
                        scorer._encode_texts(batch_texts, known[name])
                        text = torch.stack([known[name][t] for t in batch_texts])
                    scores[name] = scorer.pair_scores(features[key], text).float().cpu()
            yield MultiScoredBatch(batches[0].start, {name: scores[name] for name in self.scorers}, messages)

    def _pipeline(self, scorer: Scorer) -> ImagePipeline:
        return ImagePipeline(scorer.preprocess_config, device=scorer.device, dtype=scorer.dtype,
                             batch_size=self.batch_size, preprocessing=scorer.preprocessing, workers=scorer.workers,
                             exif_transpose=scorer.exif_transpose, jpeg_decode=scorer._jpeg_decode)

    @staticmethod
    def _features(scorer: Scorer, batch: Any) -> torch.Tensor:
        """(B, D) float32 image features with NaN rows where the image failed."""
        import torch

        features = torch.full((batch.size, scorer.feature_dim), math.nan, device=scorer.device)
        if batch.pixels is not None:
            with scorer._lock:
                features.index_copy_(0, device_index(batch.ok, scorer.device), scorer.embed_images(batch.pixels))
        return features

    def score(self, images: Any, prompts: str | Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Metric name -> (N,) float32 scores on the CPU, in column order; an unreadable image raises."""
        import torch

        batches = list(self.iter_scores(images, prompts))
        return {name: torch.cat([batch.scores[name] for batch in batches]) if batches else torch.empty(0)
                for name in self.scorers}


def _default_source(name: str) -> Any:
    from ..models.sources import DEFAULT_MODEL

    return DEFAULT_MODEL if name == "clip" else None


def score_many(
    images: Any, prompts: str | Sequence[str] | None = None, *, metrics: Sequence[str] | Mapping[str, Scorer],
    sources: Mapping[str, Any] | None = None, **options: Any,
) -> dict[str, torch.Tensor]:
    """Score ``images`` with several metrics in one pass: metric name -> (N,) float32 scores.

    Args:
        images: any image input (files, PIL images, arrays, tensors, a pipeline's output).
        prompts: one prompt per image or one for all (None when no metric reads text).
        metrics: registry names (loaded with ``sources`` and ``options``) or name -> loaded scorer.
        sources: metric name -> weights (see ``MultiScorer.from_pretrained``).
        **options: loading options shared by every metric (device, dtype, batch_size, allow_pickle, ...).

    Example:
        >>> import tempfile, torch
        >>> from sdclip.testing import random_clip_model, save_clip_folder
        >>> folder = save_clip_folder(random_clip_model(), tempfile.mkdtemp())
        >>> scores = score_many(torch.rand(2, 3, 64, 64), "a cat", metrics=["clip", "pickscore"],
        ...                     sources={"clip": folder, "pickscore": folder}, device="cpu")
        >>> sorted(scores), tuple(scores["clip"].shape)
        (['clip', 'pickscore'], (2,))
    """
    multi = MultiScorer(metrics) if isinstance(metrics, Mapping) else \
        MultiScorer.from_pretrained(metrics, sources=sources, **options)
    return multi.score(images, prompts)
