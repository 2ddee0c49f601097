"""Item 12: ``sdclip plot-scores`` on hostile score files.

Decisions:

* An image the score file names that cannot be drawn (corrupt, not an image, over Pillow's
  decompression-bomb limit ``PIL.Image.MAX_IMAGE_PIXELS``) is drawn as a grey tile, like a missing one;
  the run exits 0 and says on stderr how many images "could not be read". A bomb is never decoded.
* A number that does not fit (a rank of ``1e400``) is a ``ScoreFileError``: one line naming the file
  and line, exit code 2.
* A byte that is not UTF-8 in the file is kept (read back with ``errors="surrogateescape"``, as sdclip
  writes names that are not UTF-8; see ``test_bytes.py``): the run goes on, exit 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._support import assert_one_line_error, run_cli, save_images


def _score_file(folder: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    path = folder / "scores.csv"
    lines = ["image,prompt,score,rank,error"] + [",".join(row) + "," for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _bad_image(folder: Path, kind: str) -> Path:
    from PIL import Image

    path = folder / f"{kind}.png"
    if kind == "corrupt":
        Image.new("RGB", (64, 64), "blue").save(path)
        path.write_bytes(path.read_bytes()[:70])
    elif kind == "not-an-image":
        path.write_text("this is text, not a PNG")
    elif kind == "bomb":  # over twice the limit set below: Pillow raises DecompressionBombError
        Image.new("RGB", (300, 300)).save(path)
    elif kind == "bomb-under-twice-the-limit":  # over the limit: Pillow only warns, then decodes it
        Image.new("RGB", (150, 150)).save(path)
    return path


@pytest.mark.parametrize("kind", ["corrupt", "not-an-image", "bomb", "bomb-under-twice-the-limit"])
def test_an_image_that_cannot_be_drawn_is_a_grey_tile(tmp_path, capsys, monkeypatch, kind):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 300x300 and 150x150 are "bombs", 40x44 is not
    good = save_images(tmp_path, 1)[0]
    bad = _bad_image(tmp_path, kind)
    scores = _score_file(tmp_path, [(str(bad), "a cat", "31.0", "1"), (str(good), "a cat", "25.0", "2")])
    out = tmp_path / "plots"
    result = run_cli(["plot-scores", scores, "--out", out], capsys)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert "could not be read" in result.err, result.err
    assert len(list(out.glob("ranked_*.png"))) == 1


def test_a_rank_that_does_not_fit_is_one_line(tmp_path, capsys):
    """Issue: a rank of 1e400 gives a traceback (OverflowError)."""
    image = save_images(tmp_path, 1)[0]
    scores = _score_file(tmp_path, [(str(image), "a cat", "31.0", "1e400")])
    result = run_cli(["plot-scores", scores, "--out", tmp_path / "plots"], capsys)
    assert_one_line_error(result, "scores.csv:2", "rank")


@pytest.mark.parametrize("where", ["prompt", "image"])
def test_a_byte_that_is_not_utf8_in_the_score_file(tmp_path, capsys, where):
    """Issue: a \\xff byte in the score file gives a traceback (UnicodeDecodeError)."""
    image = save_images(tmp_path, 1)[0]
    text = f"image,prompt,score,rank,error\n{image},a cat,31.0,1,\n".encode()
    if where == "prompt":
        text = text.replace(b"a cat", b"a \xff cat")
    else:
        text = text.replace(b"img000.png", b"missing\xff.png")
    scores = tmp_path / "scores.csv"
    scores.write_bytes(text)
    result = run_cli(["plot-scores", scores, "--out", tmp_path / "plots"], capsys)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert len(list((tmp_path / "plots").glob("ranked_*.png"))) == 1
