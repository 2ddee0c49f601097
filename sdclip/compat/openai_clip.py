"""OpenAI's ``clip`` package API on transformers weights: ``from sdclip import clip``.

Code written for ``import clip`` runs unchanged but for the import line::

    from sdclip.compat import openai_clip as clip
    model, preprocess = clip.load("ViT-L/14", device=device)
    image = preprocess(Image.open("CLIP.png")).unsqueeze(0).to(device)
    text = clip.tokenize(["a diagram", "a dog", "a cat"]).to(device)
    with torch.no_grad():
        logits_per_image, logits_per_text = model(image, text)
        probs = logits_per_image.softmax(dim=-1).cpu().numpy()

OpenAI's model names map to the ``openai/clip-vit-*`` hub repositories (ResNet models have no
transformers port); any source ``ClipScorer`` takes works too. Differences from OpenAI's package,
all on purpose: ``preprocess`` is exactly ``CLIPImageProcessor`` (the transformers weights' own
preprocessing: RGB conversion composites transparency onto white before the resize, where OpenAI
drops alpha after it); over-long text raises ``sdclip.PromptError`` (a ``ValueError``, not a
``RuntimeError``); ``jit=True`` is not available (the eager model is as fast with SDPA attention).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ModelSourceError, PromptError, PromptTypeError
from ..scoring.base import pooled_features
from ..scoring.images import as_chw_tensor
from ..scoring.preprocess import PreprocessConfig, preprocess_pil, tensor_to_pil

_MODELS = {
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-L/14": "openai/clip-vit-large-patch14",
    "ViT-L/14@336px": "openai/clip-vit-large-patch14-336",
}
_RESNETS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64")

__all__ = ["available_models", "load", "tokenize"]


def available_models() -> list[str]:
    """OpenAI's model names that ``load`` maps to hub repositories.

    Example:
        >>> available_models()
        ['ViT-B/32', 'ViT-B/16', 'ViT-L/14', 'ViT-L/14@336px']
    """
    return list(_MODELS)


class Preprocess:
    """``preprocess(image) -> (3, H, W)`` float32 pixels, exactly as ``CLIPImageProcessor`` makes them.

    Takes a PIL image (as OpenAI's), or a (C,H,W)/(H,W,C) uint8 or [0, 1] float array/tensor.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config

    def __call__(self, image: Any) -> torch.Tensor:
        if not hasattr(image, "getbands"):
            image = tensor_to_pil(as_chw_tensor(image))
        return preprocess_pil(image, self.config)

    def __repr__(self) -> str:
        h, w = self.config.output_size
        return f"Preprocess(resize shortest side, center crop {h}x{w}, CLIPImageProcessor-exact)"


class CLIP(torch.nn.Module):
    """OpenAI's ``CLIP`` model interface over a transformers ``CLIPModel``.

    Attributes:
        model: the wrapped ``transformers.CLIPModel``.
        context_length: the text tower's token limit (77 for OpenAI's models).
        input_resolution: the vision tower's image size.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self.input_resolution = int(model.config.vision_config.image_size)
        self.vocab_size = int(model.config.text_config.vocab_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.logit_scale.dtype

    @property
    def logit_scale(self) -> torch.nn.Parameter:
        return self.model.logit_scale

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) preprocessed pixels -> (N, D) image features (not normalized), in the model's dtype."""
        pixels = image.to(device=self.model.logit_scale.device, dtype=self.dtype)
        return pooled_features(self.model.get_image_features(pixel_values=pixels))

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids from ``tokenize`` -> (N, D) text features (not normalized), in the model's dtype.

        Features come from the end-of-text token (the highest id, as OpenAI's). Padding after the
        last end-of-text token is dropped first: causal attention makes it irrelevant, and it is most
        of the 77 positions.
        """
        ids = text.to(device=self.model.logit_scale.device, dtype=torch.long)
        if ids.ndim == 1:
            ids = ids[None]
        length = int(ids.argmax(dim=-1).max()) + 1
        return _pooled_text(self.model, ids[:, :length])

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits_per_image (N_img, N_txt), logits_per_text (N_txt, N_img))``: scaled cosine similarities."""
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=1, keepdim=True)
        text_features = text_features / text_features.norm(dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def _pooled_text(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return pooled_features(model.get_text_features(input_ids=ids))


def load(
    name: str | os.PathLike,
    device: str | torch.device | None = None,
    jit: bool = False,
    download_root: str | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
    allow_pickle: bool = False,
) -> tuple[CLIP, Preprocess]:
    """Load a CLIP model and its preprocessing, as OpenAI's ``clip.load`` does.

    Args:
        name: ``ViT-B/32``, ``ViT-B/16``, ``ViT-L/14``, ``ViT-L/14@336px``, or any source
            ``ClipScorer.from_pretrained`` takes (hub id, CLIP folder, checkpoint).
        device: default CUDA when available, else CPU.
        jit: must be False (there is no TorchScript model).
        download_root: ignored; files go to the Hugging Face cache.
        dtype: default float16 on CUDA, float32 elsewhere (as OpenAI's).
        local_files_only: never touch the network (default: ``HF_HUB_OFFLINE``).
        allow_pickle: accept ``.ckpt``/``.pt``/``.bin`` files.

    Returns:
        ``(model, preprocess)``.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from sdclip.testing import random_clip_model, save_clip_folder
        >>> folder = save_clip_folder(random_clip_model(), tempfile.mkdtemp())  # load("ViT-L/14") needs the hub
        >>> model, preprocess = load(folder, device="cpu")
        >>> image = preprocess(Image.new("RGB", (300, 200))).unsqueeze(0)
        >>> with torch.no_grad():
        ...     logits_per_image, logits_per_text = model(image, tokenize(["a diagram", "a dog", "a cat"]))
        >>> logits_per_image.shape
        torch.Size([1, 3])
    """
    from ..models.loading import load_clip_model

    if jit:
        raise ModelSourceError("jit=True: sdclip.clip has no TorchScript models; use jit=False (as fast with SDPA)")
    if download_root is not None:
        warnings.warn("download_root is ignored: sdclip.clip uses the Hugging Face cache", UserWarning, stacklevel=2)
    key = os.fspath(name)
    if key in _RESNETS:
        raise ModelSourceError(
            f"model '{key}': OpenAI's ResNet CLIP models have no transformers port; use one of "
            f"{', '.join(_MODELS)} or a CLIP model folder"
        )
    source = _MODELS.get(key, key)
    model, _, preprocessor = load_clip_model(
        source, device=device, dtype=dtype, local_files_only=local_files_only, allow_pickle=allow_pickle
    )
    config = PreprocessConfig.from_dict(preprocessor, image_size=int(model.config.vision_config.image_size))
    return CLIP(model).eval(), Preprocess(config)


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """Token ids as OpenAI's ``clip.tokenize``: (N, context_length) int32, start/end tokens, zero padding.

    Args:
        texts: one text or a list.
        context_length: positions per row (77 for OpenAI's models).
        truncate: cut over-long texts (the last kept position becomes the end-of-text token)
            instead of raising.

    Raises:
        PromptError: a text longer than ``context_length`` tokens with ``truncate=False``.

    Example:
        >>> tokenize("a cat")[0, :4].tolist()
        [49406, 320, 2368, 49407]
    """
    from ..models.tokenizer import load_tokenizer

    items = [texts] if isinstance(texts, str) else list(texts)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise PromptTypeError(f"texts[{index}]: expected a string, got {type(item).__name__} {item!r}")
    tokenizer = load_tokenizer()
    result = torch.zeros(len(items), context_length, dtype=torch.int)
    if not items:
        return result
    for row, (text, ids) in enumerate(zip(items, tokenizer(items, verbose=False).input_ids)):
        if len(ids) > context_length:
            if not truncate:
                raise PromptError(
                    f"texts[{row}]: {text[:60]!r}{'...' if len(text) > 60 else ''} is {len(ids)} tokens, longer "
                    f"than the context length {context_length}; shorten it or pass truncate=True"
                )
            ids = ids[:context_length]
            ids[-1] = tokenizer.eos_token_id
        result[row, : len(ids)] = torch.tensor(ids, dtype=torch.int)
    return result
