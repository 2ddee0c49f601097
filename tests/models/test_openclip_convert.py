"""OpenCLIP -> transformers layout: every tensor lands where transformers' CLIPModel reads it (fused q/k/v split
in order, projections transposed), checked key by key on a state dict written from OpenCLIP's names; the
numeric check of the converted model against an OpenCLIP forward is tests/scoring/test_hpsv2.py."""

from __future__ import annotations

import pytest
import torch

from sdclip.errors import ModelSourceError
from sdclip.models.openclip_convert import load_openclip_as_hf, openclip_config, openclip_to_hf
from sdclip.testing import random_openclip_state_dict


@pytest.fixture(scope="module")
def state():
    return random_openclip_state_dict(text_width=128, text_layers=2, vision_width=192, vision_layers=3, patch=16,
                                      image_size=64, projection=80)


def test_config_is_read_from_shapes(state):
    config = openclip_config(state)
    assert config["projection_dim"] == 80
    assert {k: config["text_config"][k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                   "intermediate_size", "hidden_act")} == \
        {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512,
         "hidden_act": "gelu"}
    assert {k: config["vision_config"][k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                     "patch_size", "image_size")} == \
        {"hidden_size": 192, "num_hidden_layers": 3, "num_attention_heads": 3, "patch_size": 16, "image_size": 64}


def test_every_tensor_lands_in_the_transformers_model(state):
    model = load_openclip_as_hf(state, name="tiny", device=torch.device("cpu"), dtype=torch.float32)
    params = model.state_dict()
    width = 192
    fused = state["visual.transformer.resblocks.2.attn.in_proj_weight"]
    layer = "vision_model.encoder.layers.2.self_attn."
    assert torch.equal(params[layer + "q_proj.weight"], fused[:width])
    assert torch.equal(params[layer + "k_proj.weight"], fused[width : 2 * width])
    assert torch.equal(params[layer + "v_proj.weight"], fused[2 * width :])
    assert torch.equal(params["text_model.encoder.layers.1.self_attn.v_proj.bias"],
                       state["transformer.resblocks.1.attn.in_proj_bias"][256:])
    assert torch.equal(params["visual_projection.weight"], state["visual.proj"].T)
    assert torch.equal(params["text_projection.weight"], state["text_projection"].T)
    assert torch.equal(params["vision_model.embeddings.class_embedding"], state["visual.class_embedding"])
    assert torch.equal(params["vision_model.pre_layrnorm.bias"], state["visual.ln_pre.bias"])
    assert torch.equal(params["text_model.encoder.layers.0.mlp.fc2.weight"],
                       state["transformer.resblocks.0.mlp.c_proj.weight"])
    assert torch.equal(params["logit_scale"], state["logit_scale"])


def test_module_prefix_and_the_old_attn_mask_buffer_are_accepted(state):
    wrapped = {"module." + k: v for k, v in state.items()} | {"attn_mask": torch.zeros(77, 77)}
    assert openclip_to_hf(wrapped).keys() == openclip_to_hf(state).keys()


def test_a_missing_tower_is_refused(state):
    text_only = {k: v for k, v in state.items() if not k.startswith("visual.")}
    with pytest.raises(ModelSourceError, match=r"checkpoint 'hps\.pt': tensor 'visual\.conv1\.weight' is missing, so "
                       r"this is not an OpenCLIP ViT CLIP model \(both towers\)"):
        openclip_config(text_only, name="hps.pt")
