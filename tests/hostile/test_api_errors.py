"""Item 14: bad arguments to the Python API raise an ``SdclipError`` subclass that says what is wrong,
never a raw ``RuntimeError``/``StopIteration``/``IndexError``/``ZeroDivisionError``/``TypeError``.

Decisions: option types are checked when the object is built (``cache_size``, ``workers``, ``dtype``),
not at first use; an image that holds NaN or has no pixels is an ``ImageInputError``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def cond(pipeline_folder):
    from sdclip import TextConditioner

    return TextConditioner.from_pretrained(pipeline_folder, device="cpu")


@pytest.fixture(scope="module")
def scorer(clip_model_folder):
    from sdclip import ClipScorer

    return ClipScorer.from_pretrained(clip_model_folder, device="cpu")


# -- textual inversion ------------------------------------------------------------------------------


def test_an_embedding_with_zero_vectors(pipeline_folder, tmp_path):
    """Issue: RuntimeError."""
    from safetensors.torch import save_file

    from sdclip import EmbeddingError, TextConditioner

    cond = TextConditioner.from_pretrained(pipeline_folder, device="cpu")
    path = tmp_path / "empty-style.safetensors"
    save_file({"emb_params": torch.zeros(0, cond.text_encoder.config.hidden_size)}, str(path))
    with pytest.raises(EmbeddingError, match="empty-style"):
        cond.load_textual_inversion(path)


def test_an_a1111_embedding_with_an_empty_string_to_param(pipeline_folder, tmp_path):
    """Issue: StopIteration."""
    from sdclip import EmbeddingError, TextConditioner

    cond = TextConditioner.from_pretrained(pipeline_folder, device="cpu")
    path = tmp_path / "hollow.pt"
    torch.save({"string_to_param": {}, "name": "hollow"}, path)
    with pytest.raises(EmbeddingError, match="hollow"):
        cond.load_textual_inversion(path, allow_pickle=True)


# -- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, 2.0, "2"])
def test_num_images_per_prompt_that_is_not_an_int(cond, value):
    """Issue: num_images_per_prompt=True gives a TypeError from repeat_interleave."""
    from sdclip import PromptError

    with pytest.raises(PromptError, match="num_images_per_prompt"):
        cond.encode("a cat", num_images_per_prompt=value)


@pytest.mark.parametrize("value", ["x", 2.5, None])
def test_cache_size_that_is_not_an_int(cond, clip_model_folder, value):
    """Issue: cache_size="x" gives a TypeError at the first encode."""
    from sdclip import ClipScorer, SdclipError, TextConditioner

    with pytest.raises(SdclipError, match="cache_size"):
        TextConditioner(cond.encoders, cache_size=value)
    with pytest.raises(SdclipError, match="cache_size"):
        ClipScorer(ClipScorer.from_pretrained(clip_model_folder, device="cpu").model, cond.tokenizer, cache_size=value)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool, torch.complex64])
def test_a_dtype_that_is_not_a_float(pipeline_folder, clip_model_folder, dtype):
    """Issue: dtype=torch.int8 gives a raw error from torch."""
    from sdclip import ClipScorer, ModelSourceError, TextConditioner

    with pytest.raises(ModelSourceError, match="dtype"):
        TextConditioner.from_pretrained(pipeline_folder, device="cpu", dtype=dtype)
    with pytest.raises(ModelSourceError, match="dtype"):
        ClipScorer.from_pretrained(clip_model_folder, device="cpu", dtype=dtype)


@pytest.mark.parametrize("workers", [-1, "x", 2.5])
def test_workers_that_is_not_a_positive_int(scorer, clip_model_folder, workers):
    """Issue: workers=-1 gives a ValueError from ThreadPoolExecutor at the first score."""
    from sdclip import ClipScorer, SdclipError

    with pytest.raises(SdclipError, match="workers"):
        ClipScorer(scorer.model, scorer.tokenizer, workers=workers)
    with pytest.raises(SdclipError, match="workers"):
        ClipScorer.from_pretrained(clip_model_folder, device="cpu", workers=workers)


# -- images ----------------------------------------------------------------------------------------


def _bad_images():
    from PIL import Image

    nan = torch.full((3, 32, 32), float("nan"))
    partly_nan = torch.rand(3, 32, 32)
    partly_nan[1, 5, 5] = float("nan")
    return {
        "nan-float-tensor": nan,  # issue: IndexError
        "one-nan-pixel": partly_nan,
        "0x0-float-tensor": torch.zeros(3, 0, 0),  # issue: ZeroDivisionError
        "0x0-uint8-tensor": torch.zeros(3, 0, 0, dtype=torch.uint8),
        "1x0-tensor": torch.zeros(3, 1, 0, dtype=torch.uint8),
        "0x0-pil": Image.new("RGB", (0, 0)),
    }


@pytest.mark.parametrize("name", list(_bad_images()))
@pytest.mark.parametrize("preprocessing", ["auto", "exact"])
def test_an_image_with_nan_or_no_pixels(scorer, name, preprocessing):
    from sdclip import ClipScorer, ImageInputError

    image = _bad_images()[name]
    checker = ClipScorer(scorer.model, scorer.tokenizer, preprocessing=preprocessing)
    with pytest.raises(ImageInputError):
        checker.score(image, "a cat")
