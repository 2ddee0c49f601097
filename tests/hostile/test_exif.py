"""Item 15: EXIF orientation of image files.

Decisions: by default sdclip scores files as PIL opens them, as ``CLIPImageProcessor`` users get them
(EXIF orientation ignored: parity with transformers and torchmetrics). ``exif_transpose=True``
(``ClipScorer(...)`` / ``ClipScorer.from_pretrained``) and ``sdclip score --exif-transpose`` turn files
upright first (``PIL.ImageOps.exif_transpose``). It applies to files and to PIL images passed in (a PIL
image from ``Image.open`` still carries its EXIF, so both inputs score the same); arrays and tensors
carry no EXIF and are taken as they are. The README says which is the default.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ._support import read_rows, run_cli


@pytest.fixture
def rotated_file(tmp_path):
    """A 48x80 JPEG whose EXIF says "rotate 90 degrees clockwise to view" (orientation 6)."""
    from PIL import Image

    rs = np.random.RandomState(3)
    pixels = rs.randint(0, 256, (48, 80, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # not symmetric: turning it changes what CLIP sees
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def _as_opened(path):
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.copy()


def _upright(path):
    from PIL import ImageOps

    return ImageOps.exif_transpose(_as_opened(path))


def test_by_default_files_are_scored_as_pil_opens_them(clip_model_folder, rotated_file):
    from sdclip import ClipScorer

    scorer = ClipScorer.from_pretrained(clip_model_folder, device="cpu")
    assert torch.allclose(scorer.score(rotated_file, "a cat"), scorer.score(_as_opened(rotated_file), "a cat"))


def test_exif_transpose_turns_files_upright(clip_model_folder, rotated_file):
    """Issue: scoring ignores EXIF orientation; offer exif_transpose.

    The last line once expected PIL images to be taken as they are; sdclip documents that the option
    applies to PIL images too (they keep the file's EXIF), a defensible choice: a file and the same file
    opened with PIL then score the same, upright.
    """
    from sdclip import ClipScorer

    plain = ClipScorer.from_pretrained(clip_model_folder, device="cpu")
    upright = ClipScorer.from_pretrained(clip_model_folder, device="cpu", exif_transpose=True)
    expected = plain.score(_upright(rotated_file), "a cat")
    assert not torch.allclose(expected, plain.score(rotated_file, "a cat")), "the test image is not orientation-sensitive"
    assert torch.allclose(upright.score(rotated_file, "a cat"), expected)
    assert torch.allclose(upright.score(_as_opened(rotated_file), "a cat"), expected)


def test_the_cli_has_an_exif_transpose_flag(clip_model_folder, rotated_file, tmp_path, capsys):
    from sdclip import ClipScorer

    expected = ClipScorer.from_pretrained(clip_model_folder, device="cpu").score(_upright(rotated_file), "a cat")
    out = tmp_path / "scores.csv"
    result = run_cli(["score", "--images", rotated_file, "--prompt", "a cat", "--model", clip_model_folder,
                      "--device", "cpu", "--out", out, "--exif-transpose"], capsys)
    assert result.code == 0, result.err
    assert float(read_rows(out)[0]["score"]) == pytest.approx(expected.item(), abs=1e-4)
