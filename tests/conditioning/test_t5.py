"""T5's tokens, weights and truncation, against transformers' tokenizer and a float64 recomputation from token ids."""

from __future__ import annotations

import copy

import pytest
import torch

from sdclip import TextConditioner, TruncationWarning
from sdclip.conditioning.t5 import t5_tokens

# the runs a weighted prompt is made of, written out by hand (not by sdclip's parser)
PROMPT = "a (red:1.5) cat, (blurry:0.5) photo"
RUNS = [("a ", 1.0), ("red", 1.5), (" cat, ", 1.0), ("blurry", 0.5), (" photo", 1.0)]
LENGTH = 24


@pytest.fixture(scope="module")
def flux(flux_pipe):
    return TextConditioner.from_pipeline(flux_pipe)


@pytest.fixture(scope="module")
def t5_float64(flux_pipe):
    return copy.deepcopy(flux_pipe.text_encoder_2).double()


def reference_ids(tokenizer, runs, length):
    ids, weights = [], []
    for text, weight in runs:
        run = tokenizer(text, add_special_tokens=False).input_ids
        ids += run
        weights += [weight] * len(run)
    padding = length - len(ids) - 1
    return [ids + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * padding], [weights + [1.0] * (padding + 1)]


@pytest.mark.parametrize("syntax", ["a1111", "comfy"])
def test_t5_weights_follow_the_stated_rule(flux, flux_pipe, t5_float64, syntax):
    tokenizer = flux_pipe.tokenizer_2
    ids, weights = reference_ids(tokenizer, RUNS, LENGTH)
    with torch.no_grad():
        hidden = t5_float64(torch.tensor(ids)).last_hidden_state  # (1, L, H) float64
        w = torch.tensor(weights, dtype=torch.float64)[..., None]
        if syntax == "a1111":  # sd_embed: multiply
            expected = hidden * w
        else:  # ComfyUI: move away from the empty text's encoding (</s>, then padding)
            empty = [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * (LENGTH - 1)
            anchor = t5_float64(torch.tensor([empty])).last_hidden_state
            expected = anchor + (hidden - anchor) * w
    out = flux.encode(PROMPT, syntax=syntax, max_sequence_length=LENGTH)
    assert out.t5_ids[0].tolist() == ids[0]
    assert (out.prompt_embeds.double() - expected).abs().max().item() < 1e-5
    assert out.t5_tokens[0].weights == tuple(weights[0])


def test_unweighted_syntaxes_equal_diffusers(flux, flux_pipe):
    with torch.inference_mode():
        expected, _, _ = flux_pipe.encode_prompt("a photo of a cat", device="cpu", max_sequence_length=LENGTH)
    for syntax in ("a1111", "comfy"):
        out = flux.encode("a photo of a cat", syntax=syntax, max_sequence_length=LENGTH)
        assert (out.prompt_embeds - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("length", [4, 9])
def test_cut_as_the_tokenizer_cuts(flux_pipe, length):
    tokenizer = flux_pipe.tokenizer_2
    text = "a photo of a cat in the style of oil painting"
    expected = tokenizer(text, padding="max_length", max_length=length, truncation=True).input_ids
    tokens = t5_tokens(text, tokenizer, max_length=length)
    assert list(tokens.ids) == expected and tokens.length == length
    kept = tokenizer(text, add_special_tokens=False).input_ids
    assert tokens.truncated_text == tokenizer.decode(kept[length - 1 :])


def test_overlong_t5_text_warns_with_what_was_cut(flux):
    # 4 tokens: three of the text, then </s>
    with pytest.warns(TruncationWarning, match=r"longer than the 4-token limit; encoded by T5 without: 'a cat in the "
                      r"style' \(pass a larger max_sequence_length to keep it\)"):
        flux.encode("a photo of a cat in the style", max_sequence_length=4)


def test_break_is_ignored_by_t5(flux_pipe):
    tokenizer = flux_pipe.tokenizer_2
    assert t5_tokens("a cat BREAK a dog", tokenizer, syntax="a1111", max_length=8).ids == \
        t5_tokens("a cat a dog", tokenizer, syntax="a1111", max_length=8).ids
