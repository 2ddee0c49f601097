"""Textual inversion on the CLIP parts of SD3 and Flux, against diffusers' encode_prompt.

References: Flux inherits diffusers' ``TextualInversionLoaderMixin``, so its reference is diffusers'
``load_textual_inversion`` on a copy of the pipeline's CLIP-L. ``StableDiffusion3Pipeline`` does not (diffusers
0.42), so its reference adds the tokens to copies of the tokenizers and the rows to copies of the embedding tables
by hand and expands a multi-vector name in the prompt text as diffusers' ``maybe_convert_prompt`` would; T5 reads
the prompt as written (it never gets the embedding). Tolerance: 1e-5 in fp32.
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

from sdclip import EmbeddingError, TextConditioner
from sdclip.inspection import tokens
from sdclip.testing import TINY_TEXT, TINY_TEXT_2

TOL = 1e-5
SD3_NAMES = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
CLIP_L, BIG_G = TINY_TEXT["hidden_size"], TINY_TEXT_2["hidden_size"]


def vectors(n: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, width, generator=generator) * 0.02


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``sparkle``: an SDXL / SD3 file (clip_l + clip_g, 2 vectors); ``glint``: a one-part A1111 file (2 vectors)."""
    folder = tmp_path_factory.mktemp("embeddings")
    parts = {"clip_l": vectors(2, CLIP_L, 1), "clip_g": vectors(2, BIG_G, 2), "emb_params": vectors(2, CLIP_L, 3)}
    save_file({"clip_l": parts["clip_l"], "clip_g": parts["clip_g"]}, str(folder / "sparkle.safetensors"))
    save_file({"emb_params": parts["emb_params"]}, str(folder / "glint.safetensors"))
    return folder, parts


def extended(model, tokenizer, names: list[str], rows: torch.Tensor):
    """Copies of ``model`` / ``tokenizer`` with ``names`` added and their embedding rows set to ``rows``, by hand."""
    model, tokenizer = copy.deepcopy(model), copy.deepcopy(tokenizer)
    tokenizer.add_tokens(names)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(names)] = rows
    return model, tokenizer


def sd3_reference(pipe, parts: dict, *, bigg: bool):
    """An SD3 pipeline sharing ``pipe``'s modules but CLIP-L (and bigG when ``bigg``) extended with 'sparkle'."""
    from diffusers import StableDiffusion3Pipeline

    names = ["sparkle", "sparkle_1"]
    text_encoder, tokenizer = extended(pipe.text_encoder, pipe.tokenizer, names, parts[0])
    components = {**pipe.components, "text_encoder": text_encoder, "tokenizer": tokenizer}
    if bigg:
        components["text_encoder_2"], components["tokenizer_2"] = extended(
            pipe.text_encoder_2, pipe.tokenizer_2, names, parts[1])
    return StableDiffusion3Pipeline(**components)


def assert_sd3_equal(out, expected) -> None:
    for name, reference in zip(SD3_NAMES, expected, strict=True):
        actual = getattr(out, name)
        assert actual.shape == reference.shape, name
        assert (actual - reference).abs().max().item() < TOL, name


SOURCES = ["from_pipeline", pytest.param("folder", marks=pytest.mark.slow)]


@pytest.mark.parametrize("source", SOURCES)
def test_sd3_clip_l_and_clip_g_file_equals_the_extended_encoders(source, sd3_pipe, sd3_pipeline_folder, files):
    folder, parts = files
    reference = sd3_reference(sd3_pipe, [parts["clip_l"], parts["clip_g"]], bigg=True)
    with torch.inference_mode():  # both CLIP texts expanded as maybe_convert_prompt would; T5 reads the text as is
        expected = reference.encode_prompt(
            ["a sparkle sparkle_1 cat", "a dog"], None, ["a sparkle cat", "a dog"], device="cpu",
            negative_prompt=["sparkle sparkle_1", ""], negative_prompt_3=["sparkle", ""], max_sequence_length=32)
    def vocabulary():
        tables = [encoder.get_input_embeddings().num_embeddings for encoder in (sd3_pipe.text_encoder, sd3_pipe.text_encoder_2)]
        return len(sd3_pipe.tokenizer), len(sd3_pipe.tokenizer_2), *tables

    before = vocabulary()
    cond = (TextConditioner.from_pipeline(sd3_pipe) if source == "from_pipeline"
            else TextConditioner.from_pretrained(sd3_pipeline_folder, device="cpu"))
    assert cond.load_textual_inversion(folder / "sparkle.safetensors") == ["sparkle", "sparkle_1"]
    assert_sd3_equal(cond.encode(["a sparkle cat", "a dog"], ["sparkle", ""], max_sequence_length=32), expected)
    assert vocabulary() == before  # the user's pipeline is left alone


def test_sd3_one_part_file_goes_to_clip_l_alone(sd3_pipe, files):
    folder, parts = files
    reference = sd3_reference(sd3_pipe, [parts["emb_params"]], bigg=False)
    cond = TextConditioner.from_pipeline(sd3_pipe)
    assert cond.load_textual_inversion(folder / "glint.safetensors", token="sparkle") == ["sparkle", "sparkle_1"]
    with torch.inference_mode():
        expected = reference.encode_prompt("a sparkle sparkle_1 cat", "a sparkle cat", "a sparkle cat", device="cpu",
                                           negative_prompt="blurry", max_sequence_length=16)
    assert_sd3_equal(cond.encode("a sparkle cat", "blurry", max_sequence_length=16), expected)
    assert len(cond.encoders[1].tokenizer) == len(sd3_pipe.tokenizer_2)  # bigG untouched


@pytest.mark.parametrize("file", ["glint", "sparkle"])
def test_flux_loads_into_clip_l_as_diffusers_load_textual_inversion(flux_pipe, files, file):
    from diffusers import FluxPipeline

    folder, parts = files
    reference = FluxPipeline(**{**flux_pipe.components, "text_encoder": copy.deepcopy(flux_pipe.text_encoder),
                                "tokenizer": copy.deepcopy(flux_pipe.tokenizer)})
    # diffusers refuses a clip_l + clip_g file; for Flux sdclip reads its clip_l part, given here as a tensor
    source = str(folder / "glint.safetensors") if file == "glint" else parts["clip_l"]
    reference.load_textual_inversion(source, token="sparkle")
    prompts = ["a sparkle cat", "sparkle"]
    with torch.inference_mode():
        expected = [reference.encode_prompt(text, device="cpu", max_sequence_length=24)[:2] for text in prompts]
    cond = TextConditioner.from_pipeline(flux_pipe)
    assert cond.load_textual_inversion(folder / f"{file}.safetensors", token="sparkle") == ["sparkle", "sparkle_1"]
    out = cond.encode(prompts[0], prompts[1], max_sequence_length=24)  # a negative: true CFG
    actual = [(out.prompt_embeds, out.pooled_prompt_embeds),
              (out.negative_prompt_embeds, out.negative_pooled_prompt_embeds)]
    for (embeds, pooled), (reference_embeds, reference_pooled) in zip(actual, expected, strict=True):
        assert (embeds - reference_embeds).abs().max().item() < TOL  # T5's: unchanged by the embedding
        assert (pooled - reference_pooled).abs().max().item() < TOL
    assert len(cond.t5.tokenizer) == len(flux_pipe.tokenizer_2)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_comfy_mentions_reach_clip_l_and_are_dropped_where_the_embedding_is_not(family, sd3_pipe, flux_pipe, files):
    # ComfyUI's rule: `embedding:name` is the embedding where it fits (CLIP-L) and ignored elsewhere (bigG, T5)
    folder, parts = files
    if family == "sd3":
        reference = sd3_reference(sd3_pipe, [parts["emb_params"]], bigg=False)
        with torch.inference_mode():
            expected = reference.encode_prompt("a sparkle sparkle_1 cat", "a  cat", "a  cat", device="cpu",
                                               max_sequence_length=16, do_classifier_free_guidance=False)[0::2]
    else:
        from diffusers import FluxPipeline

        reference = FluxPipeline(**{**flux_pipe.components, "text_encoder": copy.deepcopy(flux_pipe.text_encoder),
                                    "tokenizer": copy.deepcopy(flux_pipe.tokenizer)})
        reference.load_textual_inversion(str(folder / "glint.safetensors"), token="sparkle")
        with torch.inference_mode():
            expected = reference.encode_prompt("a sparkle cat", "a  cat", device="cpu", max_sequence_length=16)[:2]
    cond = TextConditioner.from_pipeline(sd3_pipe if family == "sd3" else flux_pipe)
    cond.load_textual_inversion(folder / "glint.safetensors", token="sparkle")
    out = cond.encode("a embedding:sparkle cat", False, syntax="comfy", max_sequence_length=16)
    assert (out.prompt_embeds - expected[0]).abs().max().item() < TOL
    assert (out.pooled_prompt_embeds - expected[1]).abs().max().item() < TOL


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_tokens_show_the_embedding_name(family, sd3_pipe, flux_pipe, files):
    folder, _ = files
    pipe = sd3_pipe if family == "sd3" else flux_pipe
    cond = TextConditioner.from_pipeline(pipe)
    cond.load_textual_inversion(folder / "glint.safetensors")
    listed = tokens("a (glint:1.2) cat", cond, syntax="a1111")
    ids = cond.tokenizer.convert_tokens_to_ids(["glint", "glint_1"])
    assert [(t.text, t.id, t.weight) for t in listed.tokens[2:4]] == [("glint", ids[0], 1.2), ("glint_1", ids[1], 1.2)]
    t5 = pipe.tokenizer_3 if family == "sd3" else pipe.tokenizer_2
    assert [t.id for t in listed.t5_tokens] == t5("a glint cat").input_ids  # T5 reads the name as text


@pytest.mark.parametrize(
    ("family", "tensors", "message"),
    [
        ("sd3", {"emb_params": torch.ones(1, BIG_G)},
         rf"vectors are {BIG_G} wide but the text encoder's token embeddings are {CLIP_L} wide"),
        ("sdxl", {"emb_params": torch.ones(1, CLIP_L)}, r"holds vectors for 1 text encoder\(s\), this model has 2"),
    ],
)
def test_one_part_files_of_the_wrong_width_or_on_sdxl_are_refused(family, tensors, message, sd3_pipe, sdxl_pipe,
                                                                  tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    cond = TextConditioner.from_pipeline(sd3_pipe if family == "sd3" else sdxl_pipe)
    with pytest.raises(EmbeddingError, match=r"^embedding '.*bad.safetensors': " + message):
        cond.load_textual_inversion(path)
