"""The pixels CLIP's vision tower sees: a ``preprocessor_config.json`` parsed once, and two ways from
an image to normalized ``(N, 3, H, W)`` pixels.

* ``preprocess_pil``: exactly ``transformers.CLIPImageProcessor`` (its PIL backend): convert to RGB
  (transparency composited onto white), PIL bicubic resize of the shortest side, center crop,
  ``x / 255`` computed in float64, then ``(x - mean) / std`` in float32. Runs on the CPU, one image
  at a time (worker threads run several at once).
* ``preprocess_tensors``: the same 8-bit pipeline on tensors, batched on whatever device they are
  (the GPU when scoring there): ``interpolate(mode="bicubic", antialias=True)`` (PIL's filter,
  a = -0.5) horizontally then vertically with rounding to 8 bits after each pass, as PIL does, then
  crop and a lookup table for rescale + normalize. Only PIL's fixed-point arithmetic differs: values
  that land near a rounding boundary may end one 8-bit level away (at most two): about 0.1% of the
  pixels of photos and noise, up to 7% on synthetic staircase gradients. After normalization that
  is at most 0.03 per pixel and 2e-3 on average; measured in ``tests/scoring/test_images.py``.

No file or input handling here (that is ``images.py``): tensors and PIL images in, pixels out.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ImageInputError, ModelSourceError
from .gpu_decode import device_index, stack_for_device

if TYPE_CHECKING:
    import torch
    from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}  # PIL filter id -> interpolate mode


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become pixels: a ``preprocessor_config.json`` of a CLIP model, parsed once.

    Attributes:
        shortest_edge: resize so the shorter side is this long (aspect kept), or None.
        resize_to: resize to exactly this (height, width) instead, or None (no resize when both are None).
        crop: center crop (height, width), or None.
        mean, std: per-channel normalization.
        rescale_factor: multiplies 8-bit values (1/255).
        resample: PIL filter id (3 = bicubic, CLIP's).

    Example:
        >>> PreprocessConfig.from_dict({"size": 336, "crop_size": 336}, image_size=336).output_size
        (336, 336)
    """

    shortest_edge: int | None = 224
    resize_to: tuple[int, int] | None = None
    crop: tuple[int, int] | None = (224, 224)
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = 3
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_dict(cls, config: dict | None, *, image_size: int) -> PreprocessConfig:
        """Parse a ``preprocessor_config.json`` dict (either transformers layout); None gives CLIP's defaults.

        ``image_size`` (the vision tower's) sizes the defaults, so a 336 px model without a preprocessor
        file still gets 336 px inputs.
        """
        config = dict(config or {})
        size = config.get("size", image_size)
        shortest, resize_to = None, None
        if config.get("do_resize", True):
            if isinstance(size, int):
                shortest = size
            elif isinstance(size, dict) and "shortest_edge" in size:
                shortest = int(size["shortest_edge"])
            elif isinstance(size, dict) and {"height", "width"} <= set(size):
                resize_to = (int(size["height"]), int(size["width"]))
            else:
                raise ModelSourceError(f"preprocessor config: size {size!r} is not understood; expected an int, "
                                       "{'shortest_edge': n} or {'height': h, 'width': w}")
        crop_size = config.get("crop_size", image_size)
        crop = None
        if config.get("do_center_crop", True):
            crop = (crop_size, crop_size) if isinstance(crop_size, int) else (
                int(crop_size["height"]), int(crop_size["width"]))
        if crop is None and resize_to is None:
            raise ModelSourceError("preprocessor config: without a center crop or a fixed (height, width) resize, "
                                   "images of different shapes cannot be batched; CLIP needs a fixed input size")
        return cls(
            shortest_edge=shortest,
            resize_to=resize_to,
            crop=crop,
            mean=tuple(float(v) for v in config.get("image_mean", OPENAI_CLIP_MEAN)),
            std=tuple(float(v) for v in config.get("image_std", OPENAI_CLIP_STD)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            resample=int(config.get("resample", 3)),
            do_rescale=bool(config.get("do_rescale", True)),
            do_normalize=bool(config.get("do_normalize", True)),
        )

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the pixels the vision tower gets."""
        return self.crop or self.resize_to  # type: ignore[return-value]

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step, with transformers' integer rounding (truncation)."""
        if self.resize_to is not None:
            return self.resize_to
        if self.shortest_edge is None:
            return height, width
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)


# -- conversions ----------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB PIL image, transparency composited onto white (exactly ``CLIPImageProcessor``'s conversion).

    Example:
        >>> from PIL import Image
        >>> to_rgb(Image.new("RGBA", (1, 1), (0, 0, 0, 0))).getpixel((0, 0))
        (255, 255, 255)
    """
    from PIL import Image

    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """A (3, H, W) uint8 or [0, 1] float tensor as an RGB PIL image (floats rounded, as diffusers does)."""
    import torch
    from PIL import Image

    if tensor.dtype.is_floating_point:
        tensor = (tensor.float() * 255).round()
    array = tensor.to("cpu", dtype=torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array, mode="RGB")


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """An image (converted to RGB as ``to_rgb``) as a (3, H, W) uint8 tensor."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(to_rgb(image)).copy()).permute(2, 0, 1)

# -- pixels ---------------------------------------------------------------------------------------


def _crop_box(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int, int, int]:
    """(pad_top, pad_left, top, left) of transformers' center crop (zero padding when too small)."""
    pad_top = max(0, -(-(crop[0] - height) // 2))
    pad_left = max(0, -(-(crop[1] - width) // 2))
    top = (max(height, crop[0]) - crop[0]) // 2
    left = (max(width, crop[1]) - crop[1]) // 2
    return pad_top, pad_left, top, left


def _center_crop(chw: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """Center crop of (..., H, W), zero-padded first when smaller than ``crop`` (as transformers)."""
    import torch.nn.functional as F

    height, width = chw.shape[-2:]
    pad_top, pad_left, top, left = _crop_box(height, width, crop)
    if pad_top or pad_left:
        pad_h, pad_w = max(crop[0], height) - height, max(crop[1], width) - width
        chw = F.pad(chw, (pad_left, pad_w - pad_left, pad_top, pad_h - pad_top))
    return chw[..., top : top + crop[0], left : left + crop[1]]


def _normalize(pixels: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """``(x - mean) / std`` per channel of (..., 3, H, W) float32, in float32 as transformers does."""
    import torch

    if not config.do_normalize:
        return pixels
    mean = torch.tensor(config.mean, dtype=pixels.dtype, device=pixels.device)[:, None, None]
    std = torch.tensor(config.std, dtype=pixels.dtype, device=pixels.device)[:, None, None]
    return (pixels - mean) / std


def preprocess_pil(image: Image.Image, config: PreprocessConfig) -> torch.Tensor:
    """One PIL image to (3, H, W) float32 pixels, exactly as ``CLIPImageProcessor`` (PIL backend) does.

    Example:
        >>> from PIL import Image
        >>> preprocess_pil(Image.new("RGB", (300, 200)), PreprocessConfig()).shape
        torch.Size([3, 224, 224])
    """
    import numpy as np
    import torch
    from PIL import Image

    rgb = to_rgb(image)
    height, width = rgb.height, rgb.width
    if config.shortest_edge is not None or config.resize_to is not None:
        new_height, new_width = config.resized_size(height, width)
        rgb = rgb.resize((new_width, new_height), resample=Image.Resampling(config.resample))
    # numpy, not torch: this runs in a worker thread per core, and torch's elementwise ops would each
    # start a team of intra-op threads per worker (cores x cores threads); the arithmetic is the same
    pixels = np.asarray(rgb)  # (H, W, 3) uint8
    if config.crop is not None:  # as _center_crop: zero-padded first when smaller than the crop
        (crop_h, crop_w), (height, width) = config.crop, pixels.shape[:2]
        pad_top, pad_left, top, left = _crop_box(height, width, config.crop)
        if pad_top or pad_left:
            pad_h, pad_w = max(crop_h, height) - height, max(crop_w, width) - width
            pixels = np.pad(pixels, ((pad_top, pad_h - pad_top), (pad_left, pad_w - pad_left), (0, 0)))
        pixels = pixels[top : top + crop_h, left : left + crop_w]
    # transformers rescales in float64 and then casts to float32; doing the same keeps the last bit
    scaled = pixels.astype(np.float64) * config.rescale_factor if config.do_rescale else pixels.astype(np.float64)
    values = scaled.astype(np.float32)
    if config.do_normalize:
        values = (values - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))  # (3, h, w) float32


@functools.lru_cache(maxsize=16)
def _normalize_table(config: PreprocessConfig, device: Any) -> torch.Tensor:
    """(3, 256) float32: what each 8-bit value of each channel becomes, computed as ``preprocess_pil`` does.

    Cached: building it on the CPU and copying it to a GPU each batch would wait for the GPU's queue."""
    import torch

    values = torch.arange(256, dtype=torch.float64)
    scaled = (values * config.rescale_factor if config.do_rescale else values).to(torch.float32)
    return _normalize(scaled.expand(3, 1, 256), config)[:, 0].to(device)


def preprocess_tensors(
    images: Sequence[torch.Tensor], config: PreprocessConfig, *, device: Any = None, dtype: Any = None
) -> torch.Tensor:
    """(3, H, W) uint8 or [0, 1] float tensors to (N, 3, h, w) pixels, batched on ``device``.

    PIL's 8-bit pipeline, on tensors: floats become 8-bit values (``round(255 * x)``, as diffusers
    saves them), the antialiased filter runs horizontally then vertically with rounding to 8 bits
    after each pass, and 8-bit values are rescaled and normalized through a lookup table built the way
    ``preprocess_pil`` computes them. Images of the same size share each ``interpolate`` call. The
    math runs in float32 on ``device`` (in half precision the filter sums near 255 are off by ~0.1
    level and flip roundings; next to the vision tower it costs nothing), and the result is cast to
    ``dtype`` (the model's; default float32).

    Example:
        >>> import torch
        >>> preprocess_tensors([torch.zeros(3, 512, 512, dtype=torch.uint8)], PreprocessConfig()).shape
        torch.Size([1, 3, 224, 224])
    """
    import torch
    import torch.nn.functional as F

    if not images:
        raise ImageInputError("images: expected at least one image, got none")
    device = torch.device(device) if device is not None else images[0].device
    out_h, out_w = config.output_size
    result = torch.empty(len(images), 3, out_h, out_w, dtype=dtype or torch.float32, device=device)
    table = _normalize_table(config, device)
    groups: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault((tuple(image.shape), image.dtype, image.device), []).append(index)
    mode = _RESAMPLE_MODES.get(config.resample, "bicubic")
    options = {"mode": mode} if mode.startswith("nearest") else {"mode": mode, "antialias": True, "align_corners": False}
    for (shape, _, _), indices in groups.items():
        if images[indices[0]].device.type == "cpu":  # pinned when bound for CUDA: the copy overlaps queued work
            batch = stack_for_device([images[i] for i in indices], device).to(device, non_blocking=True).contiguous()
        else:
            batch = torch.stack([images[i] for i in indices]).to(device, non_blocking=True)  # (B, 3, H, W)
        batch = batch.float() if batch.dtype == torch.uint8 else (batch.float() * 255).round()  # 0..255
        height, width = shape[-2:]
        if config.shortest_edge is not None or config.resize_to is not None:
            new_height, new_width = config.resized_size(height, width)
            # PIL resizes horizontally first and rounds to 8 bits (half up) after each pass
            if new_width != width:
                batch = F.interpolate(batch, size=(height, new_width), **options).add_(0.5).floor_().clamp_(0, 255)
            if new_height != height:
                batch = F.interpolate(batch, size=(new_height, new_width), **options).add_(0.5).floor_().clamp_(0, 255)
        if config.crop is not None:
            batch = _center_crop(batch, config.crop)
        levels = batch.long()
        pixels = torch.stack([table[c][levels[:, c]] for c in range(3)], dim=1)  # (B, 3, h, w) float32
        result.index_copy_(0, device_index(indices, device), pixels.to(result.dtype))  # no wait for the GPU
    return result
