"""HPS v2 / v2.1 (Wu et al., 2023): the Human Preference Score, an OpenCLIP ViT-H/14 fine-tuned on HPD v2.

Formula (HPSv2's ``img_score.py``): ``score = <f_img / ||f_img||, f_txt / ||f_txt||>``, the cosine of the
model's projected image and text features (``encode_image`` / ``encode_text``), about 0.2..0.35 for the
published model (no logit scale, no x100). Input: 224 x 224 pixels, preprocessed as OpenCLIP's eval transform
for ViT-H/14: bicubic resize of the short side to 224, center crop, OpenAI mean/std (``CLIPImageProcessor``'s
defaults, which sdclip uses); prompts tokenized by CLIP's BPE, 77 tokens with the end-of-text kept.

Weights: the published ``HPS_v2.1_compressed.pt`` (or ``HPS_v2_compressed.pt``), by default from the hub
(``DEFAULT_WEIGHTS``: the Hugging Face cache, or one download), is a pickle holding ``{"state_dict": ...}``
in OpenCLIP's layout: refused unless ``allow_pickle=True`` (before any download), then read with
``torch.load(weights_only=True)``; a ``.safetensors`` copy of the state dict needs no opt-in. Any local
path or hub file (``hf://owner/name/path``) works as the source. sdclip converts
it once into transformers' ``CLIPModel`` (``models.openclip_convert``), so the rest is ``ClipScorer``'s
batching, caching and preprocessing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .clip_scorer import ClipScorer
from .weights import read_metric_weights

if TYPE_CHECKING:
    import torch

DEFAULT_WEIGHTS = "hf://xswu/HPSv2/HPS_v2.1_compressed.pt"  # the authors' own repository
PUBLISHED = f"{DEFAULT_WEIGHTS} (https://huggingface.co/xswu/HPSv2)"


class HpsV2Scorer(ClipScorer):
    """HPS v2 score of each (image, prompt) pair: the cosine of the normalised features.

    Example:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> from sdclip.testing import random_openclip_state_dict
        >>> path = tempfile.mkdtemp() + "/hps.safetensors"
        >>> save_file(random_openclip_state_dict(), path)
        >>> scorer = HpsV2Scorer.from_pretrained(path, device="cpu")
        >>> scores = scorer.score(torch.rand(2, 3, 64, 64), "a cat")
        >>> bool((scores.abs() <= 1).all())
        True
    """

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, source: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None, allow_pickle: bool = False, hidden_act: str = "gelu",
        local_files_only: bool | None = None, **options: Any,
    ) -> HpsV2Scorer:
        """Load an OpenCLIP-layout HPS v2 checkpoint and convert it to a ``CLIPModel``.

        Args:
            source: the checkpoint (``HPS_v2.1_compressed.pt`` with ``allow_pickle``, or ``.safetensors``): a
                local file or a hub file ``hf://owner/name/path/in/repo``; default ``DEFAULT_WEIGHTS``.
            device, dtype: as ``ClipScorer.from_pretrained`` (default CUDA + float16 where available).
            allow_pickle: accept the ``.pt`` pickle (read with ``torch.load(weights_only=True)``).
            hidden_act: the towers' activation (``"gelu"`` for ViT-H/14).
            local_files_only: never touch the network for a hub file (default: ``HF_HUB_OFFLINE``).
            **options: ``ClipScorer``'s options (batch_size, preprocessing, workers, ...).

        Raises:
            WeightsNotAvailableError: ``source`` is neither a local file nor a cached or reachable hub file
                (says what was tried and where the published weights are).
            PickleRefusedError: a pickle without ``allow_pickle`` (a hub one before it is downloaded).

        Example:
            >>> HpsV2Scorer.from_pretrained()  # the published pickle, refused before any download
            Traceback (most recent call last):
            ...
            sdclip.errors.PickleRefusedError: checkpoint 'hf://xswu/HPSv2/HPS_v2.1_compressed.pt': pickle files (.ckpt, .pt, .pth, .bin) can run code when loaded; pass allow_pickle=True (CLI: --allow-pickle) if you trust it, or convert it to .safetensors
        """
        from ..models.openclip_convert import load_openclip_as_hf
        from ..models.options import LoadOptions
        from ..models.tokenizer import load_tokenizer

        tensors = read_metric_weights("hpsv2", source, allow_pickle=allow_pickle, published=PUBLISHED,
                                      default=DEFAULT_WEIGHTS, local_files_only=local_files_only)
        load = LoadOptions(device, dtype, True, allow_pickle, False)
        torch_device = load.torch_device()
        name = str(DEFAULT_WEIGHTS if source is None else source)
        model = load_openclip_as_hf(tensors, name=name, device=torch_device,
                                    dtype=load.torch_dtype(torch_device), hidden_act=hidden_act)
        return cls(model, load_tokenizer(), **options)

    def pair_scores(self, image_features: torch.Tensor, text_features: torch.Tensor | None) -> torch.Tensor:
        """``cos(image, text)`` per row, (B,) float32 (HPS v2 reports it unscaled)."""
        import torch

        return torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1, eps=1e-12)
