"""The functional encoder core on its own, against transformers' outputs recomputed in float64."""

from __future__ import annotations

import pytest
import torch

from sdclip.conditioning.core import assemble, encode_chunks, pad_chunks, run_encoder
from sdclip.conditioning.types import SDXL_SPEC, EncoderSpec
from sdclip.errors import PromptError
from sdclip.prompts.chunking import chunk_prompt, empty_chunk
from sdclip.testing import TINY_TEXT, random_text_encoder

EOS = 49407


@pytest.fixture(scope="module")
def model64():
    return random_text_encoder(TINY_TEXT, projection=True, seed=3).double()


def _ids(tokenizer, texts):
    return torch.tensor(tokenizer(texts, padding="max_length", max_length=77, truncation=True).input_ids)


@pytest.mark.parametrize(("spec", "clip_skip"), [(EncoderSpec(), None), (EncoderSpec(), 1), (SDXL_SPEC, None), (SDXL_SPEC, 1)])
def test_run_encoder_is_transformers_hidden_state_and_pooled(model64, tokenizer, spec, clip_skip):
    ids = _ids(tokenizer, ["a photo of a cat", "a dog"])
    with torch.no_grad():
        hidden, pooled = run_encoder(model64, spec, ids, eos_token_id=EOS, clip_skip=clip_skip)
        reference = model64(ids, output_hidden_states=True)
        layer = reference.hidden_states[-((clip_skip or 0) + spec.skip_offset)]
        if spec.final_norm:
            layer = model64.text_model.final_layer_norm(layer)
    assert hidden.dtype == torch.float64 and hidden.shape == (2, 77, TINY_TEXT["hidden_size"])
    torch.testing.assert_close(hidden, layer, rtol=0, atol=1e-12)
    torch.testing.assert_close(pooled, reference.text_embeds, rtol=0, atol=1e-12)  # projected EOS state


@pytest.mark.parametrize("mode", ["a1111", "comfy", "multiply"])
def test_encode_chunks_weights_each_chunk_as_the_float64_formula(model64, tokenizer, mode):
    prompts = ["a (cat:1.5) on a mat", "plain words", "(dog:0.5) and [bird]"]
    chunks = [chunk_prompt(p, tokenizer, syntax="a1111").chunks[0] for p in prompts]
    with torch.no_grad():
        hidden, pooled, ids = encode_chunks(
            model64, EncoderSpec(), chunks, eos_token_id=EOS, weighting=mode, empty=empty_chunk(tokenizer)
        )
        raw = model64(torch.tensor([c.ids for c in chunks])).last_hidden_state  # (3, 77, H)
        empty = model64(torch.tensor([empty_chunk(tokenizer).ids])).last_hidden_state  # (1, 77, H)
    w = torch.tensor([c.weights for c in chunks]).double()[..., None]  # (3, 77, 1): weights are float32
    if mode == "multiply":
        expected = raw * w
    elif mode == "a1111":
        z = raw * w
        expected = z * raw.mean(dim=(1, 2), keepdim=True) / z.mean(dim=(1, 2), keepdim=True)
    else:
        expected = torch.where(w == 1, raw, (raw - empty) * w + empty)
    expected[1] = raw[1]  # a chunk without weights comes back exactly as encoded
    assert ids.tolist() == [list(c.ids) for c in chunks]
    torch.testing.assert_close(hidden, expected, rtol=0, atol=1e-10)
    assert torch.equal(hidden[1], raw[1])


def test_encode_chunks_runs_identical_chunks_once_and_keeps_their_order(model64, tokenizer):
    a, b = (chunk_prompt(p, tokenizer).chunks[0] for p in ("a cat", "a dog"))
    calls = []
    handle = model64.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            hidden, _, ids = encode_chunks(model64, EncoderSpec(), [a, b, a, a], eos_token_id=EOS)
    finally:
        handle.remove()
    assert calls == [2] and ids[:, :4].tolist() == [list(c.ids[:4]) for c in (a, b, a, a)]
    assert torch.equal(hidden[0], hidden[2]) and not torch.equal(hidden[0], hidden[1])


def test_encode_chunks_refuses_a_weight_that_overflows_the_dtype(tokenizer):
    model = random_text_encoder(TINY_TEXT, seed=1).half()
    chunks = chunk_prompt("a (cat:1000000)", tokenizer, syntax="a1111").chunks
    message = r"prompt 'a \(cat:1000000\)': weight 1e\+06 makes the conditioning infinite or NaN in torch.float16"
    with torch.no_grad(), pytest.raises(PromptError, match=message):
        encode_chunks(model, EncoderSpec(), chunks, eos_token_id=EOS, weighting="multiply", names=["a (cat:1000000)"])


def test_pad_chunks_and_assemble_against_explicit_concatenation():
    hidden, ids = torch.randn(1, 77, 4, dtype=torch.float64), torch.arange(77)
    empty_hidden, empty_ids = torch.randn(77, 4, dtype=torch.float64), torch.full((77,), 7)
    flat_hidden, flat_ids = pad_chunks(hidden, ids[None], 3, empty_hidden, empty_ids)
    assert torch.equal(flat_hidden, torch.cat([hidden[0], empty_hidden, empty_hidden]))
    assert torch.equal(flat_ids, torch.cat([ids, empty_ids, empty_ids]))
    second = (torch.randn(231, 6, dtype=torch.float64), torch.randn(5, dtype=torch.float64), flat_ids)
    out_hidden, out_pooled, out_ids = assemble([[(flat_hidden, torch.zeros(3), flat_ids), second]], 2)
    assert out_hidden.shape == (2, 231, 10)
    assert torch.equal(out_hidden[1], torch.cat([flat_hidden, second[0]], dim=-1))
    assert torch.equal(out_pooled, second[1].expand(2, 5)) and torch.equal(out_ids[0], flat_ids)
