"""``sdclip encode`` / ``sdclip tokens`` on SD3 and Flux pipeline folders, against diffusers' encode_prompt."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sdclip.cli import main

pytestmark = pytest.mark.slow  # saved pipeline folders through the CLI: end to end


def test_encode_sd3_writes_every_tensor_the_pipeline_takes(tmp_path, sd3_pipeline_folder, sd3_pipe):
    out = tmp_path / "sd3.safetensors"
    argv = ["encode", "a cat", "--model", str(sd3_pipeline_folder), "--negative", "blurry", "--device", "cpu",
            "--max-sequence-length", "16", "--out", str(out)]
    assert main(argv) == 0
    tensors = load_file(str(out))
    with torch.inference_mode():
        expected = sd3_pipe.encode_prompt("a cat", None, None, device="cpu", negative_prompt="blurry", max_sequence_length=16)
    names = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    assert set(tensors) == set(names)
    for name, reference in zip(names, expected, strict=True):
        assert (tensors[name] - reference).abs().max().item() < 1e-5, name


def test_encode_flux_writes_its_tensors_and_text_ids(tmp_path, flux_pipeline_folder, flux_pipe):
    out = tmp_path / "flux.safetensors"
    assert main(["encode", "a cat", "--model", str(flux_pipeline_folder), "--device", "cpu", "--out", str(out)]) == 0
    tensors = load_file(str(out))
    with torch.inference_mode():
        embeds, pooled, text_ids = flux_pipe.encode_prompt("a cat", device="cpu")
    assert set(tensors) == {"prompt_embeds", "pooled_prompt_embeds", "text_ids"}
    assert (tensors["prompt_embeds"] - embeds).abs().max().item() < 1e-5
    assert (tensors["pooled_prompt_embeds"] - pooled).abs().max().item() < 1e-5 and torch.equal(tensors["text_ids"], text_ids)


def test_tokens_lists_t5_tokens_with_their_ids(capsys, sd3_pipeline_folder, sd3_pipe):
    argv = ["tokens", "a photo of a cat", "--model", str(sd3_pipeline_folder), "--max-sequence-length", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    ids = sd3_pipe.tokenizer_3("a photo of a cat").input_ids
    names = sd3_pipe.tokenizer_3.convert_ids_to_tokens(ids)
    assert "▁photo" in out and str(ids[1]) in out and names[-1] == "</s>"
    assert "3 past the limit (dropped)" in out  # T5 keeps 2 tokens and </s> of 5 + </s>


def test_tokens_lists_compel_conjunction_windows(capsys, sd3_pipeline_folder, sd3_pipe):
    """compel's .and() gives T5 one window per part (see conditioning/compel_math): chunks t5 and t5.1."""
    argv = ["tokens", '("a cat", "a dog").and()', "--syntax", "compel", "--model", str(sd3_pipeline_folder),
            "--max-sequence-length", "4"]  # fmt: skip
    assert main(argv) == 0
    rows = [line.split("│")[1:4] for line in capsys.readouterr().out.splitlines() if "▁" in line or "</s>" in line]
    dog = sd3_pipe.tokenizer_3("a dog").input_ids
    assert [(c.strip(), p.strip()) for c, p, _ in rows] == [("t5", "0"), ("t5", "1"), ("t5", "2"), ("t5.1", "0"),
                                                           ("t5.1", "1"), ("t5.1", "2")]  # fmt: skip
    assert [t.strip() for _, _, t in rows[3:]] == sd3_pipe.tokenizer_3.convert_ids_to_tokens(dog)
