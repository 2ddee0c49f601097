"""syntax="compel" against the compel package itself (test extra) on tiny SD 1.x and SDXL pipelines:
``prompt_embeds`` within 1e-5 in fp32, over the parser tests' corpus (every construct).

Two deliberate differences, each shown with both values:
* SDXL's pooled vector: compel encodes the raw prompt string, syntax and all (compel#96); sdclip takes it
  from the unweighted text, as diffusers' encode_prompt computes it for that text.
* clip skip on transformers 5: compel's PENULTIMATE_HIDDEN_STATES_NORMALIZED reads
  ``text_encoder.text_model``, which transformers 5's CLIPTextModel no longer has (AttributeError);
  sdclip's ``clip_skip=1`` gives what compel computes once that attribute is there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from sdclip.conditioning.conditioner import TextConditioner
from sdclip.errors import PromptError

compel = pytest.importorskip("compel")
from compel import Compel, ReturnedEmbeddingsType  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "prompts"))
from test_compel import CORPUS  # noqa: E402  (the parser tests' corpus)

FAST = ["a cat++ dog", "(a red cat)0.5 on (a mat)0.2", "a cat--- sitting", '("a cat", "a dog").blend(0.7, 0.3)',
        '("a cat", "a dog").blend(1.5, 0.5, no_normalize)', '("a cat++", "a dog--").and(1, 0.5)',
        "a \\(literal\\) paren", ""]  # fmt: skip


@pytest.fixture(scope="module")
def sd(sd_pipe):
    return TextConditioner.from_pipeline(sd_pipe), Compel(tokenizer=sd_pipe.tokenizer, text_encoder=sd_pipe.text_encoder)


@pytest.fixture(scope="module")
def sdxl(sdxl_pipe):
    from compel.convenience_wrappers import CompelForSDXL

    return TextConditioner.from_pipeline(sdxl_pipe), CompelForSDXL(sdxl_pipe)


def _per_encoder(pipe):
    """CompelForSDXL's math without its pooled request: one Compel per encoder, concatenated. (With the
    pooled request, compel's weighted ``.and()`` crashes: build_conditioning_tensor('') returns a tuple.)"""
    penultimate = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
    first = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, returned_embeddings_type=penultimate)
    second = Compel(tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2, returned_embeddings_type=penultimate)
    return lambda text: torch.cat([first(text), second(text)], dim=-1)


def _check(cond, reference, prompts):
    for text in prompts:
        ours = cond.encode(text, syntax="compel").prompt_embeds
        theirs = reference(text)
        assert ours.shape == theirs.shape, text
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5, msg=lambda m, text=text: f"{text!r}: {m}")


def test_sd_matches_compel(sd):
    _check(*sd, FAST)


@pytest.mark.slow
def test_sd_corpus_matches_compel(sd):
    assert len(CORPUS) >= 50
    _check(*sd, CORPUS)


@pytest.mark.slow
def test_sdxl_matches_compel(sdxl, sdxl_pipe):
    cond, compel_for_sdxl = sdxl
    _check(cond, _per_encoder(sdxl_pipe), FAST + CORPUS[:30])
    for text in ["a cat++ dog", '("a cat", "a dog").blend(0.7, 0.3)', '("a cat", "a dog--").and()']:
        torch.testing.assert_close(cond.encode(text, syntax="compel").prompt_embeds, compel_for_sdxl(text).embeds,
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(AttributeError):  # compel's own SDXL wrapper on a weighted .and()
        compel_for_sdxl('("a cat", "a dog").and(1, 0.5)')


def test_negative_padding_matches_compel(sd):
    cond, reference = sd
    prompt, negative = '("a cat", "a dog").and()', "blurry--"
    ours = cond.encode(prompt, negative, syntax="compel")
    theirs = reference.pad_conditioning_tensors_to_same_length([reference(prompt), reference(negative)])
    torch.testing.assert_close(ours.prompt_embeds, theirs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.negative_prompt_embeds, theirs[1], atol=1e-5, rtol=1e-5)


def test_sdxl_pooled_from_the_unweighted_prompt_compel_96(sdxl, sdxl_pipe):
    """compel#96: compel's pooled vector encodes "a (red cat)1.4" with the brackets and the number."""
    cond, reference = sdxl
    text = "a (red cat)1.4 on a mat"
    compel_pooled = reference(text).pooled_embeds
    ours = cond.encode(text, syntax="compel").pooled_prompt_embeds
    diffusers_plain = sdxl_pipe.encode_prompt("a red cat on a mat", device="cpu", do_classifier_free_guidance=False)[2]
    tokens = sdxl_pipe.tokenizer_2(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    raw = sdxl_pipe.text_encoder_2(tokens.input_ids).text_embeds  # what compel does: the raw string
    torch.testing.assert_close(ours, diffusers_plain, atol=1e-6, rtol=1e-6)  # sdclip: the plain text
    torch.testing.assert_close(compel_pooled, raw, atol=1e-6, rtol=1e-6)  # compel: the raw string
    assert (ours - compel_pooled).abs().max() > 1e-3  # the two differ


class _WithTextModel(torch.nn.Module):
    """transformers 4's CLIPTextModel layout (``.text_model``) around a transformers 5 one, for compel."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.text_model = model, model

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype


def test_clip_skip_on_transformers_5(sd_pipe, sd):
    cond, _ = sd
    penultimate = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NORMALIZED
    broken = Compel(tokenizer=sd_pipe.tokenizer, text_encoder=sd_pipe.text_encoder, returned_embeddings_type=penultimate)
    with pytest.raises(AttributeError, match="text_model"):  # compel on transformers 5
        broken("a cat++")
    shimmed = Compel(tokenizer=sd_pipe.tokenizer, text_encoder=_WithTextModel(sd_pipe.text_encoder),
                     returned_embeddings_type=penultimate)
    for text in ["a cat++ dog", "a (red cat)0.6", '("a cat", "a dog").blend(0.3, 0.7)']:
        ours = cond.encode(text, syntax="compel", clip_skip=1).prompt_embeds
        torch.testing.assert_close(ours, shimmed(text), atol=1e-5, rtol=1e-5)
        assert (ours - cond.encode(text, syntax="compel").prompt_embeds).abs().max() > 1e-3


def test_other_weighting_refused(sd):
    cond, _ = sd
    with pytest.raises(PromptError, match=r"^weighting: syntax 'compel' combines encodings with compel's math, which "
                                          r"weights as 'comfy', got 'a1111' \(pass weighting=None for the syntax's "
                                          r"own; a structured syntax is registered with weighting='comfy'\)$"):
        cond.encode("a cat++", syntax="compel", weighting="a1111")


def test_long_prompts_chunk_as_a1111(sd):
    cond, _ = sd
    text = "a cat++, " + "a photo of a dog, " * 20
    out = cond.encode(text, syntax="compel", truncate=False)
    assert out.prompt_embeds.shape[1] == 77 * len(out.prompt_chunks[0].chunks) > 77
    with pytest.warns(Warning, match="truncat"):
        cond.encode(text + " unique", syntax="compel")


@pytest.mark.parametrize("n_vectors", [pytest.param(1, marks=pytest.mark.slow), 3])
def test_textual_inversion_names_encode_as_compel_with_diffusers_manager(tmp_path, n_vectors, sd):
    """An embedding named in compel syntax: sdclip's load_textual_inversion vs diffusers'
    ``pipe.load_textual_inversion`` + compel's ``DiffusersTextualInversionManager`` (which expands a
    multi-vector name to ``tok tok_1 ...`` per fragment, as diffusers' ``maybe_convert_prompt``)."""
    from compel import DiffusersTextualInversionManager
    from safetensors.torch import save_file

    from sdclip.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()  # its own: diffusers' load_textual_inversion changes the pipeline in place
    cond = TextConditioner.from_pipeline(pipe)
    path = tmp_path / "my-token.safetensors"
    save_file({"emb_params": torch.randn(n_vectors, 128, generator=torch.Generator().manual_seed(3))}, str(path))
    cond.load_textual_inversion(path, token="<my-token>")
    pipe.load_textual_inversion(str(path), token="<my-token>")
    reference = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                       textual_inversion_manager=DiffusersTextualInversionManager(pipe))
    prompts = ["a photo of <my-token>++", "a cat, (<my-token> style)0.5", '("<my-token>", "a dog--").blend(0.6, 0.4)',
               '("a cat", "<my-token>").and()']  # fmt: skip
    _check(cond, reference, prompts)
    without = sd[0].encode(prompts[0], syntax="compel").prompt_embeds  # the same weights, no embedding
    assert (cond.encode(prompts[0], syntax="compel").prompt_embeds - without).abs().max() > 1e-3  # the name mattered
