"""The LAION aesthetic predictor v2 ("improved aesthetic predictor"): an MLP on CLIP ViT-L/14 image embeddings.

Formula (LAION's ``simple_inference.py``): ``score = MLP(e / ||e||)`` where ``e`` is the projected image
embedding of clip-vit-large-patch14 (``get_image_features``, 768 wide) and the MLP is
``Linear(768, 1024) -> Dropout -> Linear(1024, 128) -> Dropout -> Linear(128, 64) -> Dropout ->
Linear(64, 16) -> Linear(16, 1)``: no activation between the layers, dropouts inactive at inference.
Input: 224 x 224 pixels, preprocessed as ``CLIPImageProcessor`` does for the backbone (bicubic resize of
the short side, center crop, OpenAI mean/std). Scores are roughly 1..10 (higher = prettier).

Weights: the published ``sac+logos+ava1-l14-linearMSE.pth`` (a state dict with keys
``layers.{0,2,4,6,7}.{weight,bias}``), by default from its hub mirror ``DEFAULT_WEIGHTS`` (the Hugging Face
cache, or one download), or a local path, another hub file (``hf://owner/name/path``) or a ``.safetensors``
copy with the same keys; any chain of ``layers.N`` linear layers from the backbone's width down to 1 is
accepted. The ``.pth`` is a plain state dict, read with torch's safe loader
(``torch.load(weights_only=True)``, which runs no code), so it needs no ``allow_pickle``. The scorer subclasses
``ClipScorer``: built ``on`` a CLIP scorer it reuses that scorer's model, so ``MultiScorer`` runs one
vision pass for both ``clip`` and ``aesthetic``.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from ..errors import ScorerError
from ..models.sources import DEFAULT_MODEL
from .clip_scorer import ClipScorer
from .weights import read_metric_weights

if TYPE_CHECKING:
    import torch

# LAION publishes the head on GitHub; this hub mirror is the one hf_hub_download users (TRL, ComfyUI nodes) take
DEFAULT_WEIGHTS = "hf://camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth"
PUBLISHED = (f"{DEFAULT_WEIGHTS} (a mirror of https://github.com/christophschuhmann/improved-aesthetic-predictor"
             "/blob/main/sac+logos+ava1-l14-linearMSE.pth)")
_KEY = re.compile(r"^layers\.(\d+)\.(weight|bias)$")


def aesthetic_layers(state_dict: dict[str, torch.Tensor], *, source: str = "state dict",
                     input_dim: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The MLP's ``(weight (out, in), bias (out,))`` pairs, in order, from LAION's ``layers.N.*`` keys.

    Args:
        state_dict: the head's tensors (a ``module.`` prefix, as DataParallel saves, is dropped).
        source: how errors name it.
        input_dim: the backbone's embedding width the first layer must take (None: not checked).

    Raises:
        ScorerError: other keys, a layer without weight or bias, or widths that do not chain down to 1.

    Example:
        >>> import torch
        >>> sd = {"layers.0.weight": torch.ones(4, 8), "layers.0.bias": torch.zeros(4),
        ...       "layers.2.weight": torch.ones(1, 4), "layers.2.bias": torch.zeros(1)}
        >>> [tuple(w.shape) for w, _ in aesthetic_layers(sd)]
        [(4, 8), (1, 4)]
    """
    layers: dict[int, dict[str, Any]] = {}
    for key, tensor in state_dict.items():
        match = _KEY.match(key.removeprefix("module."))
        if match is None:
            raise ScorerError(f"aesthetic head '{source}': unexpected key '{key}'; expected LAION's "
                              "layers.N.weight / layers.N.bias (sac+logos+ava1-l14-linearMSE.pth)")
        layers.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
    if not layers:
        raise ScorerError(f"aesthetic head '{source}': no layers.N.weight keys; expected LAION's aesthetic MLP")
    pairs, width = [], input_dim
    for index in sorted(layers):
        parts = layers[index]
        if set(parts) != {"weight", "bias"}:
            raise ScorerError(f"aesthetic head '{source}': layers.{index} has {sorted(parts)}; expected weight and bias")
        weight, bias = parts["weight"], parts["bias"]
        if weight.ndim != 2 or bias.shape != (weight.shape[0],) or (width is not None and weight.shape[1] != width):
            raise ScorerError(f"aesthetic head '{source}': layers.{index}.weight has shape {tuple(weight.shape)}, "
                              f"expected (out, {width if width is not None else 'in'}) with a matching bias")
        pairs.append((weight, bias))
        width = weight.shape[0]
    if width != 1:
        raise ScorerError(f"aesthetic head '{source}': the last layer gives {width} outputs, expected 1 (a score)")
    return pairs


class AestheticScorer(ClipScorer):
    """LAION's aesthetic score of each image (no prompt): ``MLP(e / ||e||)`` on CLIP image embeddings.

    Args:
        model, tokenizer: the CLIP backbone (clip-vit-large-patch14 for the published head).
        head: ``(weight, bias)`` pairs from ``aesthetic_layers``.
        **options: ``ClipScorer``'s options (preprocessor_config, batch_size, ...).

    Example:
        >>> import tempfile, torch
        >>> from sdclip.scoring.clip_scorer import ClipScorer
        >>> from sdclip.testing import random_clip_model, save_clip_folder
        >>> clip = ClipScorer.from_pretrained(save_clip_folder(random_clip_model(), tempfile.mkdtemp()), device="cpu")
        >>> head = [(torch.randn(16, 96), torch.zeros(16)), (torch.randn(1, 16), torch.zeros(1))]
        >>> scorer = AestheticScorer.on(clip, head)  # shares clip's model: one vision pass for both
        >>> scorer.score(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2])
    """

    uses_text = False
    backbone = "clip"  # MultiScorer builds it on the clip metric's scorer when both are asked

    def __init__(self, model: Any, tokenizer: Any, *, head: list[tuple[torch.Tensor, torch.Tensor]],
                 **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        layers = aesthetic_layers({f"layers.{i}.{k}": t for i, (w, b) in enumerate(head)
                                   for k, t in (("weight", w), ("bias", b))}, input_dim=self.feature_dim)
        self.head = [(w.detach().float().to(self.device), b.detach().float().to(self.device)) for w, b in layers]

    @classmethod
    def on(cls, clip: ClipScorer, head: list[tuple[torch.Tensor, torch.Tensor]]) -> AestheticScorer:
        """An aesthetic scorer on ``clip``'s model, preprocessing and batching (its vision pass is shared)."""
        return cls(clip.model, clip.tokenizer, head=head, preprocessor_config=clip.preprocess_config,
                   batch_size=clip.batch_size, preprocessing=clip.preprocessing, workers=clip.workers,
                   exif_transpose=clip.exif_transpose)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, source: str | os.PathLike | None = None, *, clip_model: str | os.PathLike | ClipScorer = DEFAULT_MODEL,
        allow_pickle: bool = False, local_files_only: bool | None = None, **options: Any,
    ) -> AestheticScorer:
        """Load the head from ``source`` (``.pth`` or ``.safetensors``, local or on the hub) on a CLIP backbone.

        Args:
            source: the head's weights: a local file, or a hub file ``hf://owner/name/path/in/repo``
                (``owner/name/path`` works too when no such local file exists); default ``DEFAULT_WEIGHTS``,
                LAION's ``sac+logos+ava1-l14-linearMSE.pth`` on the hub (cached after the first download).
                A ``.pth`` is read with ``torch.load(weights_only=True)``: tensors only, no code runs.
            clip_model: the backbone: a ``ClipScorer`` to share, or a source for ``ClipScorer.from_pretrained``
                (default clip-vit-large-patch14, the one the published head was trained on).
            allow_pickle: passed to the backbone's loader (a ``.ckpt``/``.bin`` CLIP checkpoint); the head's
                ``.pth`` does not need it.
            local_files_only: never touch the network, for the head and the backbone (default: ``HF_HUB_OFFLINE``).
            **options: ``ClipScorer.from_pretrained``'s options (device, dtype, batch_size, ...).

        Raises:
            WeightsNotAvailableError: the head is neither a local file nor a cached or reachable hub file (the
                message says what was tried and where the weights are published).

        Example:
            >>> AestheticScorer.from_pretrained("gone/head.pth", local_files_only=True)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            sdclip.errors.WeightsNotAvailableError: metric 'aesthetic': weights file 'gone/head.pth' not found; ...
        """
        # LAION's file is a plain state dict and torch's weights_only loader runs no code: no opt-in needed
        tensors = read_metric_weights("aesthetic", source, allow_pickle=True, published=PUBLISHED,
                                      default=DEFAULT_WEIGHTS, local_files_only=local_files_only)
        head = aesthetic_layers(tensors, source=str(DEFAULT_WEIGHTS if source is None else source))
        clip = clip_model if isinstance(clip_model, ClipScorer) else ClipScorer.from_pretrained(
            clip_model, allow_pickle=allow_pickle, local_files_only=local_files_only, **options)
        return cls.on(clip, head)

    def pair_scores(self, image_features: torch.Tensor, text_features: torch.Tensor | None) -> torch.Tensor:
        """``MLP(e / ||e||)`` per row, (B,) float32 (NaN rows stay NaN)."""
        import torch

        x = torch.nn.functional.normalize(image_features.float(), dim=-1)  # (B, D)
        for weight, bias in self.head:
            x = torch.nn.functional.linear(x, weight, bias)
        return x[:, 0]
