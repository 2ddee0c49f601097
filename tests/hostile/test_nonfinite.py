"""Item 3: conditioning is finite or an error; JSON is always valid; non-finite weights do not load.

Decisions:

* A prompt weight whose result is not finite in the model's dtype raises ``PromptError`` naming the
  text it weights (here the word ``castle``); a nesting depth past a documented bound may instead be
  refused up front with a ``PromptError`` that says so. ``encode`` never returns inf/NaN: any non-finite
  output is an ``SdclipError`` naming the prompt.
* ``sdclip inspect --json`` writes strict JSON: no ``NaN``/``Infinity`` (a non-finite number, should one
  reach the writer, is written as ``null``).
* A checkpoint with a NaN or infinite tensor is refused with ``ModelSourceError`` naming the tensor; an
  embedding file with one is refused with ``EmbeddingError`` naming the file.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ._support import assert_one_line_error, run_cli, strict_json

HUGE_WEIGHTS = [
    pytest.param("a (castle:1e39) at dusk", "comfy", id="comfy-1e39"),
    pytest.param("a (castle:1e308) at dusk", "comfy", id="comfy-1e308"),
    pytest.param("a (castle:" + "9" * 50 + ") at dusk", "a1111", id="a1111-50-digits"),
    pytest.param("a " + "(" * 10_000 + "castle" + ")" * 10_000, "a1111", id="a1111-10k-nested"),
    pytest.param("a " + "(" * 1_000 + "castle" + ")" * 1_000, "comfy", id="comfy-1k-nested"),  # 10k: test_parsing_scale
]


def _names_the_text(message: str) -> bool:
    return "castle" in message or "nest" in message.lower()


@pytest.fixture(scope="module")
def cond(pipeline_folder):
    from sdclip import TextConditioner

    return TextConditioner.from_pretrained(pipeline_folder, device="cpu")


@pytest.mark.parametrize(("prompt", "syntax"), HUGE_WEIGHTS)
def test_a_weight_that_overflows_is_a_prompt_error(cond, prompt, syntax):
    """Issue: inf/NaN conditioning, silently."""
    from sdclip import PromptError

    try:
        result = cond.encode(prompt, syntax=syntax)
    except PromptError as error:
        assert _names_the_text(str(error)), str(error)
        return
    finite = all(bool(torch.isfinite(t).all()) for t in result.tensors().values() if t.is_floating_point())
    pytest.fail(f"no PromptError; the conditioning is {'finite' if finite else 'NOT finite (inf/NaN)'}")


def test_a_weight_that_overflows_half_precision_is_a_prompt_error(pipeline_folder):
    """Finite in float32, not in float16: 'not finite in the model's dtype' is what counts."""
    from sdclip import PromptError, TextConditioner

    half = TextConditioner.from_pretrained(pipeline_folder, device="cpu", dtype="fp16")
    assert torch.isfinite(half.encode("a (castle:2) at dusk", syntax="comfy").prompt_embeds).all()
    with pytest.raises(PromptError, match="castle"):
        half.encode("a (castle:1e5) at dusk", syntax="comfy")


@pytest.mark.parametrize(("prompt", "syntax"), HUGE_WEIGHTS[:3])
def test_inspect_refuses_an_overflowing_weight_in_one_line(pipeline_folder, tmp_path, capsys, prompt, syntax):
    """Issue: exit 0 and `inspect --json` writes NaN/Infinity (invalid JSON)."""
    out = tmp_path / "inspect.json"
    result = run_cli(["inspect", prompt, "--syntax", syntax, "--model", pipeline_folder, "--device", "cpu",
                      "--json", out], capsys)
    if result.code == 0 and out.exists():
        strict_json(out.read_text())  # at the least the JSON must be valid
    line = assert_one_line_error(result)
    assert _names_the_text(line), line


# -- weights that are finite but make the model overflow ---------------------------------------------


@pytest.fixture(scope="module")
def overflowing_checkpoint(sd_pipe, tmp_path_factory):
    """Finite weights (a final layer norm scale of 3e38) whose outputs overflow to inf."""
    from sdclip.testing import save_sd1_single_file

    model = copy.deepcopy(sd_pipe.text_encoder)
    with torch.no_grad():
        model.final_layer_norm.weight.fill_(3e38)
    return save_sd1_single_file(model, tmp_path_factory.mktemp("overflow") / "overflow.safetensors")


def test_encode_never_returns_non_finite_tensors(overflowing_checkpoint):
    from sdclip import SdclipError, TextConditioner

    cond = TextConditioner.from_pretrained(overflowing_checkpoint, device="cpu")
    try:
        result = cond.encode("a cat")
    except SdclipError as error:
        assert "a cat" in str(error), str(error)
        return
    for name, tensor in result.tensors().items():
        if tensor.is_floating_point():
            assert bool(torch.isfinite(tensor).all()), f"{name} holds inf/NaN"


def test_inspect_json_is_always_valid_json(overflowing_checkpoint, tmp_path, capsys):
    """`inspect --json` writes strict JSON or fails in one line; never NaN/Infinity in the file."""
    out = tmp_path / "inspect.json"
    result = run_cli(["inspect", "a cat", "--compare", "a dog", "--model", overflowing_checkpoint, "--device", "cpu",
                      "--json", out], capsys)
    assert "Traceback" not in result.err, result.err
    if result.code == 0:
        strict_json(out.read_text())
    else:
        assert_one_line_error(result)


# -- non-finite tensors in files ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_checkpoint_with_non_finite_weights_is_refused(sd_pipe, tmp_path, capsys, value):
    """Issue: checkpoints full of NaN load without a word. Decision: refuse, naming the tensor."""
    from sdclip import ModelSourceError, TextConditioner
    from sdclip.testing import save_sd1_single_file

    model = copy.deepcopy(sd_pipe.text_encoder)
    with torch.no_grad():
        model.encoder.layers[1].mlp.fc2.weight.fill_(value)
    path = save_sd1_single_file(model, tmp_path / "bad.safetensors")
    with pytest.raises(ModelSourceError, match=r"layers\.1\.mlp\.fc2\.weight"):
        TextConditioner.from_pretrained(path, device="cpu")
    result = run_cli(["encode", "a cat", "--model", path, "--device", "cpu", "--out", tmp_path / "e.safetensors"],
                     capsys)
    assert_one_line_error(result, "fc2")
    assert not (tmp_path / "e.safetensors").exists()


def test_a_clip_model_with_nan_weights_is_refused(tmp_path):
    from sdclip import ClipScorer, ModelSourceError
    from sdclip.testing import random_clip_model, save_clip_folder

    model = random_clip_model()
    with torch.no_grad():
        model.visual_projection.weight.fill_(float("nan"))
    folder = save_clip_folder(model, tmp_path / "nan-clip")
    with pytest.raises(ModelSourceError, match="visual_projection"):
        ClipScorer.from_pretrained(folder, device="cpu")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_an_embedding_with_non_finite_vectors_is_refused(pipeline_folder, tmp_path, value):
    from safetensors.torch import save_file

    from sdclip import EmbeddingError, TextConditioner

    cond = TextConditioner.from_pretrained(pipeline_folder, device="cpu")
    vectors = torch.randn(2, cond.text_encoder.config.hidden_size)
    vectors[1, 3] = value
    path = tmp_path / "nanstyle.safetensors"
    save_file({"emb_params": vectors}, str(path))
    with pytest.raises(EmbeddingError, match="nanstyle"):
        cond.load_textual_inversion(path)
