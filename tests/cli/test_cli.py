"""The CLI's encode and tokens commands: outputs, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sdclip.cli import main


def test_tokens_works_offline_with_the_shipped_tokenizer(capsys):
    assert main(["tokens", "a photo of a cat", "cat " * 80]) == 0
    out = capsys.readouterr().out
    assert "photo</w>" in out and "1125" in out
    assert "5 past the limit (dropped)" in out and "truncated" in out


def test_tokens_with_a_model_uses_its_tokenizer(capsys, pipeline_folder):
    assert main(["tokens", "a cat", "--model", str(pipeline_folder)]) == 0
    assert "2368" in capsys.readouterr().out


def test_encode_writes_tensors_and_a_table(capsys, tmp_path, pipeline_folder, conditioner):
    from safetensors.torch import load_file

    out = tmp_path / "sub" / "embeds.safetensors"
    code = main(["encode", "a cat", "a dog", "--model", str(pipeline_folder), "--negative", "blurry",
                 "--clip-skip", "1", "--device", "cpu", "--out", str(out)])
    assert code == 0
    tensors = load_file(str(out))
    expected = conditioner.encode(["a cat", "a dog"], "blurry", clip_skip=1)
    assert set(tensors) == {"prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds",
                            "negative_pooled_prompt_embeds"}
    for name, tensor in tensors.items():
        assert torch.equal(tensor, getattr(expected, name)), name
    table = capsys.readouterr().out
    assert "prompt_embeds" in table and "(2, 77, 128)" in table and "float32" in table


def test_encode_without_negative_writes_the_prompt_pair(tmp_path, pipeline_folder):
    from safetensors.torch import load_file

    out = tmp_path / "e.safetensors"
    assert main(["encode", "a cat", "--model", str(pipeline_folder), "--out", str(out)]) == 0
    assert set(load_file(str(out))) == {"prompt_embeds", "pooled_prompt_embeds"}


@pytest.mark.parametrize(("syntax", "prompt", "weighting"), [
    ("a1111", "a (red:1.3) cat, " + "very " * 80 + "[blurry]", None),
    ("comfy", "a (red:1.3) cat, " + "very " * 80 + "[blurry]", "a1111"),
    ("compel", '("a red cat++ with fur", "a dog").blend(0.7, 0.3)', None),
])
def test_encode_reads_the_prompt_syntax_and_keeps_long_prompts(tmp_path, pipeline_folder, conditioner, syntax,
                                                               prompt, weighting):
    """The CLI passes --syntax / --weighting / --no-truncate through: the file holds what the API gives
    (whose numbers the conditioning tests compare with A1111, ComfyUI and compel)."""
    from safetensors.torch import load_file

    out = tmp_path / "e.safetensors"
    argv = ["encode", prompt, "--syntax", syntax, "--no-truncate", "--model", str(pipeline_folder), "--out", str(out)]
    assert main(argv + (["--weighting", weighting] if weighting else [])) == 0
    expected = conditioner.encode(prompt, syntax=syntax, truncate=False, weighting=weighting)
    tensors = load_file(str(out))
    assert tensors["prompt_embeds"].shape == expected.prompt_embeds.shape
    assert torch.equal(tensors["prompt_embeds"], expected.prompt_embeds)
    assert not torch.equal(tensors["prompt_embeds"][:, :77], conditioner.encode(prompt).prompt_embeds)


def test_encode_refuses_an_unknown_weighting_before_loading_the_model(capsys):
    assert main(["encode", "a", "--weighting", "loud", "--model", "/no/such/model", "--out", "x.safetensors"]) == 2
    assert capsys.readouterr().err.strip() == (
        "sdclip encode: error: weighting: expected None or one of 'a1111', 'comfy', 'multiply', got 'loud'")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["encode", "a", "--model", "/no/such/model", "--out", "x.safetensors"],
         "sdclip encode: error: model '/no/such/model': no such file or folder"),
        (["encode", "a", "--model", "MODEL", "--out", "x.pt"],
         "sdclip encode: error: --out 'x.pt': expected a file ending in .safetensors"),
        (["tokens", "a", "--model", "/no/such/model"], "sdclip tokens: error: model '/no/such/model'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(capsys, pipeline_folder, argv, message):
    argv = [str(pipeline_folder) if a == "MODEL" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_bad_flags_exit_2_without_traceback():
    result = subprocess.run([sys.executable, "-m", "sdclip.cli", "encode", "a", "--out", "x.safetensors", "--bogus"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr == "sdclip: error: unrecognized arguments: --bogus (see sdclip --help)\n"


@pytest.mark.slow  # a fresh process imports torch and transformers: ~5-10 s
def test_missing_weights_from_the_cli_is_one_line(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "sdclip.cli", "encode", "a cat", "--out",
                             str(tmp_path / "x.safetensors")], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "hf download openai/clip-vit-large-patch14" in result.stderr
