"""Feeding images to a GPU fast: worker count, pinned staging, and optional JPEG decoding on the GPU.

Used by ``pipeline.ImagePipeline`` (the one place a batch becomes pixels on the device) and
``preprocess.preprocess_tensors``. A scorer decodes files in a pool of worker threads (Pillow releases the GIL while it decodes
and resizes), one per core this process may use, and copies batches to the GPU from pinned memory so
the copy runs while the GPU is busy. With ``gpu_decode=True`` JPEG files skip the CPU decoder: the
worker reads the file's bytes, and the whole batch is decoded at once by nvjpeg through torchvision's
``decode_jpeg(device="cuda")`` (the ``gpu`` extra). That path runs only where it can: a CUDA device
and an importable torchvision; elsewhere ``jpeg_decoder`` returns None and files are decoded on the
CPU as usual. JPEGs nvjpeg may not read the way Pillow does (grayscale, CMYK, 12-bit, lossless or
arithmetic-coded, no end marker, Adobe RGB) and files over Pillow's pixel limit go to Pillow too, as
does every JPEG of a batch that nvjpeg fails on, so error messages stay Pillow's.

nvjpeg's IDCT and chroma upsampling are not libjpeg-turbo's: decoded pixels may differ by a few
8-bit levels, so this path is opt-in and needs ``preprocessing="fast"`` (already a within-tolerance
path); the GPU suite measures the score difference it makes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_NVJPEG_FRAMES = {0xC0, 0xC1, 0xC2}  # SOF0 baseline, SOF1 extended, SOF2 progressive (Huffman coded)
_NO_LENGTH = {0x01, *range(0xD0, 0xDA)}  # TEM, RST0-7, SOI, EOI: markers without a length field
_MAX_WORKERS = 32

__all__ = ["decode_prepared", "default_workers", "device_index", "gpu_jpeg_bytes", "jpeg_decoder", "jpeg_frame",
           "stack_for_device"]


def default_workers() -> int:
    """Decoding threads: one per core this process may run on (its CPU affinity), at most 32.

    Example:
        >>> 1 <= default_workers() <= 32
        True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(_MAX_WORKERS, cores))


def device_index(positions: Sequence[int], device: torch.device) -> torch.Tensor:
    """``positions`` as an int64 index tensor on ``device``, copied without stalling the GPU's queue.

    Indexing a CUDA tensor with a Python list copies the list to the GPU synchronously, which waits
    for every kernel already queued: the next batch then cannot overlap the current one. A pinned
    index copied asynchronously does not wait.

    Example:
        >>> import torch
        >>> device_index([0, 2], torch.device("cpu"))
        tensor([0, 2])
    """
    import torch

    index = torch.tensor(list(positions), dtype=torch.long)
    return index.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else index


def stack_for_device(images: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Stack same-shape CPU tensors for a copy to ``device``: into pinned memory when that is CUDA.

    One copy instead of two (stack, then pin), and images that are channels-last views (what a decoded
    (H, W, C) array permuted to (C, H, W) is) are stacked as such: a plain memory copy, the axes
    permuted back as a view. Call ``.to(device, non_blocking=True).contiguous()`` on the result.

    Example:
        >>> import torch
        >>> hwc = torch.zeros(8, 6, 3, dtype=torch.uint8)
        >>> stack_for_device([hwc.permute(2, 0, 1)] * 2, torch.device("cpu")).shape
        torch.Size([2, 3, 8, 6])
    """
    import torch

    pinned = device.type == "cuda" and images[0].device.type == "cpu"
    channels_last = all(image.ndim == 3 and image.permute(1, 2, 0).is_contiguous() for image in images)
    parts = [image.permute(1, 2, 0) for image in images] if channels_last else list(images)
    out = torch.empty((len(parts), *parts[0].shape), dtype=parts[0].dtype, pin_memory=pinned)
    torch.stack(parts, out=out)
    return out.permute(0, 3, 1, 2) if channels_last else out


# -- JPEG on the GPU ------------------------------------------------------------------------------


def jpeg_decoder(device: Any) -> Callable[[list[torch.Tensor]], list[torch.Tensor]] | None:
    """A batched nvjpeg decoder to (3, H, W) uint8 RGB tensors on ``device``, or None where it cannot run.

    None unless ``device`` is CUDA and ``torchvision.io.decode_jpeg`` imports (torchvision missing, or
    built for another torch, gives None: files are then decoded on the CPU).

    Example:
        >>> jpeg_decoder("cpu") is None
        True
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # ImportError, or an extension built for another torch (OSError, RuntimeError)
        return None
    side = torch.cuda.Stream(device=device)

    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        # The decoder allocates its outputs on the current stream but writes them from a stream of its
        # own that does not wait for ours (pytorch/vision#9606): on the main stream it could be handed
        # a block that queued kernels still read. On a side stream it only gets blocks this stream
        # freed, and each output is kept from reuse until the main stream is done with it.
        main = torch.cuda.current_stream(device)
        with torch.cuda.stream(side):
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        main.wait_stream(side)
        for image in images:
            image.record_stream(main)
        return images

    return decode


def jpeg_frame(data: bytes) -> tuple[int, int, int, int, int, bool] | None:
    """(frame marker, precision, height, width, components, untransformed) from a JPEG's header, or None.

    None when ``data`` is not a JPEG or its header ends before the frame header.

    Example:
        >>> jpeg_frame(b"\\x89PNG\\r\\n") is None
        True
    """
    if data[:2] != b"\xff\xd8":
        return None
    position, untransformed = 2, False
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _NO_LENGTH:
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            untransformed = segment[11] == 0  # Adobe transform 0: RGB (or CMYK) stored as is, not YCbCr
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            if len(segment) < 6:
                return None
            height, width = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
            return marker, segment[0], height, width, segment[5], untransformed
        if marker == 0xDA:  # start of scan before any frame header
            return None
        position += 2 + length
    return None


def gpu_jpeg_bytes(path: str | os.PathLike) -> torch.Tensor | None:
    """The file's bytes as a (n,) uint8 CPU tensor when nvjpeg should decode it, else None (Pillow will).

    nvjpeg gets 8-bit baseline/progressive YCbCr JPEGs with an end marker, within Pillow's pixel limit.
    Unreadable files give None too: Pillow then reports what is wrong with them.

    Example:
        >>> gpu_jpeg_bytes("no/such.jpg") is None
        True
    """
    import torch
    from PIL import Image

    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    frame = jpeg_frame(data)
    if frame is None or not data.endswith(b"\xff\xd9"):
        return None
    marker, precision, height, width, components, untransformed = frame
    limit = Image.MAX_IMAGE_PIXELS
    if (marker not in _NVJPEG_FRAMES or precision != 8 or components != 3 or untransformed or not height or not width
            or (limit and height * width > limit)):
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_prepared(
    prepared: list[tuple[str, Any]], decode: Callable, fallback: Callable[[Any, int], tuple[str, Any]], start: int
) -> list[tuple[str, Any]]:
    """Decode a batch's ``("jpeg", (path, bytes))`` entries at once: each becomes ``("raw", (3, H, W) uint8)``.

    If the decoder fails on the batch, all of its JPEGs go through ``fallback(path, index)`` (the CPU
    path, whose messages name what is wrong with a file) instead.
    """
    jobs = [k for k, (kind, _) in enumerate(prepared) if kind == "jpeg"]
    if not jobs:
        return prepared
    out = list(prepared)
    try:
        images = decode([prepared[k][1][1] for k in jobs])
    except Exception:  # one bad file fails nvjpeg's whole batch
        images = None
    for position, k in enumerate(jobs):
        out[k] = ("raw", images[position]) if images is not None else fallback(prepared[k][1][0], start + k)
    return out
