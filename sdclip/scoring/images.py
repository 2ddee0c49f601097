"""Image inputs for scoring: what users pass in (files, PIL images, arrays, tensors, pipeline outputs),
read safely, and flattened into a list of single images.

Float inputs are taken to be in [0, 1] and are never rescaled again (``CLIPImageProcessor`` rescales a
[0, 1] float image twice and CLIP sees an almost uniform gray); values outside [0, 1] are an error.
The tensor math (resize, crop, normalize) is in ``preprocess.py``; its names are re-exported here so
``from sdclip.scoring.images import preprocess_pil`` keeps working.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import ImageInputError
from .preprocess import (  # noqa: F401  (re-exported: the public names this module had before the split)
    OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig, pil_to_uint8, preprocess_pil, preprocess_tensors,
    tensor_to_pil, to_rgb,
)  # fmt: skip

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_FLOAT_SLACK = 1e-3  # float images may overshoot [0, 1] this much (decoder rounding) and are clamped


# -- reading files --------------------------------------------------------------------------------


def load_image(path: str | os.PathLike, *, exif_transpose: bool = False) -> Image.Image:
    """Open and fully decode an image file, or raise ``ImageInputError`` saying what is wrong with it.

    Only regular files are opened (a FIFO, device, socket or folder is refused before any read, so
    nothing can block). Files over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``)
    are refused before decoding.

    Args:
        path: the image file.
        exif_transpose: turn the image upright by its EXIF orientation tag. Default False: the
            pixels as stored, which is what ``CLIPImageProcessor`` sees after ``Image.open``.

    Example:
        >>> load_image("no/such.png")
        Traceback (most recent call last):
        ...
        sdclip.errors.ImageInputError: image 'no/such.png': no such file
        >>> load_image("/dev/null")
        Traceback (most recent call last):
        ...
        sdclip.errors.ImageInputError: image '/dev/null': not a regular file (a character device); pass an image file
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = os.fspath(path)
    try:
        with _open_regular_file(name) as file:
            image = Image.open(file)
            limit = Image.MAX_IMAGE_PIXELS
            if limit and image.width * image.height > limit:
                raise ImageInputError(
                    f"image '{name}': {image.width}x{image.height} pixels is over Pillow's decompression-bomb "
                    f"limit of {limit} pixels; raise PIL.Image.MAX_IMAGE_PIXELS if you trust this file"
                )
            image.load()
    except FileNotFoundError as error:
        raise ImageInputError(f"image '{name}': no such file") from error
    except Image.DecompressionBombError as error:
        raise ImageInputError(f"image '{name}': over Pillow's decompression-bomb limit ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageInputError(f"image '{name}': not an image file Pillow can read") from error
    except OSError as error:
        if error.strerror:  # no permission, an I/O error
            raise ImageInputError(f"image '{name}': cannot be read ({error.strerror})") from error
        raise ImageInputError(f"image '{name}': truncated or corrupt ({error})") from error
    return ImageOps.exif_transpose(image) if exif_transpose else image


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_regular(name: str, mode: int, size: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((kind for test, kind in _FILE_KINDS if test(mode)), "not a file")
        raise ImageInputError(f"image '{name}': not a regular file ({kind}); pass an image file")
    if size == 0:
        raise ImageInputError(f"image '{name}': file is empty (0 bytes)")


def _open_regular_file(name: str) -> BinaryIO:
    """``open(name, "rb")`` for regular files only, checked on the open descriptor (no race with a swap).

    ``stat`` first, so a FIFO is refused without opening it (opening one blocks until a writer comes);
    the descriptor is then opened non-blocking and checked again before a byte is read.
    """
    info = os.stat(name)
    _check_regular(name, info.st_mode, info.st_size)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(name, flags)
    try:
        info = os.fstat(fd)
        _check_regular(name, info.st_mode, info.st_size)
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
    if tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
        raise ImageInputError(f"{name}: image is {tensor.shape[-1]}x{tensor.shape[-2]} pixels (shape "
                              f"{tuple(image.shape)}); expected at least 1x1")
    if tensor.dtype.is_floating_point:
        if not bool(torch.isfinite(tensor).all()):
            raise ImageInputError(f"{name}: float pixels contain NaN or infinity; expected values in [0, 1] "
                                  "(check the VAE decode, e.g. run it in float32)")
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
