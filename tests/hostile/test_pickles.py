"""Item 13: a malicious pickle given with ``--allow-pickle`` / ``allow_pickle=True`` is refused without
running its payload, and the refusal is ONE line: no multi-line message from ``torch.load``, no torch
warning, and not torch's advice to re-run with ``weights_only=False`` (which would run the payload).
(Without the flag, pickles are refused outright; that already held and is kept.)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from ._support import assert_one_line_error, run_cli, save_images


class _Payload:
    """Pickled as a call to ``os.system("touch <marker>")``: harmless, and visible if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path, Path]:
    """(checkpoint .ckpt, embedding .pt, marker file that must never appear)."""
    import torch

    marker = tmp_path / "payload-ran"
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"cond_stage_model.transformer.text_model.x": _Payload(marker)}}, checkpoint)
    embedding = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": _Payload(marker)}}, embedding)
    assert not marker.exists()
    return checkpoint, embedding, marker


@pytest.mark.parametrize("command", ["encode", "score"])
def test_a_malicious_pickle_with_allow_pickle_is_refused_in_one_line(tmp_path, capsys, evil, command):
    """Issue: refused (good) but in six lines with a torch warning."""
    checkpoint, _, marker = evil
    if command == "encode":
        args = ["encode", "a cat", "--out", tmp_path / "e.safetensors"]
    else:
        args = ["score", "--images", save_images(tmp_path / "imgs", 1)[0], "--prompt", "a cat"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_cli([*args, "--model", checkpoint, "--device", "cpu", "--allow-pickle"], capsys)
    assert not marker.exists(), "THE PICKLE'S PAYLOAD RAN"
    line = assert_one_line_error(result, checkpoint.name)
    assert "weights_only" not in line, line
    assert not [str(w.message) for w in caught], "warnings were shown"


def test_a_malicious_pickle_in_the_api_is_a_one_line_error(evil):
    from sdclip import ModelSourceError, TextConditioner

    checkpoint, _, marker = evil
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelSourceError) as raised:
            TextConditioner.from_pretrained(checkpoint, device="cpu", allow_pickle=True)
    assert not marker.exists(), "THE PICKLE'S PAYLOAD RAN"
    assert "\n" not in str(raised.value) and "weights_only" not in str(raised.value), str(raised.value)
    assert not [str(w.message) for w in caught], "warnings were shown"


def test_a_malicious_embedding_pickle_is_a_one_line_error(pipeline_folder, evil):
    from sdclip import SdclipError, TextConditioner

    _, embedding, marker = evil
    cond = TextConditioner.from_pretrained(pipeline_folder, device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SdclipError) as raised:
            cond.load_textual_inversion(embedding, allow_pickle=True)
    assert not marker.exists(), "THE PICKLE'S PAYLOAD RAN"
    message = str(raised.value)
    assert "\n" not in message and "weights_only" not in message and embedding.name in message, message
    assert not [str(w.message) for w in caught], "warnings were shown"


def test_a_pickle_without_allow_pickle_is_refused_in_one_line(tmp_path, capsys, evil):
    checkpoint, _, marker = evil
    result = run_cli(["encode", "a cat", "--model", checkpoint, "--out", tmp_path / "e.safetensors"], capsys)
    assert not marker.exists()
    assert_one_line_error(result, "--allow-pickle")
