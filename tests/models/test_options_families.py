"""One LoadOptions for every loader, model families as data, and models loaded for training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import sdclip
import sdclip.conditioning
from sdclip.models.families import FAMILIES, SDXL_SPEC, EncoderSpec
from sdclip.models.loading import LoadOptions, load_clip_model, load_encoders, load_text_encoder, load_text_encoders


def test_load_options_are_frozen_with_inference_defaults():
    options = LoadOptions()
    assert (options.device, options.dtype, options.local_files_only, options.allow_pickle, options.trainable) == (
        None, None, None, False, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.device = "cpu"


def test_encoder_spec_lives_with_the_families_and_stays_importable():
    assert sdclip.EncoderSpec is EncoderSpec is sdclip.conditioning.EncoderSpec
    assert sdclip.conditioning.SDXL_SPEC is SDXL_SPEC == FAMILIES["sdxl"].spec


@pytest.mark.parametrize("source", ["pipeline", "sdxl_pipeline", "single_file"])
def test_family_is_detected_from_the_source(text_sources, sdxl_pipeline_folder, source):
    path = sdxl_pipeline_folder if source == "sdxl_pipeline" else text_sources[source]
    loaded = load_text_encoders(path, device="cpu")
    expected = "sdxl" if source == "sdxl_pipeline" else "sd1"
    assert loaded.family is FAMILIES[expected]
    assert loaded.sdxl == (expected == "sdxl")
    assert len(loaded.encoders) == len(FAMILIES[expected].encoders)


def test_keywords_and_load_options_give_the_same_model(text_sources):
    by_keywords = load_text_encoders(text_sources["pipeline"], device="cpu", dtype="fp16")
    by_options = load_encoders(text_sources["pipeline"], LoadOptions(device="cpu", dtype="fp16"))
    a, b = by_keywords.encoders[0].model, by_options.encoders[0].model
    assert a.dtype == b.dtype == torch.float16
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_default_models_are_frozen_in_eval_mode(text_sources, clip_model_folder):
    text = load_text_encoder(text_sources["pipeline"], device="cpu").model
    clip, _, _ = load_clip_model(clip_model_folder, device="cpu")
    for model in (text, clip):
        assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_a_model_loaded_for_training_gets_gradients(text_sources, clip_model_folder, tokenizer):
    loaded = load_text_encoder(text_sources["pipeline"], device="cpu", trainable=True)
    model = loaded.model
    assert model.training and all(p.requires_grad for p in model.parameters())
    ids = torch.tensor([tokenizer("a photo of a cat", padding="max_length").input_ids])
    model(ids).last_hidden_state.square().mean().backward()
    token_grad = model.get_input_embeddings().weight.grad
    assert token_grad is not None and token_grad[ids[0]].abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    clip, _, _ = load_clip_model(clip_model_folder, device="cpu", trainable=True)
    assert clip.training and clip.logit_scale.requires_grad


def test_sd3_folders_are_left_to_the_mmdit_loader(tmp_path, sdxl_pipeline_folder):
    import json
    import shutil

    folder = tmp_path / "sd3"
    shutil.copytree(sdxl_pipeline_folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "text_encoder_3": ["transformers", "T5EncoderModel"]}))
    with pytest.raises(sdclip.ModelSourceError, match="a Stable Diffusion 3 pipeline; load it with "
                       "TextConditioner.from_pretrained or sdclip.models.mmdit.load_conditioning_encoders"):
        load_text_encoders(folder, device="cpu")
    assert FAMILIES["sd3"].supported and FAMILIES["flux"].supported


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], LoadOptions()),
        (["--device", "cpu", "--dtype", "bf16", "--allow-pickle", "--offline"],
         LoadOptions(device="cpu", dtype="bf16", local_files_only=True, allow_pickle=True)),
    ],
)
def test_cli_model_flags_map_to_load_options(argv, expected):
    import argparse

    from sdclip.cli._common import add_model_options, load_options

    parser = argparse.ArgumentParser()
    add_model_options(parser)
    assert load_options(parser.parse_args(argv)) == expected
