"""CLIP scores: images and prompts in, ``100 * cos(image_embeds, text_embeds)`` out, batched and cached.

The math is transformers' ``CLIPModel`` (same towers, projections, pooling and preprocessing), so
per-pair scores equal ``100 * cos`` of its ``image_embeds`` / ``text_embeds``, and ``clip_score`` equals
torchmetrics' ``CLIPScore`` where torchmetrics is right. Where it is not, sdclip differs on purpose:

* prompts over the model's token limit are cut keeping their end-of-text token (torchmetrics cuts
  the EOS token off, so the pooled embedding is read at the wrong token);
* float images are taken to be in [0, 1] and rescaled once (``CLIPProcessor`` rescales them twice);
* it works with transformers 5 (``get_image_features`` returns a model output there).

Speed: each unique prompt is encoded once per call (and cached across calls), images go through the
vision tower in batches of ``batch_size``, files are decoded and PIL-preprocessed in worker threads
while the model runs, and tensor inputs are resized in one batched call on the model's device.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import PromptError, PromptTypeError
from ..models.sources import DEFAULT_MODEL
from ..prompts.lists import as_prompt_list, one_per
from ..prompts.truncation import warn_truncated
from . import metrics
from .._lru import DEFAULT_MAX_BYTES
from .base import ScoredBatch, Scorer, _check_cache_bounds, pooled_features
from .images import image_list
from .pipeline import Preprocessing
from .preprocess import PreprocessConfig
from .ranking import Ranking

if TYPE_CHECKING:
    import torch

__all__ = ["ClipScorer", "Ranking", "ScoredBatch"]


class ClipScorer(Scorer):
    """Score, rank and classify images against prompts with a full CLIP model.

    Args:
        model: a transformers ``CLIPModel`` (eval mode).
        tokenizer: its ``CLIPTokenizer``.
        preprocessor_config: the model's ``preprocessor_config.json`` (dict), a ``PreprocessConfig``,
            or None for CLIP's defaults at the vision tower's image size.
        batch_size: images per vision-tower call (default 64 on CUDA, 4 elsewhere).
        preprocessing: ``"auto"``: PIL images and files exactly as ``CLIPImageProcessor`` (CPU worker
            threads), arrays/tensors batched on the model's device; ``"exact"``: everything the
            ``CLIPImageProcessor`` way (tensors through PIL); ``"fast"``: everything batched on the
            model's device (files and PIL images decoded on the CPU, resized on the device).
        workers: threads that decode and preprocess images (default: one per core, at most 32).
        cache_size: prompt encodings kept across calls; 0 disables the cache.
        cache_bytes: the most bytes the cached prompt encodings may hold (default 256 MiB).
        exif_transpose: turn files and PIL images upright by their EXIF orientation first. Default
            False: pixels as stored, as ``CLIPImageProcessor`` sees them.
        gpu_decode: decode JPEG files on the GPU with nvjpeg, a batch at a time; needs
            ``preprocessing="fast"``; used only where it can run (see ``Scorer`` and ``self.gpu_decode``).

    One scorer may be shared by several threads (see ``sdclip.scoring.base``).

    Example:
        >>> import tempfile, torch
        >>> from sdclip.testing import random_clip_model, save_clip_folder
        >>> folder = save_clip_folder(random_clip_model(), tempfile.mkdtemp())  # stands in for clip-vit-large-patch14
        >>> scorer = ClipScorer.from_pretrained(folder, device="cpu")
        >>> images = torch.rand(2, 3, 64, 64)  # or PIL images, files, a pipeline's output
        >>> scorer.score(images, "a photo of a cat").shape
        torch.Size([2])
        >>> scorer.similarity(images, ["a cat", "a dog", "a diagram"]).shape
        torch.Size([2, 3])
        >>> scorer.classify(images, ["a cat", "a dog"]).sum(-1).round(decimals=4).tolist()
        [1.0, 1.0]
        >>> scorer.rank(images, "a cat").best in (0, 1)
        True
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        preprocessor_config: dict | PreprocessConfig | None = None,
        batch_size: int | None = None,
        preprocessing: Preprocessing = "auto",
        workers: int | None = None,
        cache_size: int = 4096,
        cache_bytes: int = DEFAULT_MAX_BYTES,
        exif_transpose: bool = False,
        gpu_decode: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        image_size = int(model.config.vision_config.image_size)
        config = (preprocessor_config if isinstance(preprocessor_config, PreprocessConfig)
                  else PreprocessConfig.from_dict(preprocessor_config, image_size=image_size))
        super().__init__(preprocess_config=config, batch_size=batch_size, preprocessing=preprocessing,
                         workers=workers, cache_size=cache_size, cache_bytes=cache_bytes,
                         exif_transpose=exif_transpose, gpu_decode=gpu_decode)
        self.max_tokens = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int | None = None,
        preprocessing: Preprocessing = "auto",
        workers: int | None = None,
        local_files_only: bool | None = None,
        allow_pickle: bool = False,
        exif_transpose: bool = False,
        gpu_decode: bool = False,
        cache_size: int = 4096,
        cache_bytes: int = DEFAULT_MAX_BYTES,
    ) -> ClipScorer:
        """Load a full CLIP model (both towers) and its preprocessing from any model source.

        Args:
            source: hub id (default ``openai/clip-vit-large-patch14``), CLIP model folder, or a
                single-file checkpoint holding both towers.
            device: default CUDA when available, else CPU.
            dtype: default float16 on CUDA, float32 elsewhere.
            batch_size: images per vision-tower call (default 64 on CUDA, 4 elsewhere).
            preprocessing: ``"auto"``, ``"exact"`` or ``"fast"`` (see the class).
            workers: image decoding threads (default: one per core, at most 32).
            local_files_only: never touch the network (default: ``HF_HUB_OFFLINE``).
            allow_pickle: accept ``.ckpt``/``.pt``/``.bin`` files (loaded with ``weights_only=True``).
            exif_transpose: honour EXIF orientation (default False, as ``CLIPImageProcessor``).
            gpu_decode: decode JPEG files on the GPU (see the class; needs ``preprocessing="fast"``).
            cache_size: prompt encodings kept across calls; 0 disables the cache.
            cache_bytes: the most bytes the cached prompt encodings may hold (default 256 MiB).

        Raises:
            ScorerError: ``cache_size`` or ``cache_bytes`` is not an integer >= 0 (checked before loading).

        Example:
            >>> import tempfile
            >>> from sdclip.testing import random_clip_model, save_clip_folder
            >>> folder = save_clip_folder(random_clip_model(), tempfile.mkdtemp())
            >>> ClipScorer.from_pretrained(folder, device="cpu").preprocess_config.output_size
            (224, 224)
        """
        from ..models.loading import load_clip_model

        _check_cache_bounds(cache_size, cache_bytes)  # before minutes of loading
        model, tokenizer, preprocessor = load_clip_model(
            source, device=device, dtype=dtype, local_files_only=local_files_only, allow_pickle=allow_pickle
        )
        return cls(model, tokenizer, preprocessor_config=preprocessor, batch_size=batch_size,
                   preprocessing=preprocessing, workers=workers, cache_size=cache_size, cache_bytes=cache_bytes,
                   exif_transpose=exif_transpose, gpu_decode=gpu_decode)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.logit_scale.dtype

    @property
    def feature_dim(self) -> int:
        return int(self.model.config.projection_dim)

    # -- the metric: CLIP's towers and the cosine -------------------------------------------------------

    def _token_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention_mask), each (B, L) int64, padded to the longest; long prompts keep their EOS."""
        import torch

        limit, pad = self.max_tokens, self.tokenizer.pad_token_id
        rows = []
        for text, ids in zip(texts, self.tokenizer(texts, verbose=False).input_ids):
            if len(ids) > limit:
                warn_truncated(text, self.tokenizer.decode(ids[limit - 1 : -1]), limit=limit, what="scored")
                ids = ids[: limit - 1] + ids[-1:]
            rows.append(ids)
        length = max(len(ids) for ids in rows)
        ids = torch.tensor([row + [pad] * (length - len(row)) for row in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in rows], dtype=torch.long)
        return ids.to(self.device), mask.to(self.device)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Projected text features, (N, projection_dim) float32: transformers' ``get_text_features``."""
        import torch

        ids, mask = self._token_ids(texts)
        with torch.inference_mode():
            return pooled_features(self.model.get_text_features(input_ids=ids, attention_mask=mask)).float()

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected image features, (B, projection_dim) float32: transformers' ``get_image_features``."""
        import torch

        with torch.inference_mode():
            return pooled_features(self.model.get_image_features(pixel_values=pixels)).float()

    def pair_scores(self, image_features: torch.Tensor, text_features: torch.Tensor | None) -> torch.Tensor:
        """``100 * cos`` per row, (B,) float32."""
        import torch

        return 100 * torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1, eps=1e-12)

    # -- what CLIP adds to the base -------------------------------------------------------------------

    def similarity(self, images: Any, prompts: str | Sequence[str]) -> torch.Tensor:
        """Every image against every prompt: ``100 * cos``, (N_images, N_prompts) float32 on the CPU."""
        import torch.nn.functional as F

        texts = F.normalize(self.text_features(as_prompt_list(prompts, "prompts", allow_empty=False)).float(), dim=-1)
        features = F.normalize(self.image_features(images).float(), dim=-1)
        return (100 * features @ texts.T).cpu()

    def rank(self, images: Any, prompt: str) -> Ranking:
        """Rank images against one prompt, best first (ties keep input order)."""
        if not isinstance(prompt, str):
            raise PromptTypeError(f"prompt: expected a string, got {type(prompt).__name__}")
        return Ranking.from_scores(self.score(images, prompt).tolist(), prompt=prompt)

    def rank_groups(self, groups: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> list[Ranking]:
        """Best-of-N for a whole generation run: rank each prompt's images, all in one batched pass.

        Args:
            groups: ``{prompt: images}`` or a list of ``(prompt, images)`` pairs.

        Returns:
            One ``Ranking`` per group, in the order given.
        """
        pairs = list(groups.items()) if isinstance(groups, Mapping) else list(groups)
        if not pairs:
            raise PromptError("groups: expected at least one (prompt, images) group, got none")
        flat, prompts, sizes = [], [], []
        for index, pair in enumerate(pairs):
            if not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[0], str):
                raise PromptTypeError(f"groups[{index}]: expected a (prompt, images) pair with a string prompt")
            items = image_list(pair[1], name=f"groups[{index}] images")
            flat += items
            prompts += [pair[0]] * len(items)
            sizes.append(len(items))
        scores = self.score(flat, prompts).tolist()
        rankings, start = [], 0
        for (prompt, _), size in zip(pairs, sizes):
            rankings.append(Ranking.from_scores(scores[start : start + size], prompt=prompt))
            start += size
        return rankings

    def clip_score(self, images: Any, prompts: str | Sequence[str]) -> torch.Tensor:
        """The run's CLIP score exactly as torchmetrics defines it: ``max(mean(100 * cos), 0)``, a () tensor.

        The mean is over pairs first and the clamp applies to the mean, so a run with some negative
        pairs scores lower than the mean of clamped pairs would. For Hessel et al.'s CLIP-S (clamped
        per pair, scaled by 2.5, with a caption prefix) see ``clip_s``; to combine runs or processes,
        keep ``metrics.ClipScoreState``s and merge them.
        """
        return metrics.clip_score(self.score(images, prompts) / 100)

    def clip_s(
        self, images: Any, prompts: str | Sequence[str], *, w: float = 2.5, prefix: str = "A photo depicts "
    ) -> torch.Tensor:
        """Hessel et al.'s CLIP-S (2021): ``mean(w * max(cos, 0))`` with ``w = 2.5``, a () tensor.

        Unlike torchmetrics' CLIP score the clamp is per pair and the scale is 2.5, not 100; the paper
        also prefixes each caption with "A photo depicts " (pass ``prefix=""`` to score prompts as
        they are). The paper used ViT-B/32; scores from other models are not comparable with it.
        """
        count = len(image_list(images))
        texts = [prefix + text for text in one_per(prompts, count, name="prompts", what="prompt", per="image")]
        return metrics.clip_s(self.score(images, texts) / 100, w=w)

    def classify(self, images: Any, labels: Sequence[str]) -> torch.Tensor:
        """Zero-shot label probabilities: ``softmax(logit_scale.exp() * cos)``, (N, L) float32 on the CPU.

        Equal to transformers' ``CLIPModel(...).logits_per_image.softmax(-1)``.
        """
        import torch

        cosines = self.similarity(images, as_prompt_list(labels, "labels", allow_empty=False)) / 100
        scale = self.model.logit_scale.detach().float().exp().cpu()
        return torch.softmax(scale * cosines, dim=-1)
