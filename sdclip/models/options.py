"""How a model is loaded: one frozen set of options every loader takes.

The public entry points (``load_text_encoder(s)``, ``load_clip_model``, ``TextConditioner.from_pretrained``,
``ClipScorer.from_pretrained``, ``sdclip.clip.load``) keep their keyword arguments; each builds one
``LoadOptions`` and passes it down, so a new option is added here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .devices import resolve_device, resolve_dtype

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LoadOptions:
    """Where and how model weights are loaded.

    Attributes:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``; None: CUDA when available, else CPU.
        dtype: ``"fp32"``/``"fp16"``/``"bf16"`` or a floating ``torch.dtype``; None: float16 on CUDA,
            float32 elsewhere.
        local_files_only: never touch the network; None: follow ``HF_HUB_OFFLINE``.
        allow_pickle: accept ``.ckpt``/``.pt``/``.bin`` files, read with ``torch.load(weights_only=True)``.
        trainable: load for training: parameters require gradients and the model is in ``train()`` mode.
            The default (False) gives frozen models in ``eval()`` mode, for inference.

    Example:
        >>> options = LoadOptions(device="cpu", dtype="fp16")
        >>> options.torch_device(), options.torch_dtype()
        (device(type='cpu'), torch.float16)
    """

    device: str | torch.device | None = None
    dtype: str | torch.dtype | None = None
    local_files_only: bool | None = None
    allow_pickle: bool = False
    trainable: bool = False

    def torch_device(self) -> torch.device:
        """``device`` checked against this machine (raises ``ModelSourceError`` when it has no such device)."""
        return resolve_device(self.device)

    def torch_dtype(self, device: torch.device | None = None) -> torch.dtype:
        """``dtype`` as a floating ``torch.dtype``; its default depends on ``device`` (default: ``torch_device()``)."""
        return resolve_dtype(self.dtype, self.torch_device() if device is None else device)
