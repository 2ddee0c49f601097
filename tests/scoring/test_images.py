"""sdclip.scoring.images: inputs, file errors, and preprocessing against transformers' CLIPImageProcessor (PIL backend)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil

from sdclip.errors import ImageInputError, ModelSourceError
from sdclip.scoring.images import (
    PreprocessConfig, as_chw_tensor, find_images, image_list, load_image, pil_to_uint8, preprocess_pil,
    preprocess_tensors, to_rgb,
)  # fmt: skip

# The tensor path's documented tolerance against the PIL path, in normalized pixel units: both round to
# 8 bits after each resampling pass; PIL's fixed-point filter moves pixels near a rounding boundary one
# level (at most two: 2 / 255 / min(std) = 0.030); ~0.1% of noise pixels, ~7% of a staircase gradient's.
TENSOR_PATH_MAX_DIFF = 0.031
TENSOR_PATH_MEAN_DIFF = 2e-3


def processor(size: int = 224, crop: tuple[int, int] = (224, 224)) -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": crop[0], "width": crop[1]})


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.RandomState(seed).randint(0, 256, shape, dtype=np.uint8)


def gradient(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def reference(image: Image.Image, proc: CLIPImageProcessorPil) -> torch.Tensor:
    return proc(images=[image], return_tensors="pt").pixel_values[0]


# -- PreprocessConfig -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, PreprocessConfig(shortest_edge=336, crop=(336, 336))),
        ({"size": 224, "crop_size": 224}, PreprocessConfig()),  # the hub's old layout (clip-vit-large-patch14)
        (processor(64, (64, 48)).to_dict(), PreprocessConfig(shortest_edge=64, crop=(64, 48))),
        ({"size": {"height": 40, "width": 50}, "do_center_crop": False},
         PreprocessConfig(shortest_edge=None, resize_to=(40, 50), crop=None)),
    ],
)
def test_preprocess_config_layouts(config, expected):
    assert PreprocessConfig.from_dict(config, image_size=336) == expected


def test_preprocess_config_errors():
    with pytest.raises(ModelSourceError, match=r"preprocessor config: size \[1, 2\] is not understood"):
        PreprocessConfig.from_dict({"size": [1, 2]}, image_size=224)
    with pytest.raises(ModelSourceError, match="without a center crop or a fixed \\(height, width\\) resize"):
        PreprocessConfig.from_dict({"do_center_crop": False}, image_size=224)


def test_resized_size_truncates_like_transformers():
    config = PreprocessConfig()
    assert config.resized_size(200, 300) == (224, 336)
    assert config.resized_size(301, 199) == (338, 224)  # int(224 * 301 / 199) = 338


# -- PIL path: exact ------------------------------------------------------------------------------


def _mode_image(mode: str, height: int, width: int) -> Image.Image:
    rgba = Image.fromarray(noise(height, width, 4), "RGBA")
    if mode == "I;16":
        return Image.fromarray(noise(height, width, 1).astype(np.uint16) * 257)
    if mode == "P+transparency":
        image = rgba.convert("RGB").convert("P")
        image.info["transparency"] = 3
        return image
    return rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "P+transparency", "CMYK", "I;16", "1"])
@pytest.mark.parametrize(("height", "width", "size", "crop"), [
    (512, 512, 224, (224, 224)), (300, 200, 64, (64, 64)), (91, 37, 64, (64, 48)), (20, 20, 16, (24, 24)),
])  # fmt: skip
def test_pil_path_equals_clip_image_processor(mode, height, width, size, crop):
    proc = processor(size, crop)
    config = PreprocessConfig.from_dict(proc.to_dict(), image_size=224)
    image = _mode_image(mode, height, width)
    ours = preprocess_pil(image, config)
    assert ours.dtype == torch.float32 and ours.shape == (3, *crop)
    assert (ours - reference(image, proc)).abs().max().item() < 1e-6


def test_to_rgb_composites_transparency_on_white():
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (10, 20, 30, 255))
    assert [to_rgb(image).getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (10, 20, 30)]


# -- tensor path: within a measured tolerance -----------------------------------------------------


@pytest.mark.parametrize("kind", ["noise", "gradient"])
@pytest.mark.parametrize(("height", "width"), [(512, 512), (300, 500), (100, 80)])
def test_tensor_path_close_to_pil_path(kind, height, width):
    array = noise(height, width) if kind == "noise" else gradient(height, width)
    config = PreprocessConfig()
    exact = preprocess_pil(Image.fromarray(array), config)
    fast = preprocess_tensors([torch.from_numpy(array).permute(2, 0, 1)], config)[0]
    diff = (fast - exact).abs()
    assert diff.max().item() < TENSOR_PATH_MAX_DIFF
    assert diff.mean().item() < TENSOR_PATH_MEAN_DIFF


def test_tensor_path_batches_mixed_sizes_in_order():
    images = [torch.from_numpy(noise(h, w, seed=h)).permute(2, 0, 1) for h, w in [(300, 200), (64, 64), (300, 200)]]
    batched = preprocess_tensors(images, PreprocessConfig())
    one_by_one = torch.cat([preprocess_tensors([image], PreprocessConfig()) for image in images])
    torch.testing.assert_close(batched, one_by_one)


def test_tensor_path_in_half_precision_on_the_given_device():
    # the GPU path (model dtype, model device) exercised on the CPU
    image = torch.from_numpy(gradient(256, 320)).permute(2, 0, 1)
    full = preprocess_tensors([image], PreprocessConfig())
    half = preprocess_tensors([image], PreprocessConfig(), device="cpu", dtype=torch.float16)
    assert half.dtype == torch.float16 and half.device.type == "cpu"
    assert (half.float() - full).abs().max().item() < 2e-3  # fp16 rounding of values up to ~2.1


def test_float_images_are_rescaled_once():
    array = noise(120, 90)
    as_uint8 = torch.from_numpy(array).permute(2, 0, 1)
    as_float = as_uint8.float() / 255
    config = PreprocessConfig()
    torch.testing.assert_close(preprocess_tensors([as_float], config), preprocess_tensors([as_uint8], config))
    # CLIPImageProcessor rescales a [0, 1] float image twice: every pixel ends at most 1/255, near black
    doubled = processor()(images=[as_float], return_tensors="pt").pixel_values
    black_plus_one_level = ((1 / 255 - torch.tensor(config.mean)) / torch.tensor(config.std)).max().item()
    assert doubled.max().item() <= black_plus_one_level + 1e-6 < preprocess_tensors([as_float], config).max().item()


# -- what users pass in ---------------------------------------------------------------------------


def test_image_list_flattens_every_accepted_input(tmp_path):
    pil = Image.new("RGB", (8, 8))
    output = SimpleNamespace(images=[pil, pil])  # what a diffusers pipeline returns
    items = image_list([pil, str(tmp_path / "a.png"), torch.zeros(2, 3, 8, 8), np.zeros((8, 8, 3)), output])
    assert len(items) == 7
    assert items[1] == tmp_path / "a.png"
    assert len(image_list(SimpleNamespace(images=np.zeros((4, 8, 8, 3), dtype=np.float32)))) == 4
    assert len(image_list(pil)) == 1


def test_image_list_errors():
    with pytest.raises(ImageInputError, match="images: expected at least one image, got none"):
        image_list([])
    with pytest.raises(ImageInputError, match=r"images\[1\]: expected a PIL image, a file path, .* got int"):
        image_list([Image.new("RGB", (2, 2)), 5])
    with pytest.raises(ImageInputError, match=r"images\[0\]: .*got Tensor of shape \(3,\)"):
        image_list(torch.zeros(3))


@pytest.mark.parametrize(
    "array",
    [np.zeros((5, 7, 3), np.uint8), np.zeros((3, 5, 7), np.uint8), np.zeros((5, 7), np.uint8),
     np.zeros((1, 5, 7), np.uint8), np.zeros((5, 7, 3), np.int64), np.zeros((5, 7, 3), np.float16)],
)  # fmt: skip
def test_as_chw_tensor_layouts(array):
    tensor = as_chw_tensor(array)
    assert tensor.shape == (3, 5, 7)
    assert tensor.dtype in (torch.uint8, torch.float32)


def test_as_chw_tensor_composites_alpha_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent black
    assert as_chw_tensor(rgba).unique().tolist() == [255]
    gray_alpha = torch.tensor([[[0.0]], [[0.5]]])  # LA, channels first, float
    assert as_chw_tensor(gray_alpha).flatten().tolist() == [0.5, 0.5, 0.5]


def test_as_chw_tensor_errors():
    with pytest.raises(ImageInputError, match=r"image: float pixels must be in \[0, 1\], found \[-1, 1\]; "
                       r"a VAE's raw output is in \[-1, 1\]"):
        as_chw_tensor(torch.linspace(-1, 1, 48).reshape(3, 4, 4))
    with pytest.raises(ImageInputError, match=r"float pixels must be in \[0, 1\], found \[0, 255\]; for 0-255 "
                       "values pass a uint8 tensor"):
        as_chw_tensor(torch.linspace(0, 255, 48).reshape(3, 4, 4))
    with pytest.raises(ImageInputError, match=r"integer pixels must be in \[0, 255\], found \[0, 1000\]"):
        as_chw_tensor(torch.tensor([0, 1000]).repeat(24).reshape(3, 4, 4))
    with pytest.raises(ImageInputError, match="expected uint8 or float pixels, got dtype torch.bool"):
        as_chw_tensor(torch.zeros(3, 4, 4, dtype=torch.bool))
    with pytest.raises(ImageInputError, match=r"shape \(5, 6, 7\) has no channel axis of size 1, 3 or 4"):
        as_chw_tensor(torch.zeros(5, 6, 7))


def test_pil_to_uint8_is_chw_rgb():
    image = Image.fromarray(noise(6, 4))
    tensor = pil_to_uint8(image)
    assert tensor.shape == (3, 6, 4) and tensor.dtype == torch.uint8
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), np.asarray(image))


# -- files ----------------------------------------------------------------------------------------


def test_load_image_reads_a_file(tmp_path):
    Image.fromarray(noise(10, 12)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").size == (12, 10)


def _bad_file(tmp_path, kind: str):
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not an image")
    elif kind == "truncated":
        Image.fromarray(noise(64, 64)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "folder":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to(tmp_path / "gone.png")
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [("empty", "file is empty \\(0 bytes\\)"), ("text", "not an image file Pillow can read"),
     ("truncated", "truncated or corrupt"), ("folder", "not a regular file \\(a folder\\); pass an image file"),
     ("dangling", "no such file")],
)  # fmt: skip
def test_load_image_errors(tmp_path, kind, message):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(ImageInputError, match=f"image '{path}': {message}"):
        load_image(path)


@pytest.mark.parametrize("limit", [100, 3000])  # 64x64 = 4096 px: over 2x the limit (Pillow raises), or 1x-2x
def test_load_image_refuses_decompression_bombs(tmp_path, monkeypatch, limit):
    Image.fromarray(noise(64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.warns(Image.DecompressionBombWarning) if limit == 3000 else _no_warning():
        with pytest.raises(ImageInputError, match="bomb.png': .*decompression-bomb limit"):
            load_image(tmp_path / "bomb.png")


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_find_images_recurses_filters_and_sorts(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for name in ["b/deep/z.webp", "a.PNG", "b/x.jpeg", "c.bmp", "d.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    found = find_images([tmp_path, tmp_path / "notes.txt"])
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == ["a.PNG", "b/deep/z.webp", "b/x.jpeg", "c.bmp", "d.jpg", "notes.txt"]


def test_find_images_errors(tmp_path):
    with pytest.raises(ImageInputError, match=f"--images '{tmp_path / 'nope'}': no such file or folder"):
        find_images([tmp_path / "nope"])
    with pytest.raises(ImageInputError, match=r"no images found \(looked for .png, .jpg, .jpeg, .webp, .bmp\)"):
        find_images([tmp_path])
