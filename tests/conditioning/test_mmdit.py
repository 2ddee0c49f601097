"""SD3 and Flux conditioning against diffusers' own StableDiffusion3Pipeline / FluxPipeline.encode_prompt.

Tolerance: 1e-5 in fp32 (same model calls; the only differences are batching order and concatenation).
"""

from __future__ import annotations

import pytest
import torch

from sdclip import PromptError, TextConditioner, TruncationWarning
from sdclip.testing_mmdit import tiny_sd3_pipeline

TOL = 1e-5
SD3_NAMES = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


@pytest.fixture(scope="module")
def sd3_no_t5():
    return tiny_sd3_pipeline(t5=False)


SOURCES = ["from_pipeline", pytest.param("folder", marks=pytest.mark.slow)]  # a saved folder: end to end


@pytest.fixture(scope="module", params=SOURCES)
def sd3(request, sd3_pipe, sd3_pipeline_folder):
    if request.param == "from_pipeline":
        return TextConditioner.from_pipeline(sd3_pipe)
    return TextConditioner.from_pretrained(sd3_pipeline_folder, device="cpu")


@pytest.fixture(scope="module", params=SOURCES)
def flux(request, flux_pipe, flux_pipeline_folder):
    if request.param == "from_pipeline":
        return TextConditioner.from_pipeline(flux_pipe)
    return TextConditioner.from_pretrained(flux_pipeline_folder, device="cpu")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, what
    assert (actual - expected).abs().max().item() < TOL, what


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("a photo of a cat",), {}),
        ((["a photo of a cat", "a dog"], "blurry"), {"num_images_per_prompt": 2}),
        (("a cat",), {"prompt_2": "oil painting", "prompt_3": "a red dog", "negative_prompt_3": "blue"}),
        (("a cat", "blurry"), {"max_sequence_length": 32, "negative_prompt_2": "art"}),
    ],
)
def test_sd3_equals_encode_prompt(sd3, sd3_pipe, args, kwargs):
    prompt = args[0]
    negative = args[1] if len(args) > 1 else None
    with torch.inference_mode():
        expected = sd3_pipe.encode_prompt(prompt, kwargs.get("prompt_2"), kwargs.get("prompt_3"), device="cpu",
                                          negative_prompt=negative, **{k: v for k, v in kwargs.items()
                                                                        if k not in ("prompt_2", "prompt_3")})
    out = sd3.encode(*args, **kwargs)
    for name, reference in zip(SD3_NAMES, expected, strict=True):
        assert_close(getattr(out, name), reference, name)
    assert sorted(out.pipeline_kwargs()) == sorted(SD3_NAMES)


@pytest.mark.parametrize("source", SOURCES)
def test_sd3_without_t5_gives_diffusers_zeros(sd3_no_t5, tmp_path, source):
    if source == "folder":
        sd3_no_t5.save_pretrained(tmp_path / "sd3-no-t5")
        cond = TextConditioner.from_pretrained(tmp_path / "sd3-no-t5", device="cpu")
    else:
        cond = TextConditioner.from_pipeline(sd3_no_t5)
    assert cond.t5 is None
    with torch.inference_mode():
        expected = sd3_no_t5.encode_prompt("a cat", None, None, device="cpu", negative_prompt="blurry")
    out = cond.encode("a cat", "blurry")
    for name, reference in zip(SD3_NAMES, expected, strict=True):
        assert_close(getattr(out, name), reference, name)
    assert out.prompt_embeds[:, 77:].abs().max() == 0 and (out.t5_ids == -1).all()


@pytest.mark.parametrize(
    ("prompt", "kwargs"),
    [("a photo of a cat", {}), (["a cat", "a dog"], {"prompt_2": ["red", "blue"], "num_images_per_prompt": 2}),
     ("a cat", {"max_sequence_length": 16})],
)
def test_flux_equals_encode_prompt(flux, flux_pipe, prompt, kwargs):
    with torch.inference_mode():
        embeds, pooled, text_ids = flux_pipe.encode_prompt(prompt, device="cpu", **kwargs)
    out = flux.encode(prompt, **kwargs)
    assert_close(out.prompt_embeds, embeds, "prompt_embeds")
    assert_close(out.pooled_prompt_embeds, pooled, "pooled")
    assert torch.equal(out.text_ids, text_ids)
    # Flux without true CFG: no negative is encoded or passed
    assert out.negative_prompt_embeds is None and sorted(out.pipeline_kwargs()) == ["pooled_prompt_embeds", "prompt_embeds"]


def test_flux_negative_for_true_cfg_is_the_negative_text_encoded(flux, flux_pipe):
    with torch.inference_mode():
        embeds, pooled, _ = flux_pipe.encode_prompt("blurry", prompt_2="dark", device="cpu")
    out = flux.encode("a cat", "blurry", negative_prompt_2="dark")
    assert_close(out.negative_prompt_embeds, embeds, "negative_prompt_embeds")
    assert_close(out.negative_pooled_prompt_embeds, pooled, "negative_pooled")


def _rows_seen(model):
    """Count the rows each forward call of ``model`` receives."""
    rows = []
    handle = model.register_forward_pre_hook(lambda _module, args, kwargs: rows.append(
        (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).shape[0]), with_kwargs=True)
    return rows, handle


@pytest.mark.parametrize("family", ["sd1", "sdxl", "sd3", "flux"])
def test_no_negative_encodes_nothing_for_it(family, sd_pipe, sdxl_pipe, sd3_pipe, flux_pipe):
    pipe = {"sd1": sd_pipe, "sdxl": sdxl_pipe, "sd3": sd3_pipe, "flux": flux_pipe}[family]
    cond = TextConditioner.from_pipeline(pipe, cache_size=0)
    models = [cond.text_encoder] + ([cond.t5.model] if cond.t5 is not None else [])
    seen = [_rows_seen(model) for model in models]
    try:
        out = cond.encode(["a cat", "a dog"], negative_prompt=False)
    finally:
        for _, handle in seen:
            handle.remove()
    assert [sum(rows) for rows, _ in seen] == [2] * len(models)  # the two prompts, no empty negative
    assert out.negative_prompt_embeds is None and out.negative_prompt_ids is None
    assert "negative_prompt_embeds" not in out.pipeline_kwargs() and "negative_prompt_embeds" not in out.tensors()


def test_negative_prompt_true_is_refused(sd3):
    with pytest.raises(PromptError, match=r"^negative_prompt: expected a string, a list of strings, None or False, got True$"):
        sd3.encode("a cat", True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_sequence_length": 0}, r"^max_sequence_length: expected an integer >= 1, got 0$"),
        ({"prompt_3": "x", "family": "flux"}, r"^prompt_3: only SD3 has a third text encoder \(T5\)"),
        ({"max_sequence_length": 8, "family": "sd1"}, r"^max_sequence_length: only SD3 and Flux have a T5 encoder"),
    ],
)
def test_option_errors(kwargs, message, sd3_pipe, flux_pipe, sd_pipe):
    pipe = {"flux": flux_pipe, "sd1": sd_pipe}.get(kwargs.pop("family", None), sd3_pipe)
    with pytest.raises(PromptError, match=message):
        TextConditioner.from_pipeline(pipe).encode("a cat", **kwargs)


def test_repeats_come_from_the_cache(sd3_pipe):
    cond = TextConditioner.from_pipeline(sd3_pipe)
    first = cond.encode(["a cat", "a dog"], "blurry")
    rows, handle = _rows_seen(cond.t5.model)
    try:
        again = cond.encode(["a dog", "a cat"], "blurry")
    finally:
        handle.remove()
    assert rows == [] and torch.equal(again.prompt_embeds[0], first.prompt_embeds[1])


def test_long_prompts_on_the_clip_parts_are_chunked(sd3_pipe):
    cond = TextConditioner.from_pipeline(sd3_pipe)
    prompt = "a photo of a cat " * 20  # 100 CLIP tokens: two chunks
    with pytest.warns(TruncationWarning, match=r"longer than the 8-token limit; encoded by T5 without: 'of a cat a photo"):
        out = cond.encode(prompt, truncate=False, max_sequence_length=8)
    assert out.prompt_embeds.shape[1] == 2 * 77 + 8 and out.negative_prompt_embeds.shape == out.prompt_embeds.shape
    with torch.inference_mode():
        for chunk in range(2):
            ids = out.prompt_ids[:, chunk * 77 : (chunk + 1) * 77]
            hidden = sd3_pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]  # (1, 77, 128)
            assert_close(out.prompt_embeds[:, chunk * 77 : (chunk + 1) * 77, :128], hidden, f"chunk {chunk}")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sd3", "flux", "flux_true_cfg"])
def test_pipeline_kwargs_give_the_same_image(case, sd3_pipe, flux_pipe):
    import numpy as np

    pipe = sd3_pipe if case == "sd3" else flux_pipe
    cond = TextConditioner.from_pipeline(pipe)
    common = {"num_inference_steps": 2, "height": 32, "width": 32, "output_type": "np"}
    if case == "sd3":
        text, kwargs = {"prompt": "a cat", "negative_prompt": "blurry"}, cond.encode("a cat", "blurry").pipeline_kwargs()
    elif case == "flux":
        text, kwargs = {"prompt": "a cat", "max_sequence_length": 64}, cond.encode("a cat", max_sequence_length=64).pipeline_kwargs()
    else:
        text = {"prompt": "a cat", "negative_prompt": "blurry", "true_cfg_scale": 2.0, "max_sequence_length": 64}
        kwargs = {**cond.encode("a cat", "blurry", max_sequence_length=64).pipeline_kwargs(), "true_cfg_scale": 2.0}
    expected = pipe(**text, **common, generator=torch.Generator().manual_seed(0)).images
    actual = pipe(**kwargs, **common, generator=torch.Generator().manual_seed(0)).images
    assert np.abs(actual - expected).max() < 1e-5
