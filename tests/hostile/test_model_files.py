"""Item 9: model files that are well-formed (valid safetensors, valid JSON) but wrong are refused at
load time with a ``ModelSourceError`` that names the file or the tensor; from the CLI, one line and exit
code 2 (``encode``; ``tokens`` for the config cases, since it reads ``config.json`` to pick a tokenizer).

Decision: the checks run at load, not at the first ``encode``: a text encoder must have float weights,
shapes consistent with each other and with its config, at least 77 position embeddings (sdclip's
chunks are 77 tokens) and a vocabulary at least as large as its tokenizer's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ._support import assert_one_line_error, run_cli

PREFIX = "cond_stage_model.transformer.text_model."


def _save_single_file(tensors: dict, path: Path) -> Path:
    """Canonical text-encoder tensors as an SD 1.x single-file checkpoint (as sdclip.testing writes one)."""
    from safetensors.torch import save_file

    out = {PREFIX + key: value.contiguous() for key, value in tensors.items()}
    out["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4, 3, 3)
    save_file(out, str(path))
    return path


def _wrong_shape(sd):
    sd["encoder.layers.2.self_attn.q_proj.weight"] = sd["encoder.layers.2.self_attn.q_proj.weight"][:, :64]
    return sd, "q_proj"


def _integer_weights(sd):
    return {k: (v * 100).to(torch.int32) if v.is_floating_point() else v for k, v in sd.items()}, "int"


def _width_mismatch(sd):
    """The token embedding is cut to 96 wide while every other tensor is 128 wide.

    Which tensor is the "wrong" one is ambiguous (sdclip infers the width from the token embedding and
    then names ``embeddings.position_embedding.weight`` as not fitting), so the message must name an
    embedding tensor and say what shape it has against what was expected, whichever of the two it names.
    """
    sd["embeddings.token_embedding.weight"] = sd["embeddings.token_embedding.weight"][:, :96]
    return sd, "_embedding.weight' has shape"


def _five_positions(sd):
    sd["embeddings.position_embedding.weight"] = sd["embeddings.position_embedding.weight"][:5]
    return sd, "position"


def _ten_token_vocabulary(sd):
    sd["embeddings.token_embedding.weight"] = sd["embeddings.token_embedding.weight"][:10]
    return sd, "vocab"


BAD_TENSORS = {
    "one-tensor-of-the-wrong-shape": _wrong_shape,
    "integer-weights": _integer_weights,
    "width-mismatch-between-tensors": _width_mismatch,
    "five-position-embeddings": _five_positions,
    "ten-token-vocabulary": _ten_token_vocabulary,
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_a_single_file_with_wrong_tensors_is_refused(sd_pipe, tmp_path, capsys, case):
    from sdclip import ModelSourceError, TextConditioner

    state_dict = {k: v.detach().clone() for k, v in sd_pipe.text_encoder.state_dict().items()}
    state_dict, fragment = BAD_TENSORS[case](state_dict)
    path = _save_single_file(state_dict, tmp_path / f"{case}.safetensors")
    with pytest.raises(ModelSourceError, match=fragment) as raised:
        TextConditioner.from_pretrained(path, device="cpu")
    assert path.name in str(raised.value)
    if case == "width-mismatch-between-tensors":
        assert re.search(r"has shape \(\d+, \d+\), expected \(\d+, \d+\)", str(raised.value)), str(raised.value)
    result = run_cli(["encode", "a cat", "--model", path, "--device", "cpu", "--out", tmp_path / "e.safetensors"],
                     capsys)
    assert_one_line_error(result, fragment, path.name)


@pytest.fixture
def folder_copy(pipeline_folder, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(pipeline_folder / "text_encoder", tmp_path / "text_encoder"))


@pytest.mark.parametrize("case", ["one-tensor-of-the-wrong-shape", "integer-weights", "five-position-embeddings"])
def test_a_model_folder_with_wrong_tensors_is_refused(folder_copy, tmp_path, capsys, case):
    """The same with a config.json that says what the shapes should be."""
    from safetensors.torch import load_file, save_file

    from sdclip import ModelSourceError, TextConditioner

    weights = folder_copy / "model.safetensors"
    state_dict, fragment = BAD_TENSORS[case](load_file(str(weights)))
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(weights))
    with pytest.raises(ModelSourceError, match=fragment):
        TextConditioner.from_pretrained(folder_copy, device="cpu")
    result = run_cli(["encode", "a cat", "--model", folder_copy, "--device", "cpu", "--out", tmp_path / "e.safetensors"],
                     capsys)
    assert_one_line_error(result, fragment)


BAD_CONFIGS = {
    "config-is-a-list": ["CLIPTextModel"],
    "config-is-a-number": 7,
    "architectures-null": {"architectures": [None], "hidden_size": 128},
    "model-type-null": {"model_type": None, "architectures": ["CLIPTextModel"]},
    "architectures-not-a-list": {"architectures": "CLIPTextModel"},
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["encode", "tokens"])
def test_a_config_json_of_the_wrong_shape_is_refused(folder_copy, tmp_path, capsys, case, command):
    from sdclip import ModelSourceError, TextConditioner

    (folder_copy / "config.json").write_text(json.dumps(BAD_CONFIGS[case]))
    if command == "encode":
        with pytest.raises(ModelSourceError, match="config"):
            TextConditioner.from_pretrained(folder_copy, device="cpu")
        args = ["encode", "a cat", "--model", folder_copy, "--device", "cpu", "--out", tmp_path / "e.safetensors"]
    else:
        args = ["tokens", "a cat", "--model", folder_copy]
    assert_one_line_error(run_cli(args, capsys), "config")


def test_a_clip_model_with_a_tensor_of_the_wrong_shape_is_refused(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from sdclip import ClipScorer, ModelSourceError
    from sdclip.testing import random_clip_model, save_clip_folder

    folder = save_clip_folder(random_clip_model(), tmp_path / "clip")
    tensors = load_file(str(folder / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("vision_model.encoder.layers.1.mlp.fc2.weight"))
    tensors[key] = tensors[key][:, :7].contiguous()
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ModelSourceError, match="fc2"):
        ClipScorer.from_pretrained(folder, device="cpu")
