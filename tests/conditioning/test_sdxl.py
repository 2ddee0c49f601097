"""SDXL conditioning: two encoders, pooled pair, force_zeros, clip_skip, pipeline folder and single file.

Every numeric check compares with diffusers' own ``StableDiffusionXLPipeline.encode_prompt`` run on the
same tiny random pipeline (real tokenizer for both encoders), or with the transformers models' hidden
states taken by diffusers' definition.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sdclip import ModelSourceError, PromptError, PromptTypeError, TextConditioner, TruncationWarning
from sdclip.conditioning.conditioner import SDXL_SPEC
from sdclip.testing import (
    TINY_TEXT,
    TINY_TEXT_2,
    save_sdxl_single_file,
    tiny_sdxl_pipeline,
)

ATOL = 1e-5
# in the order encode_prompt returns them
FIELDS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
OPTIONS = dict(device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def pipe(sdxl_pipe):
    """conftest's tiny SDXL pipeline."""
    return sdxl_pipe


@pytest.fixture(scope="module")
def folder(sdxl_pipeline_folder) -> Path:
    """conftest's tiny SDXL pipeline, saved with save_pretrained."""
    return sdxl_pipeline_folder


@pytest.fixture(scope="module")
def single_file(pipe, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("file") / "sdxl.safetensors"
    return save_sdxl_single_file(pipe.text_encoder, pipe.text_encoder_2, path)


@pytest.fixture(scope="module")
def conditioners(pipe, folder, single_file) -> dict[str, TextConditioner]:
    return {
        "pipeline": TextConditioner.from_pipeline(pipe),
        "folder": TextConditioner.from_pretrained(folder, **OPTIONS),
        "single_file": TextConditioner.from_pretrained(single_file, **OPTIONS),
    }


def text_only_folder(folder: Path, target: Path, parts: list[str], **index_changes) -> Path:
    """A pipeline folder with only ``parts`` (symlinked) and an edited ``model_index.json``."""
    target.mkdir()
    index = json.loads((folder / "model_index.json").read_text())
    index.update(index_changes)
    (target / "model_index.json").write_text(json.dumps(index))
    for part in parts:
        os.symlink(folder / part, target / part)
    return target


def reference(pipe, prompt, **kwargs) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        tensors = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=True, **kwargs)
    return dict(zip(FIELDS, tensors, strict=True))


def assert_close(result, expected: dict[str, torch.Tensor], atol: float = ATOL) -> None:
    for name, tensor in expected.items():
        ours = getattr(result, name)
        assert ours.shape == tensor.shape, name
        assert ours.dtype == tensor.dtype, name
        assert (ours - tensor).abs().max().item() < atol, name


CASES = {
    "plain": (["a photo of a cat"], dict(negative_prompt="blurry")),
    "batch_prompt_2_images": (
        ["a cat", "a dog sitting on a red sofa"],
        dict(negative_prompt=["ugly", "bad hands"], prompt_2=["oil painting", "watercolor"],
             negative_prompt_2="low quality", num_images_per_prompt=2),
    ),  # fmt: skip
    "clip_skip_1": (["a cat", "a dog"], dict(negative_prompt="blurry", clip_skip=1, num_images_per_prompt=3)),
    "no_negative": (["a cat"], dict(num_images_per_prompt=2)),
    "empty_negative": (["a cat"], dict(negative_prompt="")),
    "long_prompt": (["a photo of " + "a very fluffy cat, " * 20], dict(negative_prompt="bad")),
}


@pytest.mark.parametrize("source", ["pipeline", "folder", "single_file"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_diffusers_encode_prompt(pipe, conditioners, source, case):
    prompts, kwargs = CASES[case]
    expected = reference(pipe, prompts, **kwargs)
    ours = dict(kwargs)
    if "clip_skip" in ours:  # diffusers ignores clip_skip for the negative prompt
        ours["clip_skip_negative"] = "diffusers"
    with pytest.warns(TruncationWarning) if case == "long_prompt" else contextlib.nullcontext():
        result = conditioners[source].encode(prompts, **ours)
    assert_close(result, expected)
    n, b = kwargs.get("num_images_per_prompt", 1), len(prompts)
    assert result.prompt_embeds.shape == (b * n, 77, TINY_TEXT["hidden_size"] + TINY_TEXT_2["hidden_size"])
    assert result.pooled_prompt_embeds.shape == (b * n, TINY_TEXT_2["projection_dim"])


def test_clip_skip_applies_to_negative_by_default(pipe, conditioners):
    """The negative gets clip_skip too: equal to diffusers encoding the negative text as a prompt."""
    result = conditioners["folder"].encode(["a cat", "a dog"], "blurry", clip_skip=1)
    as_prompt = reference(pipe, ["blurry", "blurry"], clip_skip=1)
    assert (result.negative_prompt_embeds - as_prompt["prompt_embeds"]).abs().max() < ATOL
    assert (result.negative_pooled_prompt_embeds - as_prompt["pooled_prompt_embeds"]).abs().max() < ATOL
    diffusers_way = reference(pipe, ["a cat", "a dog"], negative_prompt="blurry", clip_skip=1)
    assert (result.negative_prompt_embeds - diffusers_way["negative_prompt_embeds"]).abs().max() > 1e-3


def test_hidden_states_by_definition(pipe, conditioners):
    """prompt_embeds = both encoders' hidden_states[-(clip_skip + 2)], no final norm; pooled = bigG text_embeds."""
    result = conditioners["single_file"].encode("a red fox", prompt_2="snow", clip_skip=2)
    with torch.inference_mode():
        first = pipe.text_encoder(pipe.tokenizer("a red fox", padding="max_length", return_tensors="pt").input_ids,
                                  output_hidden_states=True)
        ids_2 = pipe.tokenizer_2("snow", padding="max_length", return_tensors="pt").input_ids
        second = pipe.text_encoder_2(ids_2, output_hidden_states=True)
    expected = torch.cat([first.hidden_states[-4], second.hidden_states[-4]], dim=-1)
    assert (result.prompt_embeds - expected).abs().max() < ATOL
    assert (result.pooled_prompt_embeds - second.text_embeds).abs().max() < ATOL
    assert ids_2[0, -1].item() == 0  # tokenizer_2 pads with "!"


def test_single_file_equals_folder(conditioners):
    kwargs = dict(negative_prompt=["bad", ""], prompt_2="b", clip_skip=1)
    folder = conditioners["folder"].encode(["a cat", "a dog"], **kwargs)
    single = conditioners["single_file"].encode(["a cat", "a dog"], **kwargs)
    for name, tensor in folder.tensors().items():
        assert torch.equal(tensor, getattr(single, name)), name


def test_single_file_config_and_tokenizers(conditioners):
    first, second = conditioners["single_file"].encoders
    assert [type(e.model).__name__ for e in (first, second)] == ["CLIPTextModel", "CLIPTextModelWithProjection"]
    assert (first.model.config.hidden_act, second.model.config.hidden_act) == ("quick_gelu", "gelu")
    assert (first.model.config.num_attention_heads, second.model.config.num_attention_heads) == (2, 3)
    assert second.model.config.projection_dim == TINY_TEXT_2["projection_dim"]
    assert (first.tokenizer.pad_token_id, second.tokenizer.pad_token_id) == (49407, 0)
    assert conditioners["single_file"].specs == [SDXL_SPEC, SDXL_SPEC]


def test_force_zeros_follows_the_folder(pipe, folder, tmp_path):
    on = TextConditioner.from_pretrained(folder, **OPTIONS)
    assert on.force_zeros_for_empty_prompt and on.pipeline_takes_pooled
    zeroed = on.encode("a cat", num_images_per_prompt=2)
    assert not zeroed.negative_prompt_embeds.any() and not zeroed.negative_pooled_prompt_embeds.any()
    assert (zeroed.negative_prompt_ids == -1).all() and zeroed.negative_prompt_ids.shape == (2, 77)
    assert on.encode("a cat", force_zeros=False).negative_prompt_embeds.abs().sum() > 0

    parts = ["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"]
    off_folder = text_only_folder(folder, tmp_path / "off", parts, force_zeros_for_empty_prompt=False)
    off = TextConditioner.from_pretrained(off_folder, **OPTIONS)
    assert not off.force_zeros_for_empty_prompt
    pipe.register_to_config(force_zeros_for_empty_prompt=False)
    try:
        expected = reference(pipe, ["a cat"], num_images_per_prompt=2)
    finally:
        pipe.register_to_config(force_zeros_for_empty_prompt=True)
    assert_close(off.encode("a cat", num_images_per_prompt=2), expected)


def test_negative_prompt_2_alone_is_encoded(conditioners):
    """diffusers zeros the negative when negative_prompt is None even if negative_prompt_2 is given; sdclip uses it."""
    cond = conditioners["folder"]
    result = cond.encode("a cat", negative_prompt_2="blurry")
    explicit = cond.encode("a cat", negative_prompt="", negative_prompt_2="blurry")
    assert torch.equal(result.negative_prompt_embeds, explicit.negative_prompt_embeds)
    assert result.negative_pooled_prompt_embeds.abs().sum() > 0


def test_missing_tokenizer_2_pads_with_exclamation_mark(pipe, folder, tmp_path):
    path = text_only_folder(folder, tmp_path / "no_tok2", ["text_encoder", "text_encoder_2", "tokenizer"])
    cond = TextConditioner.from_pretrained(path, **OPTIONS)
    assert cond.encoders[1].tokenizer.pad_token == "!"
    assert cond.encoders[0].tokenizer.pad_token == "<|endoftext|>"  # the shared shipped tokenizer is untouched
    assert_close(cond.encode("a cat", "bad"), reference(pipe, ["a cat"], negative_prompt="bad"))


def test_refiner_layout(pipe, folder, tmp_path):
    """text_encoder null in model_index.json: the second encoder alone, fed ``prompt`` (as diffusers)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    path = text_only_folder(folder, tmp_path / "refiner", ["text_encoder_2", "tokenizer_2"],
                            text_encoder=[None, None], tokenizer=[None, None], force_zeros_for_empty_prompt=False)
    cond = TextConditioner.from_pretrained(path, **OPTIONS)
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=pipe.vae, text_encoder=None, text_encoder_2=pipe.text_encoder_2, tokenizer=None,
        tokenizer_2=pipe.tokenizer_2, unet=pipe.unet, scheduler=pipe.scheduler,
        force_zeros_for_empty_prompt=False, add_watermarker=False,
    )  # fmt: skip
    for candidate in (cond, TextConditioner.from_pipeline(refiner)):
        assert len(candidate.encoders) == 1 and candidate.pipeline_takes_pooled
        assert_close(candidate.encode(["a cat", "a dog"]), reference(refiner, ["a cat", "a dog"]))


def test_sd1_sources_keep_one_encoder(folder, text_sources):
    for source in (text_sources["pipeline"], text_sources["single_file"]):
        cond = TextConditioner.from_pretrained(source, **OPTIONS)
        assert len(cond.encoders) == 1 and not cond.pipeline_takes_pooled and not cond.force_zeros_for_empty_prompt
        assert "pooled_prompt_embeds" not in cond.encode("a cat").pipeline_kwargs()
    one = TextConditioner.from_pretrained(folder, subfolder="text_encoder", **OPTIONS)
    assert len(one.encoders) == 1 and one.encode("a cat").prompt_embeds.shape == (1, 77, TINY_TEXT["hidden_size"])


def test_pipeline_kwargs_and_cache(pipe):
    cond = TextConditioner.from_pipeline(pipe)
    result = cond.encode(["a cat", "a cat", "a dog"], "blurry")
    assert set(result.pipeline_kwargs()) == set(FIELDS)
    assert len(cond._cache) == 2 * 3  # two encoders × {a cat, a dog, blurry}: repeats encoded once
    cond.encode("a cat", "blurry", prompt_2="a dog", clip_skip_negative="diffusers")
    assert len(cond._cache) == 2 * 3  # same texts, same settings: all from the cache


# -- long prompts, weights, textual inversion ------------------------------------------------------

BOS, EOS, CAT, DOG, BANG = 49406, 49407, 2368, 1929, 0


def chunk(tokens: list[int], pad: int) -> list[int]:
    """BOS, tokens, EOS, padding: one 77-id chunk laid out by hand (pad: EOS for encoder 1, '!' for 2)."""
    return [BOS, *tokens, EOS] + [pad] * (75 - len(tokens))


@pytest.fixture(scope="module")
def models64(pipe):
    import copy

    return [copy.deepcopy(pipe.text_encoder).double(), copy.deepcopy(pipe.text_encoder_2).double()]


def hidden64(model, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """((k, 77, H) penultimate hidden states without the final norm, pooled of chunk 0), in float64."""
    with torch.no_grad():
        out = model(torch.tensor(ids), output_hidden_states=True)
    return out.hidden_states[-2], getattr(out, "text_embeds", None)


def a1111_reference(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis on each chunk: scale by weight, then restore the chunk's mean."""
    scaled = z * w[..., None]
    return scaled * (z.mean(dim=(1, 2), keepdim=True) / scaled.mean(dim=(1, 2), keepdim=True))


def test_long_prompt_chunks_each_encoder_and_pads_the_shorter(conditioners, models64):
    """80 tokens for encoder 1 (two chunks), 1 for encoder 2: encoder 2 is padded with its own empty chunk."""
    ids_1 = [chunk([CAT] * 75, EOS), chunk([CAT] * 5, EOS)]
    ids_2 = [chunk([DOG], BANG), chunk([], BANG)]
    (hidden_1, _), (hidden_2, pooled_2) = hidden64(models64[0], ids_1), hidden64(models64[1], ids_2)
    expected = torch.cat([hidden_1.flatten(0, 1), hidden_2.flatten(0, 1)], dim=-1)
    for source in ("folder", "single_file"):
        result = conditioners[source].encode("cat " * 80, prompt_2="dog", truncate=False, num_images_per_prompt=2)
        assert result.prompt_embeds.shape == (2, 154, 320)
        assert result.prompt_ids[0].tolist() == ids_1[0] + ids_1[1]
        assert (result.prompt_embeds[1].double() - expected).abs().max() < 1e-4
        assert (result.pooled_prompt_embeds[0].double() - pooled_2[0]).abs().max() < 1e-4  # first chunk's
        assert result.negative_prompt_embeds.shape == (2, 154, 320) and not result.negative_prompt_embeds.any()


def test_a1111_weights_apply_to_each_encoder(conditioners, models64):
    ids_1, ids_2 = [chunk([320, CAT, DOG], EOS)], [chunk([320, CAT, DOG], BANG)]  # "a cat dog"
    weights = torch.ones(1, 77, dtype=torch.float64)
    weights[0, 2] = 1.5
    (hidden_1, _), (hidden_2, pooled_2) = hidden64(models64[0], ids_1), hidden64(models64[1], ids_2)
    expected = torch.cat([a1111_reference(hidden_1, weights)[0], a1111_reference(hidden_2, weights)[0]], dim=-1)
    result = conditioners["folder"].encode("a (cat:1.5) dog", "blurry", syntax="a1111")
    assert (result.prompt_embeds[0].double() - expected).abs().max() < 1e-4
    assert (result.pooled_prompt_embeds[0].double() - pooled_2[0]).abs().max() < 1e-4  # pooled is not weighted


def test_textual_inversion_with_clip_l_and_clip_g_equals_diffusers(folder, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    clip_l, clip_g = torch.randn(2, TINY_TEXT["hidden_size"]) * 0.02, torch.randn(2, TINY_TEXT_2["hidden_size"]) * 0.02
    save_file({"clip_l": clip_l, "clip_g": clip_g}, str(tmp_path / "sparkle.safetensors"))
    reference_pipe = tiny_sdxl_pipeline()  # diffusers' way: one call per encoder, it changes the pipeline
    reference_pipe.load_textual_inversion(clip_l, token="sparkle", text_encoder=reference_pipe.text_encoder,
                                          tokenizer=reference_pipe.tokenizer)
    reference_pipe.load_textual_inversion(clip_g, token="sparkle", text_encoder=reference_pipe.text_encoder_2,
                                          tokenizer=reference_pipe.tokenizer_2)
    expected = reference(reference_pipe, ["a sparkle cat", "a dog"], negative_prompt=["sparkle", ""])

    shared_pipe = tiny_sdxl_pipeline()
    vocabulary = len(shared_pipe.tokenizer_2)
    for cond in (TextConditioner.from_pretrained(folder, **OPTIONS), TextConditioner.from_pipeline(shared_pipe)):
        assert cond.load_textual_inversion(tmp_path / "sparkle.safetensors") == ["sparkle", "sparkle_1"]
        assert_close(cond.encode(["a sparkle cat", "a dog"], ["sparkle", ""]), expected)
    assert len(shared_pipe.tokenizer_2) == vocabulary  # the user's pipeline is left alone


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("negative", ["ugly, blurry", None])
def test_same_images_as_the_pipeline(pipe, folder, negative):
    def run(**kwargs):
        generator = torch.Generator().manual_seed(0)
        return pipe(**kwargs, num_inference_steps=2, generator=generator, output_type="np").images

    expected = run(prompt=["a cat", "a dog"], negative_prompt=negative and [negative] * 2, num_images_per_prompt=2)
    # Fresh conditioners: a text cached from a batch of another size can differ in the last float32 bit
    # (CPU matmul kernels depend on the batch size), and bit-identical images need bit-identical embeddings.
    for cond in (TextConditioner.from_pipeline(pipe), TextConditioner.from_pretrained(folder, **OPTIONS)):
        result = cond.encode(["a cat", "a dog"], negative, num_images_per_prompt=2)
        np.testing.assert_array_equal(run(**result.pipeline_kwargs()), expected)


# -- errors ----------------------------------------------------------------------------------------


def test_error_missing_text_encoder_2(folder, tmp_path):
    path = text_only_folder(folder, tmp_path / "broken", ["text_encoder", "tokenizer", "tokenizer_2"])
    message = (
        r"model '.*broken': SDXL pipeline folder has no text_encoder_2/config\.json; "
        r"SDXL conditions on text_encoder and text_encoder_2: copy the complete folder \(with tokenizer_2/\), "
        r"or pass subfolder='text_encoder' to load the first encoder alone$"
    )
    with pytest.raises(ModelSourceError, match=message):
        TextConditioner.from_pretrained(path, **OPTIONS)


def test_a_t5_text_encoder_2_is_flux_and_needs_its_tokenizer(folder, tmp_path):
    path = text_only_folder(folder, tmp_path / "flux", ["text_encoder", "tokenizer"])
    (path / "text_encoder_2").mkdir()
    (path / "text_encoder_2" / "config.json").write_text(json.dumps({"architectures": ["T5EncoderModel"]}))
    with pytest.raises(ModelSourceError, match=r"flux/tokenizer_2' holds no tokenizer.json or spiece.model; pass "
                       r"t5_tokenizer= a folder with tokenizer.json or spiece.model"):
        TextConditioner.from_pretrained(path, **OPTIONS)


def test_a_third_text_encoder_is_sd3_and_must_be_there(folder, tmp_path):
    path = text_only_folder(folder, tmp_path / "sd3", ["text_encoder", "text_encoder_2"],
                            text_encoder_3=["transformers", "T5EncoderModel"])
    with pytest.raises(ModelSourceError, match=r"Stable Diffusion 3 pipeline folder has no text_encoder_3/config\.json; "
                       r"copy the complete folder, or set text_encoder_3 to null in model_index.json"):
        TextConditioner.from_pretrained(path, **OPTIONS)


@pytest.mark.parametrize(
    ("dropped", "message"),
    [
        ("conditioner.embedders.0.", r"SDXL checkpoint without its first text encoder \(no keys under"),
        ("conditioner.embedders.1.model.token_embedding", r"SDXL checkpoint's second text encoder is incomplete"),
    ],
)
def test_error_single_file_incomplete(pipe, tmp_path, dropped, message):
    from safetensors.torch import load_file, save_file

    full = load_file(save_sdxl_single_file(pipe.text_encoder, pipe.text_encoder_2, tmp_path / "full.safetensors"))
    save_file({k: v for k, v in full.items() if not k.startswith(dropped)}, tmp_path / "part.safetensors")
    with pytest.raises(ModelSourceError, match=message):
        TextConditioner.from_pretrained(tmp_path / "part.safetensors", **OPTIONS)


def test_error_from_pipeline_non_clip():
    fake = SimpleNamespace(text_encoder=torch.nn.Linear(2, 2), tokenizer=None)
    with pytest.raises(ModelSourceError, match=r"text_encoder is Linear, not a CLIP text encoder"):
        TextConditioner.from_pipeline(fake)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(prompt_2=["a", "b", "c"]), PromptError,
         r"prompt_2: has 3 items but prompt has 2; pass one prompt_2 per prompt, or a single string for all"),
        (dict(negative_prompt_2=[3, 4]), PromptTypeError, r"negative_prompt_2\[0\]: expected a string, got int 3"),
        (dict(clip_skip=4), PromptError,
         r"clip_skip: 4 skips more layers than the text encoder has; expected at most 3"),
        (dict(clip_skip_negative="a1"), PromptError, r"clip_skip_negative: expected 'same' or 'diffusers', got 'a1'"),
    ],
)
def test_encode_option_errors(conditioners, kwargs, error, message):
    with pytest.raises(error, match=message):
        conditioners["folder"].encode(["a cat", "a dog"], **kwargs)


def test_error_prompt_2_on_one_encoder(folder):
    one = TextConditioner.from_pretrained(folder, subfolder="text_encoder", **OPTIONS)
    with pytest.raises(PromptError, match=r"prompt_2: this model has one text encoder"):
        one.encode("a cat", prompt_2="a dog")
