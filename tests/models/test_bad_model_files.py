"""Well-formed but wrong model files, devices and dtypes: one ModelSourceError line each (issue 16)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdclip import ModelSourceError, TextConditioner
from sdclip.cli import main
from sdclip.models.checkpoint import check_finite
from sdclip.models.loading import load_clip_model, load_text_encoder

TOKEN = "embeddings.token_embedding.weight"
POSITION = "embeddings.position_embedding.weight"
FC1 = "encoder.layers.1.mlp.fc1.weight"


def _folder(tmp_path: Path, config: dict, tensors: dict) -> Path:
    """A CLIP text encoder folder (config.json + model.safetensors) holding exactly these tensors."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _single_file(tmp_path: Path, tensors: dict) -> Path:
    """An SD 1.x single file: the text encoder under ``cond_stage_model.transformer.``; configs come from shapes."""
    path = tmp_path / "sd1.safetensors"
    save_file({"cond_stage_model.transformer." + k: v for k, v in tensors.items()}, str(path))
    return path


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_tensor_of_the_wrong_shape_is_named_with_both_shapes(tmp_path, tiny_text_weights):
    config, tensors = tiny_text_weights
    folder = _folder(tmp_path, config, {**tensors, FC1: torch.zeros(255, 128)})
    with pytest.raises(ModelSourceError) as error:
        load_text_encoder(folder, device="cpu")
    assert _one_line(error).endswith(
        f"tensor '{FC1}' has shape (255, 128), expected (256, 128) (from the config and the other tensors); "
        "the weights do not fit together"
    )


def test_integer_weights_are_refused(tmp_path, tiny_text_weights):
    config, tensors = tiny_text_weights
    folder = _folder(tmp_path, config, {**tensors, FC1: tensors[FC1].to(torch.int64)})
    with pytest.raises(ModelSourceError, match=rf"tensor '{FC1}' holds int64 values, expected floating-point weights"):
        load_text_encoder(folder, device="cpu")


def test_width_mismatch_between_tensors_of_a_single_file(tmp_path, tiny_text_weights):
    _, tensors = tiny_text_weights
    path = _single_file(tmp_path, {**tensors, POSITION: torch.zeros(77, 64)})  # token embedding is 128 wide
    with pytest.raises(ModelSourceError) as error:
        load_text_encoder(path, device="cpu")
    assert f"tensor '{POSITION}' has shape (77, 64), expected (77, 128)" in _one_line(error)


def test_five_position_embeddings_are_refused(tmp_path, tiny_text_weights):
    _, tensors = tiny_text_weights
    path = _single_file(tmp_path, {**tensors, POSITION: torch.zeros(5, 128)})
    with pytest.raises(ModelSourceError) as error:
        load_text_encoder(path, device="cpu")
    assert _one_line(error) == (
        f"model '{path}': text encoder has 5 position embeddings, expected at least 77 (CLIP encodes 77 tokens); "
        "the weights or config.json are damaged"
    )


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused(tmp_path, tiny_text_weights):
    _, tensors = tiny_text_weights
    path = _single_file(tmp_path, {**tensors, TOKEN: torch.zeros(10, 128)})
    with pytest.raises(ModelSourceError) as error:
        load_text_encoder(path, device="cpu")
    assert "text encoder has a vocabulary of 10 tokens, smaller than its tokenizer's 49408" in _one_line(error)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_first_tensor(tmp_path, tiny_text_weights, value):
    config, tensors = tiny_text_weights
    damaged = tensors[FC1].clone()
    damaged[3, :5] = value
    folder = _folder(tmp_path, config, {**tensors, FC1: damaged})
    with pytest.raises(ModelSourceError) as error:
        load_text_encoder(folder, device="cpu")
    assert _one_line(error).endswith(
        f"tensor '{FC1}' holds NaN or infinite values; the file is damaged or was saved after a diverged training run"
    )


def test_check_finite_passes_large_finite_values_and_skips_integers():
    half = torch.full((1000,), 60000.0, dtype=torch.float16)  # its float16 sum would overflow to inf
    single = torch.full((1000,), 3e38)  # its float32 sum overflows: the exact check must clear it
    check_finite({"half": half, "single": single, "ids": torch.arange(3), "note": "not a tensor"}, source="x")


def test_check_finite_samples_large_tensors_unless_exhaustive():
    big = torch.zeros(1 << 20)
    big[12345] = float("nan")  # between the sampled blocks
    check_finite({"big": big}, source="x")
    with pytest.raises(ModelSourceError, match="^checkpoint 'x': tensor 'big' holds NaN or infinite values"):
        check_finite({"big": big}, source="x", exhaustive=True)
    big.fill_(float("nan"))  # NaN throughout, as a diverged run leaves it
    with pytest.raises(ModelSourceError, match="tensor 'big' holds NaN"):
        check_finite({"big": big}, source="x")


def test_non_finite_full_clip_model_is_refused(tmp_path):
    from sdclip.testing import random_clip_model, save_clip_folder

    model = random_clip_model()
    with torch.no_grad():
        model.logit_scale.fill_(float("nan"))
    folder = save_clip_folder(model, tmp_path / "clip")
    with pytest.raises(ModelSourceError, match="tensor 'logit_scale' holds NaN or infinite values"):
        load_clip_model(folder, device="cpu")


def test_config_json_that_is_a_list(tmp_path, tiny_text_weights, capsys):
    _, tensors = tiny_text_weights
    folder = _folder(tmp_path, [], tensors)
    with pytest.raises(ModelSourceError) as error:
        load_text_encoder(folder, device="cpu")
    assert _one_line(error) == f"config '{folder / 'config.json'}': expected a JSON object, found a JSON array"
    assert main(["tokens", "a cat", "--model", str(folder)]) == 2
    assert capsys.readouterr().err == (
        f"sdclip tokens: error: config '{folder / 'config.json'}': expected a JSON object, found a JSON array\n"
    )


def test_architectures_null(tmp_path, tiny_text_weights, capsys):
    _, tensors = tiny_text_weights
    folder = _folder(tmp_path, {"architectures": [None]}, tensors)
    expected = (
        f"model '{folder}': {folder / 'config.json'} describes an unknown model, expected a CLIP model "
        '(CLIPModel, CLIPTextModel or CLIPTextModelWithProjection; "architectures" names the class)'
    )
    with pytest.raises(ModelSourceError) as error:
        load_text_encoder(folder, device="cpu")
    assert _one_line(error) == expected
    assert main(["tokens", "a cat", "--model", str(folder)]) == 2
    assert capsys.readouterr().err == f"sdclip tokens: error: {expected}\n"


# -- dtypes and devices ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool, torch.complex64])
def test_non_float_dtypes_are_refused(text_sources, dtype):
    with pytest.raises(ModelSourceError, match=rf"^dtype '{dtype}': models need a floating-point dtype; "
                                               "expected one of fp32, fp16, bf16$"):
        TextConditioner.from_pretrained(text_sources["pipeline"], device="cpu", dtype=dtype)


def _missing_devices() -> list[str]:
    devices = ["meta", "cuda:99"]
    if not torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.mark.parametrize("device", _missing_devices())
def test_devices_the_machine_lacks_are_one_clear_error(text_sources, tmp_path, capsys, device):
    with pytest.raises(ModelSourceError) as error:
        load_text_encoder(text_sources["pipeline"], device=device)
    message = _one_line(error)
    assert message.startswith(f"device '{device}': ") and message.endswith("available: " + _available())
    out = tmp_path / "e.safetensors"
    assert main(["encode", "a", "--model", str(text_sources["pipeline"]), "--device", device, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"sdclip encode: error: {message}\n"
    assert not out.exists()


def _available() -> str:
    from sdclip.models.devices import available_devices

    return ", ".join(available_devices())


def test_missing_cuda_says_so(text_sources):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelSourceError, match=r"^device 'cuda': this machine has no CUDA GPU .*; available: cpu"):
        load_text_encoder(text_sources["pipeline"], device="cuda")


# -- pickles --------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this would call a function; ``weights_only=True`` must refuse before it does."""

    def __reduce__(self):
        return (print, ("this pickle ran code",))


PICKLE_REFUSAL = (
    "checkpoint '{}': holds objects other than tensors (code or custom classes), which "
    "sdclip's safe loader does not run; convert it to .safetensors where you trust it"
)


def _evil_pickle(tmp_path: Path) -> Path:
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": _Payload()}, protocol=4))  # protocol 4: torch warns about it
    return path


def test_a_malicious_pickle_is_refused_in_one_line(tmp_path, capsys):
    path = _evil_pickle(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's protocol warning would fail here
        assert main(["encode", "a", "--model", str(path), "--allow-pickle", "--out", str(tmp_path / "e.safetensors")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"sdclip encode: error: {PICKLE_REFUSAL.format(path)}\n"
    assert "this pickle ran code" not in captured.out


@pytest.mark.slow
def test_a_malicious_pickle_is_refused_in_one_line_in_a_fresh_process(tmp_path):
    path = _evil_pickle(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "sdclip.cli", "encode", "a", "--model", str(path), "--allow-pickle",
         "--out", str(tmp_path / "e.safetensors")],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                             "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 2
    assert result.stderr == f"sdclip encode: error: {PICKLE_REFUSAL.format(path)}\n"
    assert "this pickle ran code" not in result.stdout


@pytest.mark.parametrize("value", [None, 7, ["clip"]])
def test_a_config_whose_model_type_is_not_a_string_is_refused(tmp_path, value):
    """``"model_type": null`` was read as "no model type" and ``sdclip tokens`` went on as if it were fine."""
    from sdclip.models.sources import resolve_source

    (tmp_path / "config.json").write_text(json.dumps({"model_type": value, "architectures": ["CLIPTextModel"]}))
    with pytest.raises(ModelSourceError, match=r"config.json has \"model_type\": .*, expected a string such as "
                                                r"\"clip_text_model\" \(or no such key\)"):
        resolve_source(tmp_path)
