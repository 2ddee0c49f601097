"""syntax="compel" on SD3 and Flux against the compel package (test extra), on tiny pipelines, fp32.

* Flux: compel's own ``CompelForFlux`` (CLIP-L pooled + T5 with compel's math) is the reference:
  ``prompt_embeds`` within 1e-5.
* SD3: compel has no SD3 wrapper. The reference is compel's ``Compel`` per CLIP encoder (as
  ``CompelForSDXL`` uses it: penultimate states, not normalized) side by side, zero-padded to T5's width,
  then compel's ``Compel`` over T5 (as ``CompelForFlux`` uses it) after them on the sequence axis, as
  diffusers' ``StableDiffusion3Pipeline.encode_prompt`` assembles its tensors.

T5 follows compel's rule (``CompelForFlux``): the same weighting, masked downweighting and blends as
CLIP, anchored on the empty text (``</s>`` then ``<pad>``), and ``.and()`` concatenates one
``max_sequence_length`` window per part. ``max_sequence_length=32`` keeps T5 small (compel's
``model_max_length``).

Pooled vectors differ on purpose, each shown with both values: compel's Flux wrapper returns one pooled
row per blended or conjoined prompt (a blend of 2 gives 2 rows for one prompt, which FluxPipeline cannot
take); SD3's compel pooled would be the raw string (compel#96, as for SDXL). sdclip takes the pooled
vector from the first part's unweighted text (a blend: the blend of its prompts' pooled vectors).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from sdclip.conditioning.conditioner import TextConditioner

compel = pytest.importorskip("compel")
from compel import Compel, ReturnedEmbeddingsType  # noqa: E402
from compel.convenience_wrappers import CompelForFlux  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "prompts"))
from test_compel import CORPUS  # noqa: E402  (the parser tests' corpus)

TOL = 1e-5
LENGTH = 32  # T5's max_sequence_length here (compel: model_max_length)
FAST = ["a cat++ dog", "(a red cat)0.5 on (a mat)0.2", '("a cat", "a dog--").blend(0.7, 0.3)',
        '("a cat++", "a dog").and(1, 0.5)', "a \\(literal\\) paren"]  # fmt: skip
SLOW = CORPUS[::3]  # a third of the corpus has every construct; all of it takes minutes with compel


@pytest.fixture(scope="module")
def flux(flux_pipe):
    reference = CompelForFlux(flux_pipe)
    reference.compel_2.conditioning_provider.model_max_length_override = LENGTH
    return TextConditioner.from_pipeline(flux_pipe), reference


class _SD3Compel:
    """compel's Compel per CLIP encoder and over T5, assembled as StableDiffusion3Pipeline.encode_prompt."""

    def __init__(self, pipe):
        penultimate = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
        self.clip = [Compel(tokenizer=tokenizer, text_encoder=encoder, returned_embeddings_type=penultimate)
                     for tokenizer, encoder in [(pipe.tokenizer, pipe.text_encoder),
                                                (pipe.tokenizer_2, pipe.text_encoder_2)]]  # fmt: skip
        self.t5 = Compel(tokenizer=pipe.tokenizer_3, text_encoder=pipe.text_encoder_3, model_max_length=LENGTH)

    def __call__(self, *texts):
        """``prompt_embeds`` of each text, padded to a common length (compel's padding, per encoder)."""
        clip = [torch.cat(parts, dim=-1) for parts in zip(*(c.pad_conditioning_tensors_to_same_length([c(t) for t in texts])
                                                            for c in self.clip), strict=True)]  # fmt: skip
        t5 = self.t5.pad_conditioning_tensors_to_same_length([self.t5(t) for t in texts])
        return [torch.cat([torch.nn.functional.pad(c, (0, t.shape[-1] - c.shape[-1])), t], dim=1)
                for c, t in zip(clip, t5, strict=True)]  # fmt: skip


@pytest.fixture(scope="module")
def sd3(sd3_pipe):
    return TextConditioner.from_pipeline(sd3_pipe), _SD3Compel(sd3_pipe)


def _close(ours, theirs, text):
    assert ours.shape == theirs.shape, text
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=TOL, msg=lambda m: f"{text!r}: {m}")


def _check_flux(cond, reference, prompts):
    for text in prompts:
        _close(cond.encode(text, syntax="compel", max_sequence_length=LENGTH).prompt_embeds, reference(text).embeds, text)


def _check_sd3(cond, reference, prompts):
    for text in prompts:
        ours = cond.encode(text, syntax="compel", max_sequence_length=LENGTH, negative_prompt=False).prompt_embeds
        _close(ours, reference(text)[0], text)


def test_flux_matches_compel_for_flux(flux):
    _check_flux(*flux, FAST)


def test_sd3_matches_compel(sd3):
    _check_sd3(*sd3, FAST)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:prompt .* is longer than the 32-token limit")  # the corpus's long prompt, cut as compel cuts it
@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_corpus_matches_compel(family, request):
    cond, reference = request.getfixturevalue(family)
    (_check_flux if family == "flux" else _check_sd3)(cond, reference, SLOW)


@pytest.mark.parametrize("negative", [None, "blurry--"])
def test_sd3_conjunction_and_negative_padded_to_one_length(sd3, negative):
    """The ``.and()`` prompt is longer (2 CLIP windows, 2 T5 windows) than the negative (the default ""):
    both come out at one length, padded with the empty text's encoding as compel pads."""
    cond, reference = sd3
    prompt = '("a cat", "a dog").and()'
    out = cond.encode(prompt, negative, syntax="compel", max_sequence_length=LENGTH)
    theirs = reference(prompt, negative or "")
    assert out.prompt_embeds.shape[1] == 2 * 77 + 2 * LENGTH
    _close(out.prompt_embeds, theirs[0], prompt)
    _close(out.negative_prompt_embeds, theirs[1], negative)


def test_flux_negative_padded_as_compel_for_flux(flux):
    cond, reference = flux
    prompt, negative = '("a cat", "a dog").and()', "blurry--"
    out = cond.encode(prompt, negative, syntax="compel", max_sequence_length=LENGTH)
    theirs = reference(prompt, negative_prompt=negative)
    _close(out.prompt_embeds, theirs.embeds, prompt)
    _close(out.negative_prompt_embeds, theirs.negative_embeds, negative)
    assert out.text_ids.shape == (2 * LENGTH, 3)


def test_flux_pooled_one_row_per_prompt_where_compel_gives_one_per_part(flux, flux_pipe):
    cond, reference = flux
    plain = flux_pipe.encode_prompt("a cat", "a cat", device="cpu", max_sequence_length=LENGTH)[1]
    for text in ["a cat++", '("a cat", "a dog").and()']:
        ours = cond.encode(text, syntax="compel", max_sequence_length=LENGTH).pooled_prompt_embeds
        torch.testing.assert_close(ours, plain, atol=TOL, rtol=TOL)  # the first part's unweighted text, as diffusers
    assert reference("a cat++").pooled_embeds.shape == (1, plain.shape[-1])  # compel agrees on one part ...
    torch.testing.assert_close(reference("a cat++").pooled_embeds, plain, atol=TOL, rtol=TOL)
    assert reference('("a cat", "a dog").and()').pooled_embeds.shape == (2, plain.shape[-1])  # ... not on two


def test_sd3_pooled_from_the_unweighted_prompt_compel_96(sd3, sd3_pipe):
    """compel's pooled request encodes the raw string (compel#96); sdclip the text diffusers would see."""
    cond, _ = sd3
    text = "a (red cat)1.4 on a mat"
    ours = cond.encode(text, syntax="compel", max_sequence_length=LENGTH).pooled_prompt_embeds
    plain = sd3_pipe.encode_prompt("a red cat on a mat", None, None, device="cpu", do_classifier_free_guidance=False,
                                   max_sequence_length=LENGTH)[2]  # fmt: skip
    raw = torch.cat([Compel(tokenizer=tokenizer, text_encoder=encoder, requires_pooled=True)(text)[1]
                     for tokenizer, encoder in [(sd3_pipe.tokenizer, sd3_pipe.text_encoder),
                                                (sd3_pipe.tokenizer_2, sd3_pipe.text_encoder_2)]], dim=-1)  # fmt: skip
    torch.testing.assert_close(ours, plain, atol=TOL, rtol=TOL)
    assert (ours - raw).abs().max() > 1e-3  # compel's raw-string pooled differs


@pytest.mark.slow
def test_sd3_pipeline_runs_a_conjunction(sd3, sd3_pipe):
    cond, _ = sd3
    kwargs = cond.encode('("a cat", "a dog").and()', syntax="compel", max_sequence_length=LENGTH).pipeline_kwargs()
    image = sd3_pipe(**kwargs, num_inference_steps=1, height=32, width=32, output_type="pt",
                     generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    assert torch.isfinite(image).all()


def test_t5_tokens_are_the_windows_compel_feeds_t5(flux):
    """The ids sdclip reports (``t5_ids``, inspection's T5 tokens) are the ones compel's T5 reads: one
    window per ``.and()`` part."""
    from sdclip.inspection import tokens

    cond, reference = flux
    prompt = '("a cat", "a dog--").and()'
    theirs = reference(prompt).tokenization_info["main_positive"][0].reshape(-1)  # (2·L,)
    out = cond.encode(prompt, syntax="compel", max_sequence_length=LENGTH)
    assert out.t5_ids[0].tolist() == theirs.tolist()
    listed = tokens(prompt, cond, syntax="compel").t5_tokens  # the pipeline's default length: 512 per window
    pad = cond.t5.tokenizer.pad_token_id
    assert [t.id for t in listed] == [i for i in theirs.tolist() if i != pad]
    assert [t.chunk for t in listed] == [0, 0, 0, 1, 1, 1] and listed[4].weight == pytest.approx(0.81)


def test_t5_tokens_of_another_structured_syntax_are_its_own(flux):
    """A registered syntax with ``structured`` prompts is shown as it parsed the prompt, not as compel would:
    here a syntax whose ``.and()`` parts are the text upper-cased and the text reversed."""
    from sdclip.conditioning.t5 import t5_window
    from sdclip.prompts.parsed import CombinedPrompt, ParsedPrompt, Run, Syntax
    from sdclip.prompts.syntaxes import register_syntax, unregister_syntax

    def structured(text):
        return CombinedPrompt((ParsedPrompt((Run(text.upper()),)), ParsedPrompt((Run(text[::-1]),))), (1.0, 1.0))

    register_syntax(Syntax("upper-and-reversed", lambda text: structured(text).parts[0], weighting="comfy",
                           structured=structured))
    try:
        cond, _ = flux
        out = cond.encode("a cat++", syntax="upper-and-reversed", max_sequence_length=LENGTH)
    finally:
        unregister_syntax("upper-and-reversed")
    expected = [t5_window([(text, 1.0)], cond.t5.tokenizer, LENGTH) for text in ("A CAT++", "++tac a")]
    assert out.t5_tokens[0].ids == expected[0].ids + expected[1].ids
    assert out.t5_ids[0].tolist() == list(expected[0].ids + expected[1].ids)
