"""The ``Scorer`` base: what every image metric needs, so a metric is only its model's math.

The base owns image input (paths, PIL images, arrays, tensors, pipeline outputs), batching, the
prefetch pipeline (``pipeline.ImagePipeline``), the text-feature cache, device and dtype, and
``iter_scores`` streaming with error rows. A metric subclasses it and implements:

* ``embed_images(pixels)``: (B, 3, h, w) pixels on the device -> (B, D) float32 features;
* ``embed_texts(texts)``: a list of prompts -> (N, D) float32 features (metrics with
  ``uses_text = False``, such as an aesthetic head, skip it);
* ``pair_scores(image_features, text_features)``: -> (B,) scores, NaN where the image row is NaN;
* ``device``, ``dtype``, ``feature_dim``, and ``preprocess_config`` (passed to ``__init__``);
* ``from_pretrained(source, **options)`` to be loadable by name (``registry.load_scorer``).

A metric that shares CLIP's vision pass (an aesthetic MLP on CLIP image embeddings, say) subclasses
``ClipScorer`` and overrides ``pair_scores`` alone.

Thread safety: a scorer may be shared across threads. One re-entrant lock per scorer guards the
text-feature cache, the tokenizer and every model call; decoding runs in each call's own thread pool,
outside the lock. The lock is never held while a generator is suspended, so an abandoned
``iter_scores`` cannot block other threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .._lru import DEFAULT_MAX_BYTES, LRUCache
from ..errors import ImageInputError, PromptError, ScorerError
from ..prompts.lists import as_prompt_list, one_per
from .gpu_decode import default_workers, device_index, jpeg_decoder
from .images import image_list
from .pipeline import ImagePipeline, Preprocessing
from .preprocess import PreprocessConfig

if TYPE_CHECKING:
    import torch

_TEXT_BATCH = 256


def pooled_features(output: Any) -> torch.Tensor:
    """Projected features from transformers' ``get_text_features`` / ``get_image_features``.

    transformers 4 returns the (B, D) tensor, transformers 5 a model output holding it as ``pooler_output``.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> pooled_features(torch.ones(2, 4)).shape  # transformers 4
        torch.Size([2, 4])
        >>> pooled_features(SimpleNamespace(pooler_output=torch.ones(1, 4))).shape  # transformers 5
        torch.Size([1, 4])
    """
    return output if hasattr(output, "ndim") else output.pooler_output


@dataclass(frozen=True)
class ScoredBatch:
    """Scores of one batch of images from ``Scorer.iter_scores``.

    Attributes:
        start: index (in the images given) of this batch's first image.
        scores: (B,) float32 on the CPU; NaN where the image failed.
        errors: per image, None or why it failed (only with ``errors="return"``).
    """

    start: int
    scores: torch.Tensor
    errors: tuple[str | None, ...]


def _positive_int(value: Any, name: str, *, minimum: int = 1) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ScorerError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def _check_cache_bounds(cache_size: Any, cache_bytes: Any) -> None:
    """``ScorerError`` unless both are integers >= 0 (``from_pretrained`` calls it before loading a model)."""
    for value, name in ((cache_size, "cache_size"), (cache_bytes, "cache_bytes")):
        if value is None or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ScorerError(f"{name}: expected an integer >= 0 (0 disables the cache), got {value!r}")


class Scorer:
    """Base of every image metric: batching, prefetching, caching and error rows around a model's math.

    Args:
        preprocess_config: how images become the model's pixels.
        batch_size: images per model call (default 64 on CUDA, 4 elsewhere).
        preprocessing: ``"auto"``, ``"exact"`` or ``"fast"`` (see ``ClipScorer``).
        workers: threads that decode and preprocess images (default: one per core, at most 32).
        cache_size: text encodings kept across calls; 0 disables the cache.
        cache_bytes: the most bytes the cached text encodings may hold (default 256 MiB).
        exif_transpose: turn files and PIL images upright by their EXIF orientation tag first. Off
            by default, as ``CLIPImageProcessor`` (which scores the pixels as stored).
        gpu_decode: decode JPEG files on the GPU with nvjpeg (torchvision's ``decode_jpeg``, the ``gpu``
            extra), a batch at a time; needs ``preprocessing="fast"``. Used only where it can run (a
            CUDA model, an importable torchvision, no ``exif_transpose``; ``self.gpu_decode`` says
            whether it does); other files decode on the CPU. Pixels may differ from Pillow's by a few
            8-bit levels.
    """

    uses_text: ClassVar[bool] = True

    def __init__(
        self,
        *,
        preprocess_config: PreprocessConfig,
        batch_size: int | None = None,
        preprocessing: Preprocessing = "auto",
        workers: int | None = None,
        cache_size: int = 4096,
        cache_bytes: int = DEFAULT_MAX_BYTES,
        exif_transpose: bool = False,
        gpu_decode: bool = False,
    ) -> None:
        if preprocessing not in ("auto", "exact", "fast"):
            raise ScorerError(f"preprocessing: expected 'auto', 'exact' or 'fast', got {preprocessing!r}")
        if gpu_decode and preprocessing != "fast":
            raise ScorerError(f"gpu_decode: needs preprocessing='fast' (GPU-decoded images are resized on the "
                              f"device), got preprocessing={preprocessing!r}")
        _positive_int(batch_size, "batch_size")
        _positive_int(workers, "workers")
        _check_cache_bounds(cache_size, cache_bytes)
        self.preprocess_config = preprocess_config
        # CPU: past ~4 images the MLP activations (B x 257 x 4096 for ViT-L) spill out of cache and a
        # batch of 16 is no faster per image than a batch of 1 (measured on a 2-core EPYC)
        self.batch_size = batch_size or (64 if self.device.type == "cuda" else 4)
        self.preprocessing = preprocessing
        self.workers = workers or default_workers()
        self.exif_transpose = bool(exif_transpose)
        self._jpeg_decode = jpeg_decoder(self.device) if gpu_decode and not self.exif_transpose else None
        self.gpu_decode = self._jpeg_decode is not None  # what runs: False on the CPU or without torchvision
        self._cache = LRUCache(cache_size, max_bytes=cache_bytes)
        self._lock = threading.RLock()

    # -- what a metric implements ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, source: Any = None, **options: Any) -> Scorer:
        """Load the metric's model from ``source`` (what ``load_scorer`` calls)."""
        raise NotImplementedError(f"{cls.__name__} cannot be loaded by name: it has no from_pretrained")

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        """D, the width of the image features ``embed_images`` returns."""
        raise NotImplementedError

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) pixels in ``dtype`` on ``device`` -> (B, D) float32 features."""
        raise NotImplementedError

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """N prompts -> (N, D) float32 features on ``device``."""
        raise NotImplementedError

    def pair_scores(self, image_features: torch.Tensor, text_features: torch.Tensor | None) -> torch.Tensor:
        """(B, D) image and (B, D) text features (None without text) -> (B,) scores."""
        raise NotImplementedError

    # -- shared machinery -----------------------------------------------------------------------------

    def clear_cache(self) -> None:
        """Forget every cached text encoding."""
        with self._lock:
            self._cache.clear()

    def image_pipeline(self) -> ImagePipeline:
        """A fresh pipeline from image inputs to pixels on this scorer's device (one per call: no shared state)."""
        return ImagePipeline(self.preprocess_config, device=self.device, dtype=self.dtype, batch_size=self.batch_size,
                             preprocessing=self.preprocessing, workers=self.workers,
                             exif_transpose=self.exif_transpose, jpeg_decode=self._jpeg_decode)

    def _encode_texts(self, texts: Sequence[str], known: dict[str, torch.Tensor]) -> None:
        """Add each text's features ((D,) float32) to ``known``: from the cache, else the model."""
        with self._lock:  # the cache, the tokenizer (not thread-safe) and the model
            todo = []
            for text in dict.fromkeys(texts):
                if text in known:
                    continue
                cached = self._cache.get(text)
                if cached is not None:
                    known[text] = cached
                else:
                    todo.append(text)
            for start in range(0, len(todo), _TEXT_BATCH):
                chunk = todo[start : start + _TEXT_BATCH]
                features = self.embed_texts(chunk)
                for text, row in zip(chunk, features):
                    row = row.clone()  # a view would keep the whole batch alive in the cache
                    known[text] = row
                    self._cache.put(text, row)

    def _image_feature_batches(
        self, items: list[Any], *, errors: Literal["raise", "return"]
    ) -> Iterator[tuple[int, torch.Tensor, tuple[str | None, ...]]]:
        """(start, features (B, D) float32 with NaN rows for failures, errors) per batch, in order."""
        import torch

        for batch in self.image_pipeline().batches(items):
            if errors == "raise" and any(batch.errors):
                raise ImageInputError(next(m for m in batch.errors if m))
            features = torch.full((batch.size, self.feature_dim), float("nan"), device=self.device)
            if batch.pixels is not None:
                with self._lock:
                    # index_copy_ with a device index: indexing by a list would wait for the GPU's queue
                    features.index_copy_(0, device_index(batch.ok, self.device), self.embed_images(batch.pixels))
            yield batch.start, features, batch.errors

    def text_features(self, texts: str | Sequence[str], *, normalize: bool = False) -> torch.Tensor:
        """Text features, (N, D), in the model's dtype and on its device (cached per text)."""
        import torch

        items = as_prompt_list(texts, "texts", allow_empty=False)
        known: dict[str, torch.Tensor] = {}
        self._encode_texts(items, known)
        features = torch.stack([known[text] for text in items])
        if normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.to(self.dtype)

    def image_features(self, images: Any, *, normalize: bool = False) -> torch.Tensor:
        """Image features, (N, D), in the model's dtype and on its device; an unreadable image raises."""
        import torch

        batches = self._image_feature_batches(image_list(images), errors="raise")
        features = torch.cat([features for _, features, _ in batches])
        if normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.to(self.dtype)

    def iter_scores(
        self, images: Any, prompts: str | Sequence[str] | None = None, *,
        errors: Literal["raise", "return"] = "raise",
    ) -> Iterator[ScoredBatch]:
        """Per-pair scores batch by batch, for writing results as they come (what ``sdclip score`` does).

        Args:
            images: any image input (see ``sdclip.scoring.images.image_list``).
            prompts: one prompt per image, or one string for all (None for metrics without text).
            errors: ``"raise"`` stops at the first unreadable image; ``"return"`` gives it a NaN
                score and its message in ``ScoredBatch.errors``.
        """
        import torch

        if errors not in ("raise", "return"):
            raise ScorerError(f"errors: expected 'raise' or 'return', got {errors!r}")
        items = image_list(images)
        texts = None
        if self.uses_text:
            if prompts is None:
                raise PromptError("prompts: this scorer compares images with text; pass one prompt per image "
                                  "or a single string for all")
            texts = one_per(prompts, len(items), name="prompts", what="prompt", per="image")
        known: dict[str, torch.Tensor] = {}
        previous = None
        for start, features, messages in self._image_feature_batches(items, errors=errors):
            text = None
            if texts is not None:
                batch_texts = texts[start : start + len(features)]
                self._encode_texts(batch_texts, known)
                text = torch.stack([known[t] for t in batch_texts])
            scores = self.pair_scores(features, text)
            if previous is not None:  # hand over batch k only now, so the device overlaps it with batch k+1
                yield ScoredBatch(previous[0], previous[1].float().cpu(), tuple(previous[2]))
            previous = (start, scores, messages)
        if previous is not None:
            yield ScoredBatch(previous[0], previous[1].float().cpu(), tuple(previous[2]))

    def score(self, images: Any, prompts: str | Sequence[str] | None = None) -> torch.Tensor:
        """The score of each image (against its prompt), (N,) float32 on the CPU; an unreadable image raises."""
        import torch

        return torch.cat([batch.scores for batch in self.iter_scores(images, prompts)])
