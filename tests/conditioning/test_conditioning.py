"""TextConditioner against diffusers' own encode_prompt and the transformers model, on the same weights."""

from __future__ import annotations

import warnings

import pytest
import torch

from sdclip import Conditioning, PromptError, PromptTypeError, TextConditioner, TruncationWarning

TOL = 1e-5  # fp32 max abs difference the issue allows; sdclip is in fact bit-identical here
PROMPTS = [
    "a photo of a cat",
    "",
    "😀🐱 café, naïve façade — ¿qué? 東京",
    "((masterpiece)), [best:0.5] quality!!! ;-) #1 @home $$$ ... ,,, ---",
    "a very long prompt " + "with many many words " * 30,
]
NEGATIVES = ["blurry", "", "ugly, bad anatomy", "", "lowres " * 90]


def diffusers_encode(pipe, prompts, negatives, n, clip_skip=None):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipe.encode_prompt(prompts, "cpu", n, True, negatives, clip_skip=clip_skip)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("n", [1, 3])
def test_prompt_embeds_equal_diffusers_encode_prompt(sd_pipe, conditioner, n):
    expected, expected_negative = diffusers_encode(sd_pipe, PROMPTS, NEGATIVES, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        result = conditioner.encode(PROMPTS, NEGATIVES, num_images_per_prompt=n)
    assert result.prompt_embeds.shape == (len(PROMPTS) * n, 77, 128)
    assert max_diff(result.prompt_embeds, expected) < TOL
    assert max_diff(result.negative_prompt_embeds, expected_negative) < TOL
    assert result.prompt_embeds.dtype == expected.dtype


def test_negative_prompt_none_is_the_empty_prompt_as_in_diffusers(sd_pipe, conditioner):
    expected, expected_negative = diffusers_encode(sd_pipe, ["a cat", "a dog"], None, 2)
    result = conditioner.encode(["a cat", "a dog"], num_images_per_prompt=2)
    assert max_diff(result.prompt_embeds, expected) < TOL
    assert max_diff(result.negative_prompt_embeds, expected_negative) < TOL


def reference_clip_skip(text_encoder, tokenizer, texts, clip_skip):
    """diffusers' definition: hidden_states[-(clip_skip + 1)] through the final layer norm."""
    ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = text_encoder(ids, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
        return text_encoder.final_layer_norm(hidden)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_clip_skip_applies_to_prompt_and_negative(sd_pipe, conditioner, clip_skip):
    prompts, negatives = ["a photo of a cat", "portrait, 8k"], ["blurry", ""]
    result = conditioner.encode(prompts, negatives, clip_skip=clip_skip)
    expected = reference_clip_skip(sd_pipe.text_encoder, sd_pipe.tokenizer, prompts, clip_skip)
    expected_negative = reference_clip_skip(sd_pipe.text_encoder, sd_pipe.tokenizer, negatives, clip_skip)
    assert max_diff(result.prompt_embeds, expected) < TOL
    assert max_diff(result.negative_prompt_embeds, expected_negative) < TOL
    # clip skip changes the per-token states, not the pooled output
    plain = conditioner.encode(prompts, negatives)
    assert max_diff(plain.prompt_embeds, result.prompt_embeds) > 1e-3
    assert max_diff(plain.pooled_prompt_embeds, result.pooled_prompt_embeds) == 0


def test_clip_skip_works_where_diffusers_crashes_on_transformers_5(sd_pipe, conditioner):
    """diffusers' clip_skip path reads text_encoder.text_model, which transformers 5 removed."""
    ours = conditioner.encode("a cat", clip_skip=1).prompt_embeds
    try:
        expected, _ = diffusers_encode(sd_pipe, ["a cat"], None, 1, clip_skip=1)
    except AttributeError as error:  # the bug as it stands: compare with its definition instead
        assert "text_model" in str(error)
        expected = reference_clip_skip(sd_pipe.text_encoder, sd_pipe.tokenizer, ["a cat"], 1)
    assert max_diff(ours, expected) < TOL


def test_pooled_is_the_transformers_pooler_output(sd_pipe, conditioner):
    with pytest.warns(TruncationWarning, match="😀"):
        result = conditioner.encode(["a photo of a cat", "", "😀 " * 100], ["x", "y", "z"])
    with torch.no_grad():
        expected = sd_pipe.text_encoder(result.prompt_ids).pooler_output
        expected_negative = sd_pipe.text_encoder(result.negative_prompt_ids).pooler_output
    assert max_diff(result.pooled_prompt_embeds, expected) < TOL
    assert max_diff(result.negative_pooled_prompt_embeds, expected_negative) < TOL


def test_pooled_is_projected_for_a_clip_model(clip_model_folder):
    from transformers import CLIPModel

    cond = TextConditioner.from_pretrained(clip_model_folder, device="cpu")
    reference = CLIPModel.from_pretrained(clip_model_folder).eval()
    result = cond.encode(["a diagram", "a dog", "a cat"])
    with torch.no_grad():
        expected = reference.get_text_features(result.prompt_ids).pooler_output
        hidden = reference.text_model(result.prompt_ids).last_hidden_state
    assert result.pooled_prompt_embeds.shape == (3, 96)
    assert max_diff(result.pooled_prompt_embeds, expected) < TOL
    assert max_diff(result.prompt_embeds, hidden) < TOL


def test_token_ids_are_diffusers_tokens(sd_pipe, conditioner):
    result = conditioner.encode(PROMPTS[:3])
    expected = sd_pipe.tokenizer(PROMPTS[:3], padding="max_length", max_length=77, truncation=True,
                                 return_tensors="pt").input_ids
    assert torch.equal(result.prompt_ids, expected)


def test_long_prompt_is_truncated_keeping_eos_with_a_warning_naming_the_dropped_text(conditioner):
    prompt = "cat " * 75 + "zebra giraffe"
    with pytest.warns(TruncationWarning, match=r"encoded without: 'zebra giraffe'"):
        result = conditioner.encode(prompt)
    ids = result.prompt_ids[0].tolist()
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407 and ids[-2] == 2368


def test_pipeline_kwargs_for_sd1_hold_prompt_and_negative_embeds(conditioner):
    kwargs = conditioner.encode("a cat").pipeline_kwargs()
    assert set(kwargs) == {"prompt_embeds", "negative_prompt_embeds"}


@pytest.mark.slow
def test_pipeline_images_identical_with_sdclip_conditioning(sd_pipe, conditioner):
    def run(**kwargs):
        generator = torch.Generator("cpu").manual_seed(0)
        return sd_pipe(**kwargs, num_inference_steps=2, height=32, width=32, generator=generator,
                       output_type="np").images

    prompts, negatives = ["a red fox in the snow", "😀 emoji city"], ["blurry", "lowres"]
    expected = run(prompt=prompts, negative_prompt=negatives, num_images_per_prompt=2)
    ours = run(**conditioner.encode(prompts, negatives, num_images_per_prompt=2).pipeline_kwargs())
    assert ours.shape == expected.shape == (4, 32, 32, 3)
    assert abs(ours - expected).max() == 0


class CountingModel(torch.nn.Module):
    """Wraps a text encoder and counts the prompts it is asked to encode."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, ids, **kwargs):
        self.rows += ids.shape[0]
        return self.model(ids, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


def test_repeated_prompts_and_shared_negative_are_encoded_once(sd_pipe):
    from sdclip.models.loading import LoadedTextEncoder

    counting = CountingModel(sd_pipe.text_encoder)
    cond = TextConditioner([LoadedTextEncoder(counting, sd_pipe.tokenizer, None)])
    first = cond.encode(["a cat", "a dog", "a cat"], "blurry")
    assert counting.rows == 3  # a cat, a dog, blurry
    second = cond.encode(["a dog", "a bird"], "blurry")
    assert counting.rows == 4  # only "a bird" is new
    assert torch.equal(first.prompt_embeds[1], second.prompt_embeds[0])
    cond.encode("a dog", clip_skip=1)  # other settings are another cache entry
    assert counting.rows == 6


def test_cache_can_be_disabled_and_is_bounded(sd_pipe):
    from sdclip.models.loading import LoadedTextEncoder

    counting = CountingModel(sd_pipe.text_encoder)
    cond = TextConditioner([LoadedTextEncoder(counting, sd_pipe.tokenizer, None)], cache_size=0)
    cond.encode("a cat", "a cat")
    cond.encode("a cat", "a cat")
    assert counting.rows == 2  # unique texts are still encoded once per call
    bounded = TextConditioner([LoadedTextEncoder(sd_pipe.text_encoder, sd_pipe.tokenizer, None)], cache_size=2)
    bounded.encode(["a", "b", "c", "d"])
    assert len(bounded._cache) == 2


def test_conditioning_tensors_names_every_tensor(conditioner):
    result = conditioner.encode("a cat")
    assert isinstance(result, Conditioning)
    assert set(result.tensors()) == {
        "prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds",
        "negative_pooled_prompt_embeds", "prompt_ids", "negative_prompt_ids",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("prompt", "negative", "error", "message"),
    [
        (["a", "b"], ["x"], PromptError, r"negative_prompt: has 1 items but prompt has 2"),
        (["a", 3], None, PromptTypeError, r"prompt\[1\]: expected a string, got int 3"),
        ("a", ["x", None], PromptTypeError, r"negative_prompt\[1\]: expected a string, got NoneType"),
        (42, None, PromptTypeError, r"prompt: expected a string or a list of strings, got int"),
        ([], None, PromptError, r"prompt: expected at least one prompt"),
    ],
)
def test_bad_prompts_raise_clear_errors(conditioner, prompt, negative, error, message):
    with pytest.raises(error, match=message):
        conditioner.encode(prompt, negative)


def test_prompt_type_error_is_a_type_error(conditioner):
    with pytest.raises(TypeError):
        conditioner.encode([None])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_images_per_prompt": 0}, r"num_images_per_prompt: expected an integer >= 1, got 0"),
        ({"clip_skip": -1}, r"clip_skip: expected None or an integer >= 0, got -1"),
    ],
)
def test_bad_options_raise_clear_errors(conditioner, kwargs, message):
    with pytest.raises(PromptError, match=message):
        conditioner.encode("a cat", **kwargs)
