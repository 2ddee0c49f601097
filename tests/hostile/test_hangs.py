"""Item 5: a FIFO given as an image must not hang ``sdclip score`` (or ``ClipScorer``) forever.

Decision: only regular files are opened as images. A FIFO, a device or a socket named as an image gets
an error row (``error`` says it is not a regular file) and the run goes on; the API raises
``ImageInputError``.

A hang is caught without hanging the suite: the call runs in a daemon thread; if it is still blocked
after ``PATIENCE`` seconds the test opens the FIFO's write end (the reader waiting in ``open`` is
released with EOF), lets the call finish, and fails.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from ._support import read_rows, run_cli, save_images

PATIENCE = 5.0  # seconds; scoring three tiny images in this process takes well under one


def _call_guarding_fifo(fifo, call):
    """``call()`` in a thread; returns (its result or exception, whether it hung on ``fifo``)."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(PATIENCE)
    hung = thread.is_alive()
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        try:  # a reader blocked in open() is released once a writer opens and closes the FIFO
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: no reader has it open (yet)
            pass
        thread.join(0.2)
    assert not thread.is_alive(), "the call stayed blocked even after the FIFO was released"
    return outcome[0], hung


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "imgs" / "pipe.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("how", ["images", "pairs"])
def test_a_fifo_as_an_image_is_an_error_row(tmp_path, clip_model_folder, capsys, fifo, how):
    """Issue: `sdclip score` hangs forever on a FIFO (/dev/zero is handled)."""
    good = save_images(tmp_path / "imgs", 2)
    out = tmp_path / "scores.csv"
    if how == "images":
        inputs = ["--images", *good, fifo, "--prompt", "a cat"]
    else:
        pairs = tmp_path / "imgs" / "pairs.csv"
        pairs.write_text("image,prompt\n" + "".join(f"{p.name},a cat\n" for p in [*good, fifo]))
        inputs = ["--pairs", pairs]
    args = ["score", *inputs, "--model", clip_model_folder, "--device", "cpu", "--out", out]
    result, hung = _call_guarding_fifo(fifo, lambda: run_cli(args, capsys))
    assert not hung, f"sdclip score blocked on the FIFO for {PATIENCE:.0f} s (the test released it)"
    assert result.code == 0 and "Traceback" not in result.err, result.err
    rows = {os.path.basename(row["image"]): row for row in read_rows(out)}
    assert rows["pipe.png"]["error"] and "regular file" in rows["pipe.png"]["error"], rows["pipe.png"]
    assert all(rows[p.name]["error"] == "" for p in good)


@pytest.mark.slow
def test_the_api_refuses_a_fifo_with_an_image_input_error(clip_model_folder, fifo):
    from sdclip import ClipScorer, ImageInputError

    scorer = ClipScorer.from_pretrained(clip_model_folder, device="cpu")
    outcome, hung = _call_guarding_fifo(fifo, lambda: scorer.score([fifo], "a cat"))
    assert not hung, f"ClipScorer.score blocked on the FIFO for {PATIENCE:.0f} s (the test released it)"
    assert isinstance(outcome, ImageInputError) and "regular file" in str(outcome), repr(outcome)


def test_a_character_device_as_an_image_is_an_error_row(tmp_path, clip_model_folder, capsys):
    """/dev/zero was handled already (an error row); it stays so."""
    good = save_images(tmp_path / "imgs", 1)
    out = tmp_path / "scores.csv"
    result = run_cli(["score", "--images", *good, "/dev/zero", "--prompt", "a cat", "--model", clip_model_folder,
                      "--device", "cpu", "--out", out], capsys)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    rows = {row["image"]: row for row in read_rows(out)}
    assert rows["/dev/zero"]["error"] and rows[str(good[0])]["error"] == ""
