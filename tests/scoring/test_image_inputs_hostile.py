"""Image inputs that once hung or crashed scoring (issue 16 #5, #14, #15): each is now one clear error
(or an error row), and EXIF orientation is honoured when asked."""

from __future__ import annotations

import math
import os
import re
import socket
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from sdclip import ClipScorer
from sdclip.errors import ImageInputError, ScorerError, SdclipError
from sdclip.scoring.images import load_image


def _within(seconds: float, call):
    """Run ``call`` in a thread; fail (instead of hanging the suite) when it takes longer than ``seconds``."""
    result: dict = {}

    def target():
        try:
            result["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture(scope="module")
def scorer(tiny_clip_folder):
    return ClipScorer.from_pretrained(tiny_clip_folder, device="cpu", batch_size=2)


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "ok.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


# -- #5: only regular files are opened ------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageInputError, match=f"image '{fifo}': not a regular file \\(a FIFO\\); pass an image file"):
        _within(10, lambda: load_image(fifo))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_among_images_is_an_error_row(scorer, tmp_path, png):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    batches = _within(30, lambda: list(scorer.iter_scores([png, fifo, png], "a cat", errors="return")))
    errors = [e for b in batches for e in b.errors]
    scores = torch.cat([b.scores for b in batches])
    assert errors[0] is None and errors[2] is None and "not a regular file (a FIFO)" in errors[1]
    assert math.isnan(scores[1]) and scores[0] == scores[2]


@pytest.mark.parametrize(
    ("make", "kind"),
    [(lambda tmp: "/dev/zero", "a character device"), (lambda tmp: tmp, "a folder")],
)  # fmt: skip
def test_other_non_regular_files_are_refused(tmp_path, make, kind):
    path = make(tmp_path)
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist here")
    with pytest.raises(ImageInputError, match=f"not a regular file \\({kind}\\)"):
        _within(10, lambda: load_image(path))


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets on this platform")
def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.png"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(ImageInputError, match="not a regular file \\(a socket\\)"):
            _within(10, lambda: load_image(path))


def test_a_symlink_to_a_regular_file_is_read(tmp_path, png):
    link = tmp_path / "link.png"
    link.symlink_to(png)
    assert load_image(link).size == (30, 40)


# -- #14: raw exceptions become SdclipErrors naming the input -------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [(torch.full((3, 8, 8), float("nan")), r"images\[1\]: float pixels contain NaN or infinity"),
     (torch.tensor([[[0.5, float("inf")]]]).expand(3, 1, 2), r"images\[1\]: float pixels contain NaN or infinity"),
     (torch.zeros(3, 0, 0), r"images\[1\]: image is 0x0 pixels \(shape \(3, 0, 0\)\); expected at least 1x1"),
     (torch.zeros(0, 0, 3, dtype=torch.uint8), r"images\[1\]: image is 0x0 pixels"),
     (np.zeros((3, 5, 0), np.float32), r"images\[1\]: image is 0x5 pixels"),
     (Image.new("RGB", (0, 0)), r"images\[1\]: image is 0x0 pixels; expected at least 1x1")],
)  # fmt: skip
@pytest.mark.parametrize("preprocessing", ["auto", "exact", "fast"])
def test_degenerate_images_are_image_input_errors(scorer, png, image, message, preprocessing):
    scorer = ClipScorer(scorer.model, scorer.tokenizer, preprocessing=preprocessing)
    with pytest.raises(ImageInputError, match=message):
        scorer.score([png, image], "a cat")
    batch = next(scorer.iter_scores([png, image], "a cat", errors="return"))
    assert batch.errors[0] is None and re.search(message, batch.errors[1]) and math.isnan(batch.scores[1])


@pytest.mark.parametrize(
    ("options", "message"),
    [({"workers": -1}, "workers: expected an integer >= 1, got -1"),
     ({"workers": 0}, "workers: expected an integer >= 1, got 0"),
     ({"workers": 2.5}, "workers: expected an integer >= 1, got 2.5"),
     ({"batch_size": True}, "batch_size: expected an integer >= 1, got True"),
     # the cache bounds share the conditioner's wording: "(0 disables the cache)"
     ({"cache_size": "x"}, r"cache_size: expected an integer >= 0 \(0 disables the cache\), got 'x'"),
     ({"cache_size": -1}, r"cache_size: expected an integer >= 0 \(0 disables the cache\), got -1"),
     ({"cache_bytes": 1.5}, r"cache_bytes: expected an integer >= 0 \(0 disables the cache\), got 1.5")],
)  # fmt: skip
def test_bad_options_are_scorer_errors(scorer, options, message):
    with pytest.raises(ScorerError, match=message) as caught:
        ClipScorer(scorer.model, scorer.tokenizer, **options)
    assert isinstance(caught.value, SdclipError) and "\n" not in str(caught.value)


# -- #15: EXIF orientation, off by default (CLIPImageProcessor parity), on when asked --------------


@pytest.fixture
def rotated_jpeg(tmp_path):
    """A JPEG stored landscape whose EXIF says 'rotate 90° clockwise to view' (orientation 6)."""
    stored = Image.fromarray(np.random.RandomState(1).randint(0, 256, (48, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    return path


def test_load_image_exif_transpose(rotated_jpeg):
    as_stored = Image.open(rotated_jpeg)
    assert load_image(rotated_jpeg).size == as_stored.size == (80, 48)  # the default: pixels as stored
    upright = load_image(rotated_jpeg, exif_transpose=True)
    assert upright.size == (48, 80)
    assert np.array_equal(np.asarray(upright), np.asarray(ImageOps.exif_transpose(Image.open(rotated_jpeg))))


def test_scorer_exif_transpose(tiny_clip_folder, rotated_jpeg):
    plain = ClipScorer.from_pretrained(tiny_clip_folder, device="cpu")
    upright = ClipScorer.from_pretrained(tiny_clip_folder, device="cpu", exif_transpose=True)  # the loader's option
    reference = ImageOps.exif_transpose(Image.open(rotated_jpeg))  # transformers users would do this themselves
    reference.load()
    as_stored = Image.open(rotated_jpeg)
    as_stored.load()
    torch.testing.assert_close(plain.score([rotated_jpeg], "a cat"), plain.score([as_stored], "a cat"))
    torch.testing.assert_close(upright.score([rotated_jpeg], "a cat"), plain.score([reference], "a cat"))
    torch.testing.assert_close(upright.score([as_stored], "a cat"), plain.score([reference], "a cat"))  # PIL too
    assert abs(upright.score([rotated_jpeg], "a cat") - plain.score([rotated_jpeg], "a cat")).item() > 1e-3
