"""Image inputs for CLIP scoring: what users pass in, and the pixels CLIP's vision tower sees.

Two ways from an image to pixels, both ending in ``(N, 3, H, W)`` normalized tensors:

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
  is at most 0.03 per pixel and 2e-3 on average; measured in ``tests/test_images.py``.

Float inputs are taken to be in [0, 1] and are never rescaled again (``CLIPImageProcessor`` rescales a
[0, 1] float image twice and CLIP sees an almost uniform gray); values outside [0, 1] are an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ImageInputError, ModelSourceError

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}  # PIL filter id -> interpolate mode
_FLOAT_SLACK = 1e-3  # float images may overshoot [0, 1] this much (decoder rounding) and are clamped


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


# -- reading files --------------------------------------------------------------------------------


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file, or raise ``ImageInputError`` saying what is wrong with it.

    Files over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) are refused before
    decoding.

    Example:
        >>> load_image("no/such.png")
        Traceback (most recent call last):
        ...
        sdclip.errors.ImageInputError: image 'no/such.png': no such file
    """
    from PIL import Image, UnidentifiedImageError

    name = os.fspath(path)
    try:
        if os.path.isfile(name) and os.path.getsize(name) == 0:
            raise ImageInputError(f"image '{name}': file is empty (0 bytes)")
        image = Image.open(name)
        limit = Image.MAX_IMAGE_PIXELS
        if limit and image.width * image.height > limit:
            raise ImageInputError(
                f"image '{name}': {image.width}x{image.height} pixels is over Pillow's decompression-bomb limit "
                f"of {limit} pixels; raise PIL.Image.MAX_IMAGE_PIXELS if you trust this file"
            )
        image.load()
    except FileNotFoundError as error:
        raise ImageInputError(f"image '{name}': no such file") from error
    except Image.DecompressionBombError as error:
        raise ImageInputError(f"image '{name}': over Pillow's decompression-bomb limit ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageInputError(f"image '{name}': not an image file Pillow can read") from error
    except OSError as error:
        if error.strerror:  # a folder, no permission, an I/O error
            raise ImageInputError(f"image '{name}': cannot be read ({error.strerror})") from error
        raise ImageInputError(f"image '{name}': truncated or corrupt ({error})") from error
    return image


def find_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files given, plus the images in folders given (recursively, sorted; suffixes ``IMAGE_SUFFIXES``).

    Raises:
        ImageInputError: a path that does not exist, or no images at all.

    Example:
        >>> find_images(["no/such/folder"])
        Traceback (most recent call last):
        ...
        sdclip.errors.ImageInputError: --images 'no/such/folder': no such file or folder
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.exists() or path.is_symlink():
            found.append(path)
        else:
            raise ImageInputError(f"--images '{raw}': no such file or folder")
    if not found:
        raise ImageInputError(
            f"--images {' '.join(map(str, paths))}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return found


# -- what users pass in ---------------------------------------------------------------------------


def image_list(images: Any, *, name: str = "images") -> list[Any]:
    """Flatten any accepted image input into a list of single images (PIL, Path, or array/tensor).

    Accepted: a PIL image, a file path, a (C,H,W)/(H,W,C)/(H,W) array or tensor, a batched 4-d one,
    a diffusers pipeline output (its ``.images``), or a list mixing these.

    Example:
        >>> import torch
        >>> len(image_list(torch.zeros(4, 3, 8, 8, dtype=torch.uint8)))
        4
    """
    if _is_batchlike(images) or not isinstance(images, (list, tuple)):
        images = [images]
    flat: list[Any] = []
    for index, item in enumerate(images):
        if hasattr(item, "images") and not _is_array(item):  # a diffusers pipeline output
            flat += image_list(item.images, name=f"{name}[{index}].images")
        elif _is_array(item) and item.ndim == 4:
            flat += list(item)
        elif _is_array(item) and item.ndim in (2, 3):
            flat.append(item)
        elif isinstance(item, (str, os.PathLike)):
            flat.append(Path(item))
        elif _is_pil(item):
            flat.append(item)
        else:
            shape = f" of shape {tuple(item.shape)}" if _is_array(item) else ""
            raise ImageInputError(
                f"{name}[{index}]: expected a PIL image, a file path, a uint8 or [0, 1] float array/tensor "
                f"(C,H,W), (H,W,C) or batched, or a diffusers pipeline output; got {type(item).__name__}{shape}"
            )
    if not flat:
        raise ImageInputError(f"{name}: expected at least one image, got none")
    return flat


def _is_pil(value: Any) -> bool:
    from PIL import Image

    return isinstance(value, Image.Image)


def _is_array(value: Any) -> bool:
    return hasattr(value, "ndim") and hasattr(value, "shape") and hasattr(value, "dtype")


def _is_batchlike(value: Any) -> bool:
    return _is_array(value) or _is_pil(value) or hasattr(value, "images") or isinstance(value, (str, os.PathLike))


def as_chw_tensor(image: Any, *, name: str = "image") -> torch.Tensor:
    """An array/tensor image as a (3, H, W) tensor: uint8 as is, floats as float32 in [0, 1].

    Channels first or last are both read (as transformers infers them: a leading 1, 3 or 4 means
    channels first). One channel is repeated; an alpha channel is composited onto white. Integer
    values must lie in [0, 255] and float values in [0, 1].

    Example:
        >>> import numpy as np
        >>> as_chw_tensor(np.zeros((8, 6, 3), dtype=np.uint8)).shape
        torch.Size([3, 8, 6])
    """
    import numpy as np
    import torch

    if isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.array(image) if not image.flags.writeable else np.ascontiguousarray(image))
    else:
        tensor = image
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ImageInputError(f"{name}: expected uint8 or float pixels, got dtype {tensor.dtype}")
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.shape[0] not in (1, 2, 3, 4):
        if tensor.shape[-1] not in (1, 2, 3, 4):
            raise ImageInputError(f"{name}: shape {tuple(tensor.shape)} has no channel axis of size 1, 3 or 4 "
                                  "first or last; expected (C,H,W) or (H,W,C)")
        tensor = tensor.permute(2, 0, 1)
    if tensor.dtype.is_floating_point:
        low, high = float(tensor.min()), float(tensor.max())
        if low < -_FLOAT_SLACK or high > 1 + _FLOAT_SLACK:
            hint = ("a VAE's raw output is in [-1, 1]: pass (x / 2 + 0.5).clamp(0, 1)" if low < 0 else
                    "for 0-255 values pass a uint8 tensor or divide by 255")
            raise ImageInputError(f"{name}: float pixels must be in [0, 1], found [{low:.3g}, {high:.3g}]; {hint}")
        tensor = tensor.float().clamp(0, 1)
    elif tensor.dtype != torch.uint8:
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or high > 255:
            raise ImageInputError(f"{name}: integer pixels must be in [0, 255], found [{low}, {high}]; "
                                  "16-bit images: pass the PIL image or the file instead")
        tensor = tensor.to(torch.uint8)
    channels = tensor.shape[0]
    if channels in (2, 4):  # alpha: composite onto white, as CLIPImageProcessor does
        white = 1.0 if tensor.dtype.is_floating_point else 255.0
        color, alpha = tensor[:-1].float(), tensor[-1:].float() / white
        blended = alpha * color + (1 - alpha) * white
        tensor = blended.round().to(torch.uint8) if white == 255.0 else blended
        channels -= 1
    if channels == 1:
        tensor = tensor.expand(3, -1, -1)
    return tensor


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
    import torch
    from PIL import Image

    rgb = to_rgb(image)
    height, width = rgb.height, rgb.width
    if config.shortest_edge is not None or config.resize_to is not None:
        new_height, new_width = config.resized_size(height, width)
        rgb = rgb.resize((new_width, new_height), resample=Image.Resampling(config.resample))
    pixels = pil_to_uint8(rgb)  # (3, H, W) uint8
    if config.crop is not None:
        pixels = _center_crop(pixels, config.crop)
    # transformers rescales in float64 and then casts to float32; doing the same keeps the last bit
    scaled = pixels.to(torch.float64) * config.rescale_factor if config.do_rescale else pixels.to(torch.float64)
    return _normalize(scaled.to(torch.float32), config)


def _normalize_table(config: PreprocessConfig, device: Any) -> torch.Tensor:
    """(3, 256) float32: what each 8-bit value of each channel becomes, computed as ``preprocess_pil`` does."""
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
        batch = torch.stack([images[i] for i in indices])  # (B, 3, H, W)
        if batch.device.type == "cpu" and device.type == "cuda":
            batch = batch.pin_memory()  # so the copy below overlaps with work already queued on the GPU
        batch = batch.to(device, non_blocking=True)
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
        result[indices] = pixels.to(result.dtype)
    return result
