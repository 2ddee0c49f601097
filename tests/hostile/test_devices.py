"""Item 8: a device this machine does not have (``cuda``, ``cuda:99``, ``mps``) or cannot compute on
(``meta``) is one line on stderr and exit code 2 naming the device; from the API an ``SdclipError``.

Decision: ``meta`` is refused (it holds no data; nothing could be encoded or scored on it).
"""

from __future__ import annotations

import pytest
import torch

from ._support import assert_one_line_error, run_cli, save_images


def _missing(device: str) -> bool:
    if device == "cuda":
        return not torch.cuda.is_available()
    if device == "cuda:99":
        return torch.cuda.device_count() <= 99
    if device == "mps":
        return not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    return True  # meta: never a compute device


DEVICES = [pytest.param(d, marks=pytest.mark.skipif(not _missing(d), reason=f"this machine has {d}"))
           for d in ("cuda", "cuda:99", "mps", "meta")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("command", ["encode", "inspect", "score"])
def test_a_device_that_is_not_there_is_one_line(tmp_path, pipeline_folder, clip_model_folder, capsys, command,
                                                 device):
    if command == "score":
        image = save_images(tmp_path, 1)[0]
        args = ["score", "--images", image, "--prompt", "a cat", "--model", clip_model_folder,
                "--out", tmp_path / "s.csv"]
    elif command == "encode":
        args = ["encode", "a cat", "--model", pipeline_folder, "--out", tmp_path / "e.safetensors"]
    else:
        args = ["inspect", "a cat", "--model", pipeline_folder]
    assert_one_line_error(run_cli([*args, "--device", device], capsys), device)


@pytest.mark.parametrize("device", DEVICES)
def test_the_api_raises_an_sdclip_error_for_a_device_that_is_not_there(pipeline_folder, clip_model_folder, device):
    from sdclip import ClipScorer, SdclipError, TextConditioner

    with pytest.raises(SdclipError, match=device):
        TextConditioner.from_pretrained(pipeline_folder, device=device)
    with pytest.raises(SdclipError, match=device):
        ClipScorer.from_pretrained(clip_model_folder, device=device)
