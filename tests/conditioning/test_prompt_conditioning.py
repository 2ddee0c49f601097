"""encode() with A1111/ComfyUI syntax, long prompts, weighting and textual inversion, against float64
references computed here from hand-built token ids, and against diffusers' own textual inversion."""

from __future__ import annotations

import warnings

import pytest
import torch

from sdclip import EmbeddingError, PickleRefusedError, PromptError, TextConditioner
from sdclip.models.loading import LoadedTextEncoder

BOS, EOS, CAT, DOG, COMMA = 49406, 49407, 2368, 1929, 267
TOL = 1e-4  # fp32 model against a float64 reference


def chunk(tokens: list[int]) -> list[int]:
    """BOS, tokens, EOS, EOS padding: one 77-id chunk laid out by hand."""
    return [BOS, *tokens, EOS] + [EOS] * (75 - len(tokens))


@pytest.fixture(scope="module")
def model64(sd_pipe):
    import copy

    return copy.deepcopy(sd_pipe.text_encoder).double()


def hidden64(model, ids: list[list[int]], clip_skip: int = 0) -> torch.Tensor:
    """(k, 77, H) float64 hidden states per diffusers' definition, for hand-built chunks."""
    with torch.no_grad():
        out = model(torch.tensor(ids), output_hidden_states=True)
        return model.final_layer_norm(out.hidden_states[-(clip_skip + 1)])


def a1111_reference(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis on each chunk: scale by weight, then restore the chunk's mean."""
    out = []
    for chunk_z, chunk_w in zip(z, w):
        original_mean = chunk_z.mean()
        scaled = chunk_z * chunk_w[:, None]
        out.append(scaled * (original_mean / scaled.mean()))
    return torch.stack(out)


def test_a1111_long_weighted_prompt_against_float64_reference(conditioner, model64):
    prompt = "(cat:1.5) " + "dog " * 80 + "[dog]"  # 82 tokens: chunk 0 = cat + 74 dogs, chunk 1 = 6 dogs + [dog]
    ids = [chunk([CAT] + [DOG] * 74), chunk([DOG] * 7)]
    weights = torch.ones(2, 77, dtype=torch.float64)
    weights[0, 1] = 1.5
    weights[1, 7] = 1 / 1.1
    expected = a1111_reference(hidden64(model64, ids), weights).flatten(0, 1)
    result = conditioner.encode(prompt, syntax="a1111", truncate=False)
    assert result.prompt_ids[0].tolist() == ids[0] + ids[1]
    assert result.prompt_embeds.shape == (1, 154, 128)
    assert (result.prompt_embeds[0].double() - expected).abs().max() < TOL
    pooled = hidden64(model64, ids[:1])[0, 76]  # pooled from the first chunk's EOS (all padding is EOS)
    first_eos = hidden64(model64, ids[:1])[0, ids[0].index(EOS)]
    assert torch.allclose(pooled, first_eos)
    assert (result.pooled_prompt_embeds[0].double() - first_eos).abs().max() < TOL


def test_comfy_weighting_against_float64_reference(conditioner, model64):
    result = conditioner.encode("(cat:1.5) dog", syntax="comfy")
    ids = [chunk([CAT, DOG])]
    z, empty = hidden64(model64, ids)[0], hidden64(model64, [chunk([])])[0]
    w = torch.ones(77, dtype=torch.float64)
    w[1] = 1.5
    expected = (z - empty) * w[:, None] + empty
    assert (result.prompt_embeds[0].double() - expected).abs().max() < TOL
    assert torch.equal(result.prompt_embeds[0, 2:], conditioner.encode("cat dog").prompt_embeds[0, 2:])


def test_multiply_weighting_and_brackets_as_text_in_comfy(conditioner, model64):
    result = conditioner.encode("(cat:0.5) dog", syntax="a1111", weighting="multiply")
    z = hidden64(model64, [chunk([CAT, DOG])])[0]
    z[1] *= 0.5
    assert (result.prompt_embeds[0].double() - z).abs().max() < TOL
    literal = conditioner.encode("[cat]", syntax="comfy").prompt_ids[0, :5].tolist()
    assert literal == [BOS, 314, CAT, 316, EOS]  # "[" cat "]" stay text in ComfyUI


def test_break_and_comma_backtrack_chunks(conditioner):
    two = conditioner.encode("cat BREAK dog", syntax="a1111", truncate=False).prompt_ids[0].tolist()
    assert two == chunk([CAT]) + chunk([DOG])
    # 70 dogs, a comma, 10 cats: the chunk fills at 75, the words after the comma (within 20) move on
    prompt = "dog " * 70 + ", " + "cat " * 10
    ids = conditioner.encode(prompt, syntax="a1111", truncate=False).prompt_ids[0].tolist()
    assert ids == chunk([DOG] * 70 + [COMMA]) + chunk([CAT] * 10)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_clip_skip_applies_to_every_chunk(conditioner, model64, clip_skip):
    ids = [chunk([CAT] * 75), chunk([DOG] * 5)]
    result = conditioner.encode("cat " * 75 + "dog " * 5, syntax="a1111", truncate=False, clip_skip=clip_skip)
    expected = hidden64(model64, ids, clip_skip).flatten(0, 1)
    assert (result.prompt_embeds[0].double() - expected).abs().max() < TOL


def test_shapes_always_fit_padding_with_the_empty_chunk(conditioner, model64):
    long_prompt = "cat " * 300  # 4 chunks
    result = conditioner.encode([long_prompt, "a dog"], "ugly", truncate=False, num_images_per_prompt=2)
    assert result.prompt_embeds.shape == result.negative_prompt_embeds.shape == (4, 4 * 77, 128)
    empty = hidden64(model64, [chunk([])])[0]
    padded = result.negative_prompt_embeds[0].reshape(4, 77, 128)
    for index in (1, 2, 3):  # the one-word negative is one chunk, then three empty chunks
        assert (padded[index].double() - empty).abs().max() < TOL
    assert result.prompt_ids[2].tolist() == chunk([320, DOG]) + chunk([]) * 3


@pytest.mark.slow
def test_long_prompt_against_short_negative_runs_through_the_pipeline(sd_pipe, conditioner):
    result = conditioner.encode(["cat " * 300, "a dog"], "ugly", syntax="a1111", truncate=False)
    generator = torch.Generator("cpu").manual_seed(0)
    images = sd_pipe(**result.pipeline_kwargs(), num_inference_steps=2, height=32, width=32,
                     generator=generator, output_type="np").images
    assert images.shape == (2, 32, 32, 3) and torch.isfinite(torch.from_numpy(images)).all()


def test_default_options_are_plain_and_truncated(conditioner):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = conditioner.encode("(cat:1.5) " + "dog " * 90)
    assert plain.prompt_embeds.shape == (1, 77, 128)
    assert plain.prompt_ids[0, 1:4].tolist() == [263, CAT, 281]  # "(" cat ":1.5)..." read as text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"syntax": "markdown"}, r"syntax: expected one of 'plain', 'a1111', 'comfy', 'compel', got 'markdown'"),
        ({"weighting": "heavy"}, r"weighting: expected None or one of 'a1111', 'comfy', 'multiply', got 'heavy'"),
        ({"truncate": "no"}, r"truncate: expected True or False, got 'no'"),
    ],
)
def test_bad_prompt_options(conditioner, kwargs, message):
    with pytest.raises(PromptError, match=message):
        conditioner.encode("a cat", **kwargs)


def test_parse_lists_chunks_positions_and_weights(conditioner):
    tokens = conditioner.parse("a (cat:1.5) BREAK dog", syntax="a1111", truncate=False)
    assert [(t.text, t.chunk, t.position, t.weight) for t in tokens] == [
        ("<|startoftext|>", 0, 0, 1.0), ("a</w>", 0, 1, 1.0), ("cat</w>", 0, 2, 1.5), ("<|endoftext|>", 0, 3, 1.0),
        ("<|startoftext|>", 1, 0, 1.0), ("dog</w>", 1, 1, 1.0), ("<|endoftext|>", 1, 2, 1.0),
    ]  # fmt: skip


# -- textual inversion ----------------------------------------------------------------------------


@pytest.fixture()
def fresh_pipe():
    """A pipeline with the fixture's weights that diffusers' load_textual_inversion may mutate."""
    from sdclip.testing import tiny_sd_pipeline

    return tiny_sd_pipeline()


def save_learned_embeds(path, token: str, vectors: torch.Tensor):
    from safetensors.torch import save_file

    save_file({token: vectors.contiguous()}, str(path))
    return path


@pytest.mark.parametrize("n_vectors", [1, 3])
def test_textual_inversion_equals_diffusers(fresh_pipe, pipeline_folder, tmp_path, n_vectors):
    torch.manual_seed(1)
    vectors = torch.randn(n_vectors, 128) * 0.02
    path = save_learned_embeds(tmp_path / "learned_embeds.safetensors", "<sparkle>", vectors.squeeze(0))
    fresh_pipe.load_textual_inversion(str(path))
    prompts = ["a <sparkle> cat", "plain dog"]
    with torch.no_grad():
        expected, expected_negative = fresh_pipe.encode_prompt(prompts, "cpu", 1, True, ["<sparkle>", ""])
    cond = TextConditioner.from_pretrained(pipeline_folder, device="cpu")
    added = cond.load_textual_inversion(path)
    assert added == ["<sparkle>"] + [f"<sparkle>_{i}" for i in range(1, n_vectors)]
    result = cond.encode(prompts, ["<sparkle>", ""])
    assert (result.prompt_embeds - expected).abs().max() < 1e-5
    assert (result.negative_prompt_embeds - expected_negative).abs().max() < 1e-5


def test_a1111_embeddings_pt_needs_allow_pickle_and_safetensors_does_not(sd_pipe, tmp_path):
    from safetensors.torch import save_file

    vectors = torch.randn(2, 128)
    torch.save({"string_to_param": {"*": vectors}, "name": "mystyle42"}, tmp_path / "mystyle42.pt")
    save_file({"emb_params": vectors}, str(tmp_path / "mystyle43.safetensors"))
    cond = TextConditioner([LoadedTextEncoder(sd_pipe.text_encoder, sd_pipe.tokenizer, None)])
    with pytest.raises(PickleRefusedError, match=r"mystyle42.pt': pickle files"):
        cond.load_textual_inversion(tmp_path / "mystyle42.pt")
    assert cond.load_textual_inversion(tmp_path / "mystyle42.pt", allow_pickle=True) == ["mystyle42", "mystyle42_1"]
    assert cond.load_textual_inversion(tmp_path / "mystyle43.safetensors", token="<other>") == ["<other>", "<other>_1"]
    table = cond.text_encoder.get_input_embeddings().weight
    ids = cond.tokenizer.convert_tokens_to_ids(["mystyle42", "mystyle42_1", "<other>", "<other>_1"])
    assert torch.equal(table[ids], torch.cat([vectors, vectors]))
    a1111 = cond.encode("a (mystyle42:1.2) painting", syntax="a1111")
    comfy = cond.encode("a embedding:mystyle42 painting", syntax="comfy")
    assert a1111.prompt_ids[0, 1:5].tolist() == comfy.prompt_ids[0, 1:5].tolist() == [320, *ids[:2], 3086]


def test_textual_inversion_never_changes_a_model_the_user_passed(sd_pipe, tmp_path):
    before = (len(sd_pipe.tokenizer), sd_pipe.text_encoder.get_input_embeddings().weight.shape[0])
    cond = TextConditioner([LoadedTextEncoder(sd_pipe.text_encoder, sd_pipe.tokenizer, None)])
    cond.load_textual_inversion(save_learned_embeds(tmp_path / "e.safetensors", "<x>", torch.randn(128)))
    after = (len(sd_pipe.tokenizer), sd_pipe.text_encoder.get_input_embeddings().weight.shape[0])
    assert before == after == (49408, 49408)
    assert cond.text_encoder is not sd_pipe.text_encoder and len(cond.tokenizer) == 49409


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"<x>": torch.randn(2, 64)}, r"vectors are 64 wide but the text encoder's token embeddings are 128 wide"),
        ({"a": torch.randn(128), "b": torch.randn(128)}, r"unknown layout \(keys \['a', 'b'\]\)"),
        ({"clip_l": torch.randn(1, 128), "clip_g": torch.randn(1, 192)}, r"holds vectors for 2 text encoder\(s\), this model has 1"),
        ({"cat</w>": torch.randn(128)}, r"token 'cat</w>' is already in the vocabulary; pass token="),
    ],
)
def test_bad_embeddings_are_clear_errors(conditioner, tmp_path, tensors, message):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(EmbeddingError, match=message):
        conditioner.load_textual_inversion(path)
