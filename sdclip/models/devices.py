"""Device and dtype arguments: names users type, defaults that fit the machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModelSourceError

if TYPE_CHECKING:
    import torch

_DTYPES = {
    "fp32": "float32", "float32": "float32", "float": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
}  # fmt: skip


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; None means CUDA when available, else CPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ModelSourceError(f"device '{device}': not a torch device (expected cpu, cuda, cuda:1, mps...)") from error


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``dtype`` as a ``torch.dtype``; None means float16 on CUDA, float32 elsewhere.

    Example:
        >>> import torch
        >>> resolve_dtype("fp16", torch.device("cpu"))
        torch.float16
    """
    import torch

    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ModelSourceError(f"dtype '{dtype}': expected one of fp32, fp16, bf16")
    return getattr(torch, name)
