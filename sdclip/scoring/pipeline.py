"""The image pipeline every scorer shares: any image input to batches of pixels on the model's device.

Files are opened and decoded, and PIL images preprocessed, in worker threads while the model runs on
the batch before (two batches ahead). ``ImagePipeline.to_pixels`` is the one place a batch of prepared
images becomes a ``(B, 3, h, w)`` tensor on the device. With a ``jpeg_decode`` (``gpu_decode.jpeg_decoder``)
workers only read JPEG files' bytes and each batch's JPEGs are decoded on the GPU at once (nvjpeg);
batches reach a GPU from pinned memory and are placed with ``index_copy_``, so no batch waits for
the GPU's queue on the host.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ImageInputError
from .gpu_decode import decode_prepared, device_index, gpu_jpeg_bytes, stack_for_device
from .images import as_chw_tensor, load_image
from .preprocess import PreprocessConfig, pil_to_uint8, preprocess_pil, tensor_to_pil

if TYPE_CHECKING:
    import torch

Preprocessing = Literal["auto", "exact", "fast"]
# what a worker thread hands back for one image: ("pixels", (3, h, w) float32 exact pixels),
# ("raw", (3, H, W) uint8 or float tensor for the batched device path), ("jpeg", (path, bytes)) for the
# GPU decoder, or ("error", message)
Prepared = tuple[str, Any]


@dataclass(frozen=True)
class PixelBatch:
    """One batch of images, ready for a vision tower.

    Attributes:
        start: index (in the images given) of this batch's first image.
        size: images in the batch, failed ones included.
        pixels: (len(ok), 3, h, w) in the model's dtype on its device, or None when every image failed.
        ok: positions (within the batch) of the images that have pixels, in order.
        errors: per image, None or why it failed.
    """

    start: int
    size: int
    pixels: torch.Tensor | None
    ok: tuple[int, ...]
    errors: tuple[str | None, ...]


class ImagePipeline:
    """Turns image inputs into ``PixelBatch``es, decoding ahead of the model in a thread pool.

    Args:
        config: the model's preprocessing.
        device, dtype: where and in what dtype the pixels go (the model's).
        batch_size: images per batch.
        preprocessing: ``"auto"``, ``"exact"`` or ``"fast"`` (see ``ClipScorer``).
        workers: decoding threads.
        exif_transpose: turn files and PIL images upright by their EXIF orientation tag first.
        jpeg_decode: a batched GPU JPEG decoder (``gpu_decode.jpeg_decoder``), or None to decode on the CPU.

    Example:
        >>> import torch
        >>> pipeline = ImagePipeline(PreprocessConfig(), device="cpu", dtype=torch.float32, batch_size=2)
        >>> [(b.start, tuple(b.pixels.shape)) for b in pipeline.batches([torch.zeros(3, 8, 8)] * 3)]
        [(0, (2, 3, 224, 224)), (2, (1, 3, 224, 224))]
    """

    def __init__(
        self,
        config: PreprocessConfig,
        *,
        device: Any,
        dtype: Any,
        batch_size: int,
        preprocessing: Preprocessing = "auto",
        workers: int = 1,
        exif_transpose: bool = False,
        jpeg_decode: Callable[[list], list] | None = None,
    ) -> None:
        import torch

        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.preprocessing = preprocessing
        self.workers = workers
        self.exif_transpose = exif_transpose
        self.jpeg_decode = jpeg_decode

    def prepare(self, item: Any, index: int, *, cpu: bool = False) -> Prepared:
        """CPU-side work for one image (runs in a worker thread); never raises. With a ``jpeg_decode``
        (and not ``cpu``), JPEG files nvjpeg reads as Pillow does are only read: ("jpeg", (path, bytes))."""
        # EXIF orientation is applied by Pillow only: such files stay on the CPU path
        if self.jpeg_decode is not None and not cpu and not self.exif_transpose and isinstance(item, os.PathLike):
            data = gpu_jpeg_bytes(item)
            if data is not None:
                return "jpeg", (item, data)
        try:
            if isinstance(item, os.PathLike):
                item = load_image(item, exif_transpose=self.exif_transpose)
            elif self.exif_transpose and hasattr(item, "getexif"):
                from PIL import ImageOps

                item = ImageOps.exif_transpose(item)
            if hasattr(item, "getbands"):  # PIL
                if item.width < 1 or item.height < 1:
                    raise ImageInputError(f"images[{index}]: image is {item.width}x{item.height} pixels; "
                                          "expected at least 1x1")
                if self.preprocessing == "fast":
                    return "raw", pil_to_uint8(item)
                return "pixels", preprocess_pil(item, self.config)
            tensor = as_chw_tensor(item, name=f"images[{index}]")
            if self.preprocessing == "exact":
                return "pixels", preprocess_pil(tensor_to_pil(tensor), self.config)
            return "raw", tensor
        except ImageInputError as error:
            return "error", str(error)
        except Exception as error:  # a broken decoder plugin, out of memory: report it for this image
            return "error", f"images[{index}]: {type(error).__name__}: {error}"

    def to_pixels(self, prepared: Sequence[Prepared]) -> tuple[torch.Tensor | None, tuple[int, ...]]:
        """Stack a batch's prepared images into (B_ok, 3, h, w) pixels on the device; also which were ok."""
        import torch

        from .preprocess import preprocess_tensors

        ok = tuple(i for i, (kind, _) in enumerate(prepared) if kind != "error")
        if not ok:
            return None, ok
        h, w = self.config.output_size
        pixels = torch.empty(len(ok), 3, h, w, dtype=self.dtype, device=self.device)
        exact = [k for k, i in enumerate(ok) if prepared[i][0] == "pixels"]
        raw = [k for k, i in enumerate(ok) if prepared[i][0] == "raw"]
        if exact:  # pinned on CUDA; index_copy_ with a device index: no host wait for the GPU
            stacked = stack_for_device([prepared[ok[k]][1] for k in exact], self.device)
            pixels.index_copy_(0, device_index(exact, self.device),
                               stacked.to(self.device, non_blocking=True).to(self.dtype))
        if raw:
            pixels.index_copy_(0, device_index(raw, self.device),
                               preprocess_tensors([prepared[ok[k]][1] for k in raw], self.config,
                                                  device=self.device, dtype=self.dtype))
        return pixels, ok

    def batches(self, items: Sequence[Any]) -> Iterator[PixelBatch]:
        """``PixelBatch``es in order; batch k+1 and k+2 are decoded while the caller works on batch k."""
        size = self.batch_size
        starts = list(range(0, len(items), size))
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sdclip-images") as pool:
            def submit(start: int) -> list:
                return [pool.submit(self.prepare, item, start + k) for k, item in enumerate(items[start : start + size])]

            pending = deque(submit(start) for start in starts[:2])
            for number, start in enumerate(starts):
                prepared = [future.result() for future in pending.popleft()]
                if number + 2 < len(starts):
                    pending.append(submit(starts[number + 2]))
                if self.jpeg_decode is not None:  # this batch's JPEG files, decoded on the GPU at once
                    prepared = decode_prepared(prepared, self.jpeg_decode,
                                               lambda item, index: self.prepare(item, index, cpu=True), start)
                errors = tuple(value if kind == "error" else None for kind, value in prepared)
                pixels, ok = self.to_pixels(prepared)
                yield PixelBatch(start, len(prepared), pixels, ok, errors)
