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

import math
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._lru import LRUCache
from ..prompts.truncation import caller_stacklevel, warn_truncated
from ..errors import ImageInputError, PromptError, PromptTypeError, SdclipError
from .ranking import Ranking
from .images import (
    PreprocessConfig, as_chw_tensor, image_list, load_image, pil_to_uint8, preprocess_pil, preprocess_tensors,
    tensor_to_pil,
)  # fmt: skip
from ..prompts.lists import as_prompt_list, one_per
from ..models.sources import DEFAULT_MODEL

if TYPE_CHECKING:
    import torch

Preprocessing = Literal["auto", "exact", "fast"]
_TEXT_BATCH = 256


@dataclass(frozen=True)
class ScoredBatch:
    """Scores of one batch of images from ``ClipScorer.iter_scores``.

    Attributes:
        start: index (in the images given) of this batch's first image.
        scores: (B,) float32 on the CPU, ``100 * cos``; NaN where the image failed.
        errors: per image, None or why it failed (only with ``errors="return"``).
    """

    start: int
    scores: torch.Tensor
    errors: tuple[str | None, ...]


def _pooled(output: Any) -> torch.Tensor:
    """Projected features from ``get_*_features``: a tensor (transformers 4) or a model output (5)."""
    return output if hasattr(output, "ndim") else output.pooler_output


class ClipScorer:
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
        workers: threads that decode and preprocess images (default: up to 8, one per core).
        cache_size: prompt encodings kept across calls.

    Example:
        >>> scorer = ClipScorer.from_pretrained("weights/clip-vit-large-patch14")  # doctest: +SKIP
        >>> scorer.score(["a.png", "b.png"], "a photo of a cat")  # doctest: +SKIP
        tensor([24.1250, 19.8750])
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
    ) -> None:
        if preprocessing not in ("auto", "exact", "fast"):
            raise SdclipError(f"preprocessing: expected 'auto', 'exact' or 'fast', got {preprocessing!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise SdclipError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.model = model
        self.tokenizer = tokenizer
        image_size = int(model.config.vision_config.image_size)
        self.preprocess_config = (preprocessor_config if isinstance(preprocessor_config, PreprocessConfig)
                                  else PreprocessConfig.from_dict(preprocessor_config, image_size=image_size))
        # CPU: past ~4 images the MLP activations (B x 257 x 4096 for ViT-L) spill out of cache and a
        # batch of 16 is no faster per image than a batch of 1 (measured on a 2-core EPYC)
        self.batch_size = batch_size or (64 if self.device.type == "cuda" else 4)
        self.preprocessing = preprocessing
        self.workers = workers or max(1, min(8, os.cpu_count() or 1))
        self.max_tokens = int(model.config.text_config.max_position_embeddings)
        self._cache = LRUCache(cache_size)

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
    ) -> ClipScorer:
        """Load a full CLIP model (both towers) and its preprocessing from any model source.

        Args:
            source: hub id (default ``openai/clip-vit-large-patch14``), CLIP model folder, or a
                single-file checkpoint holding both towers.
            device: default CUDA when available, else CPU.
            dtype: default float16 on CUDA, float32 elsewhere.
            batch_size: images per vision-tower call (default 64 on CUDA, 4 elsewhere).
            preprocessing: ``"auto"``, ``"exact"`` or ``"fast"`` (see the class).
            workers: image decoding threads.
            local_files_only: never touch the network (default: ``HF_HUB_OFFLINE``).
            allow_pickle: accept ``.ckpt``/``.pt``/``.bin`` files (loaded with ``weights_only=True``).

        Example:
            >>> scorer = ClipScorer.from_pretrained("weights/clip-vit-large-patch14", device="cpu")  # doctest: +SKIP
        """
        from ..models.loading import load_clip_model

        model, tokenizer, preprocessor = load_clip_model(
            source, device=device, dtype=dtype, local_files_only=local_files_only, allow_pickle=allow_pickle
        )
        return cls(model, tokenizer, preprocessor_config=preprocessor, batch_size=batch_size,
                   preprocessing=preprocessing, workers=workers)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.logit_scale.dtype

    def clear_cache(self) -> None:
        """Forget every cached prompt encoding."""
        self._cache.clear()

    # -- text -----------------------------------------------------------------------------------------

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

    def _encode_texts(self, texts: Sequence[str], known: dict[str, torch.Tensor]) -> None:
        """Add each text's projected features ((D,) float32) to ``known``: from the cache, else the model."""
        import torch

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
            ids, mask = self._token_ids(chunk)
            with torch.inference_mode():
                features = _pooled(self.model.get_text_features(input_ids=ids, attention_mask=mask)).float()
            for text, row in zip(chunk, features):
                known[text] = row
                self._cache.put(text, row)

    def text_features(self, texts: str | Sequence[str], *, normalize: bool = False) -> torch.Tensor:
        """Projected text embeddings, (N, projection_dim), in the model's dtype and on its device.

        Equal to transformers' ``get_text_features`` (its ``text_embeds`` when ``normalize=True``).

        Example:
            >>> scorer.text_features(["a diagram", "a dog", "a cat"]).shape  # doctest: +SKIP
            torch.Size([3, 768])
        """
        import torch

        items = as_prompt_list(texts, "texts", allow_empty=False)
        known: dict[str, torch.Tensor] = {}
        self._encode_texts(items, known)
        features = torch.stack([known[text] for text in items])
        if normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.to(self.dtype)

    # -- images ---------------------------------------------------------------------------------------

    def _prepare(self, item: Any, index: int) -> tuple[str, Any]:
        """CPU-side work for one image (runs in a worker thread): ("pixels", (3,h,w) float32),
        ("raw", (3,H,W) tensor for the device path), or ("error", message)."""
        try:
            if isinstance(item, os.PathLike):
                item = load_image(item)
            if hasattr(item, "getbands"):  # PIL
                if self.preprocessing == "fast":
                    return "raw", pil_to_uint8(item)
                return "pixels", preprocess_pil(item, self.preprocess_config)
            tensor = as_chw_tensor(item, name=f"images[{index}]")
            if self.preprocessing == "exact":
                return "pixels", preprocess_pil(tensor_to_pil(tensor), self.preprocess_config)
            return "raw", tensor
        except ImageInputError as error:
            return "error", str(error)
        except Exception as error:  # a broken decoder plugin, out of memory: report it for this image
            return "error", f"images[{index}]: {type(error).__name__}: {error}"

    def _pixels(self, prepared: list[tuple[str, Any]]) -> tuple[torch.Tensor | None, list[int]]:
        """Stack a batch's prepared images into (B_ok, 3, h, w) pixels on the device; also which were ok."""
        import torch

        ok = [i for i, (kind, _) in enumerate(prepared) if kind != "error"]
        if not ok:
            return None, ok
        h, w = self.preprocess_config.output_size
        pixels = torch.empty(len(ok), 3, h, w, dtype=self.dtype, device=self.device)
        exact = [k for k, i in enumerate(ok) if prepared[i][0] == "pixels"]
        raw = [k for k, i in enumerate(ok) if prepared[i][0] == "raw"]
        if exact:
            stacked = torch.stack([prepared[ok[k]][1] for k in exact])
            if self.device.type == "cuda":
                stacked = stacked.pin_memory()
            pixels[exact] = stacked.to(self.device, non_blocking=True).to(self.dtype)
        if raw:
            pixels[raw] = preprocess_tensors([prepared[ok[k]][1] for k in raw], self.preprocess_config,
                                             device=self.device, dtype=self.dtype)
        return pixels, ok

    def _iter_image_features(
        self, items: list[Any], *, errors: Literal["raise", "return"]
    ) -> Iterator[tuple[int, torch.Tensor, list[str | None]]]:
        """(start, features (B, D) float32 with NaN rows for failures, errors) per batch, in order.

        Batch k+1 is decoded in worker threads while batch k runs on the model.
        """
        import torch

        size = self.batch_size
        starts = list(range(0, len(items), size))
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sdclip-images") as pool:
            def submit(start: int) -> list:
                return [pool.submit(self._prepare, item, start + k) for k, item in enumerate(items[start : start + size])]

            pending = deque(submit(start) for start in starts[:2])
            for number, start in enumerate(starts):
                prepared = [future.result() for future in pending.popleft()]
                if number + 2 < len(starts):
                    pending.append(submit(starts[number + 2]))
                messages = [value if kind == "error" else None for kind, value in prepared]
                if errors == "raise" and any(messages):
                    first = next(m for m in messages if m)
                    raise ImageInputError(first)
                pixels, ok = self._pixels(prepared)
                features = torch.full((len(prepared), self.model.config.projection_dim), float("nan"),
                                      device=self.device)
                if pixels is not None:
                    with torch.inference_mode():
                        features[ok] = _pooled(self.model.get_image_features(pixel_values=pixels)).float()
                yield start, features, messages

    def image_features(self, images: Any, *, normalize: bool = False) -> torch.Tensor:
        """Projected image embeddings, (N, projection_dim), in the model's dtype and on its device.

        Equal to transformers' ``get_image_features`` on ``CLIPImageProcessor`` pixels (its
        ``image_embeds`` when ``normalize=True``).

        Example:
            >>> scorer.image_features(Image.open("CLIP.png")).shape  # doctest: +SKIP
            torch.Size([1, 768])
        """
        import torch

        parts = [features for _, features, _ in self._iter_image_features(image_list(images), errors="raise")]
        features = torch.cat(parts)
        if normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.to(self.dtype)

    # -- scores ---------------------------------------------------------------------------------------

    def iter_scores(
        self, images: Any, prompts: str | Sequence[str], *, errors: Literal["raise", "return"] = "raise"
    ) -> Iterator[ScoredBatch]:
        """Per-pair scores batch by batch, for writing results as they come (what ``sdclip score`` does).

        Args:
            images: any image input (see ``sdclip.scoring.images.image_list``).
            prompts: one prompt per image, or one string for all.
            errors: ``"raise"`` stops at the first unreadable image; ``"return"`` gives it a NaN
                score and its message in ``ScoredBatch.errors``.

        Example:
            >>> for batch in scorer.iter_scores(paths, prompts, errors="return"):  # doctest: +SKIP
            ...     print(batch.start, batch.scores, batch.errors)
        """
        import torch

        if errors not in ("raise", "return"):
            raise SdclipError(f"errors: expected 'raise' or 'return', got {errors!r}")
        items = image_list(images)
        texts = one_per(prompts, len(items), name="prompts", what="prompt", per="image")
        known: dict[str, torch.Tensor] = {}
        previous = None
        for start, features, messages in self._iter_image_features(items, errors=errors):
            batch_texts = texts[start : start + len(features)]
            self._encode_texts(batch_texts, known)
            text = torch.stack([known[t] for t in batch_texts])
            scores = 100 * torch.nn.functional.cosine_similarity(features, text, dim=-1, eps=1e-12)
            if previous is not None:  # hand over batch k only now, so the device overlaps it with batch k+1
                yield ScoredBatch(previous[0], previous[1].cpu(), tuple(previous[2]))
            previous = (start, scores, messages)
        if previous is not None:
            yield ScoredBatch(previous[0], previous[1].cpu(), tuple(previous[2]))

    def score(self, images: Any, prompts: str | Sequence[str]) -> torch.Tensor:
        """CLIP score of each (image, prompt) pair: ``100 * cos(image_embeds, text_embeds)``, (N,) float32.

        Args:
            images: PIL images, file paths, uint8 or [0, 1] float tensors/arrays ((C,H,W), (H,W,C) or
                batched), or a diffusers pipeline output.
            prompts: one prompt per image, or one string for all.

        Example:
            >>> scorer.score(pipe(prompt, num_images_per_prompt=4), prompt)  # doctest: +SKIP
            tensor([27.1, 25.3, 29.8, 26.0])
        """
        import torch

        return torch.cat([batch.scores for batch in self.iter_scores(images, prompts)])

    def similarity(self, images: Any, prompts: str | Sequence[str]) -> torch.Tensor:
        """Every image against every prompt: ``100 * cos``, (N_images, N_prompts) float32 on the CPU.

        Example:
            >>> scorer.similarity(images, ["a cat", "a dog"]).shape  # doctest: +SKIP
            torch.Size([4, 2])
        """
        import torch.nn.functional as F

        texts = F.normalize(self.text_features(as_prompt_list(prompts, "prompts", allow_empty=False)).float(), dim=-1)
        features = F.normalize(self.image_features(images).float(), dim=-1)
        return (100 * features @ texts.T).cpu()

    def rank(self, images: Any, prompt: str) -> Ranking:
        """Rank images against one prompt, best first (ties keep input order).

        Example:
            >>> ranking = scorer.rank(pipe(prompt, num_images_per_prompt=4).images, prompt)  # doctest: +SKIP
            >>> best = images[ranking.best]  # doctest: +SKIP
        """
        if not isinstance(prompt, str):
            raise PromptTypeError(f"prompt: expected a string, got {type(prompt).__name__}")
        return Ranking.from_scores(self.score(images, prompt).tolist(), prompt=prompt)

    def rank_groups(self, groups: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> list[Ranking]:
        """Best-of-N for a whole generation run: rank each prompt's images, all in one batched pass.

        Args:
            groups: ``{prompt: images}`` or a list of ``(prompt, images)`` pairs.

        Returns:
            One ``Ranking`` per group, in the order given.

        Example:
            >>> rankings = scorer.rank_groups({"a cat": cat_images, "a dog": dog_images})  # doctest: +SKIP
            >>> [r.best for r in rankings]  # doctest: +SKIP
            [2, 0]
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
        per pair, scaled by 2.5, with a caption prefix) see ``clip_s``.

        Example:
            >>> scorer.clip_score(images, prompts)  # doctest: +SKIP
            tensor(31.4159)
        """
        scores = self.score(images, prompts)
        return scores.mean().clamp(min=0)

    def clip_s(
        self, images: Any, prompts: str | Sequence[str], *, w: float = 2.5, prefix: str = "A photo depicts "
    ) -> torch.Tensor:
        """Hessel et al.'s CLIP-S (2021): ``mean(w * max(cos, 0))`` with ``w = 2.5``, a () tensor.

        Unlike torchmetrics' CLIP score the clamp is per pair and the scale is 2.5, not 100; the paper
        also prefixes each caption with "A photo depicts " (pass ``prefix=""`` to score prompts as
        they are). The paper used ViT-B/32; scores from other models are not comparable with it.

        Example:
            >>> scorer.clip_s(images, captions)  # doctest: +SKIP
            tensor(0.7812)
        """
        count = len(image_list(images))
        texts = [prefix + text for text in one_per(prompts, count, name="prompts", what="prompt", per="image")]
        cosines = self.score(images, texts) / 100
        return (w * cosines.clamp(min=0)).mean()

    def classify(self, images: Any, labels: Sequence[str]) -> torch.Tensor:
        """Zero-shot label probabilities: ``softmax(logit_scale.exp() * cos)``, (N, L) float32 on the CPU.

        Equal to transformers' ``CLIPModel(...).logits_per_image.softmax(-1)``.

        Example:
            >>> scorer.classify(Image.open("CLIP.png"), ["a diagram", "a dog", "a cat"])  # doctest: +SKIP
            tensor([[0.9927, 0.0042, 0.0031]])
        """
        import torch

        cosines = self.similarity(images, as_prompt_list(labels, "labels", allow_empty=False)) / 100
        scale = self.model.logit_scale.detach().float().exp().cpu()
        return torch.softmax(scale * cosines, dim=-1)
