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
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ModelSourceError(f"device '{device}': not a torch device (expected cpu, cuda, cuda:1, mps...)") from error
    _check_available(resolved, device)
    return resolved


def available_devices() -> list[str]:
    """The compute devices this machine has, as ``--device`` takes them.

    Example:
        >>> available_devices()[0]
        'cpu'
    """
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def _check_available(resolved: torch.device, name: object) -> None:
    """Refuse a device this machine lacks (CUDA without a GPU, an index past the last GPU) or ``meta``."""
    import torch

    available = ", ".join(available_devices())
    if resolved.type == "meta":
        raise ModelSourceError(
            f"device '{name}': the meta device holds no data and cannot run a model; available: {available}"
        )
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelSourceError(f"device '{name}': this machine has no CUDA GPU (or torch was built without CUDA); "
                                   f"available: {available}")
        if resolved.index is not None and resolved.index >= count:
            raise ModelSourceError(f"device '{name}': this machine has {count} CUDA GPU(s); available: {available}")
    if resolved.type == "mps" and "mps" not in available:
        raise ModelSourceError(f"device '{name}': this machine has no MPS (Apple GPU); available: {available}")


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
        if not dtype.is_floating_point:
            raise ModelSourceError(f"dtype '{dtype}': models need a floating-point dtype; expected one of fp32, fp16, bf16")
        return dtype
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ModelSourceError(f"dtype '{dtype}': expected one of fp32, fp16, bf16")
    return getattr(torch, name)
