"""HPS v2 end to end against a float64 OpenCLIP forward written here from OpenCLIP's ``model.py`` /
``transformer.py`` (pre-LN blocks with fused q/k/v, exact GELU, class token + ``ln_post`` + ``@ visual.proj``,
causal text with the end-of-text token pooled by ``argmax`` + ``@ text_projection``), run on a tiny state dict in
OpenCLIP's key layout. HPS v2's score is the cosine (``img_score.py``). Tolerance 1e-4 (float32 vs float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from sdclip.errors import ModelSourceError, PickleRefusedError, WeightsNotAvailableError
from sdclip.models.tokenizer import load_tokenizer
from sdclip.scoring import load_scorer
from sdclip.testing import random_openclip_state_dict

PROMPTS = ["a photo of a cat", "an astronaut riding a horse on the moon", "a photo of a cat"]


def _block(sd, prefix, x, mask=None):
    """One OpenCLIP ResidualAttentionBlock, (B, L, W) float64."""
    p = {k[len(prefix):]: v.double() for k, v in sd.items() if k.startswith(prefix)}
    width = x.shape[-1]
    heads = width // 64
    h = F.layer_norm(x, (width,), p["ln_1.weight"], p["ln_1.bias"], 1e-5)
    q, k, v = (h @ p["attn.in_proj_weight"].T + p["attn.in_proj_bias"]).chunk(3, dim=-1)
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, 64).transpose(1, 2)  # noqa: E731  (B, H, L, 64)
    attn = split(q) @ split(k).transpose(-1, -2) / 8.0
    if mask is not None:
        attn = attn + mask
    out = (attn.softmax(-1) @ split(v)).transpose(1, 2).reshape(x.shape)
    x = x + out @ p["attn.out_proj.weight"].T + p["attn.out_proj.bias"]
    h = F.layer_norm(x, (width,), p["ln_2.weight"], p["ln_2.bias"], 1e-5)
    h = F.gelu(h @ p["mlp.c_fc.weight"].T + p["mlp.c_fc.bias"])
    return x + h @ p["mlp.c_proj.weight"].T + p["mlp.c_proj.bias"]


def openclip_encode_image(sd, pixels):
    d = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(pixels.double(), d["visual.conv1.weight"], stride=d["visual.conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)  # (B, grid*grid, W)
    x = torch.cat([d["visual.class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + d["visual.positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], d["visual.ln_pre.weight"], d["visual.ln_pre.bias"], 1e-5)
    layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    for n in range(layers):
        x = _block(sd, f"visual.transformer.resblocks.{n}.", x)
    x = F.layer_norm(x[:, 0], x.shape[-1:], d["visual.ln_post.weight"], d["visual.ln_post.bias"], 1e-5)
    return x @ d["visual.proj"]


def openclip_encode_text(sd, texts):
    """OpenCLIP's tokenizer pads with 0 to 77; the causal mask keeps padding out of the pooled token."""
    d = {k: v.double() for k, v in sd.items()}
    ids = torch.zeros(len(texts), 77, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = load_tokenizer()(text).input_ids
        ids[row, : len(tokens)] = torch.tensor(tokens)
    x = d["token_embedding.weight"][ids] + d["positional_embedding"]
    mask = torch.full((77, 77), float("-inf"), dtype=torch.float64).triu(1)
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    for n in range(layers):
        x = _block(sd, f"transformer.resblocks.{n}.", x, mask)
    x = F.layer_norm(x, x.shape[-1:], d["ln_final.weight"], d["ln_final.bias"], 1e-5)
    return x[torch.arange(len(texts)), ids.argmax(dim=-1)] @ d["text_projection"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = random_openclip_state_dict(seed=4)
    folder = tmp_path_factory.mktemp("hps")
    save_file(state, folder / "hps.safetensors")
    torch.save({"state_dict": state, "epoch": 1}, folder / "HPS_v2.1_compressed.pt")  # the published file's layout
    return state, folder


@pytest.fixture(scope="module")
def images():
    rs = np.random.RandomState(9)
    return [Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(64, 64), (100, 70), (64, 90)]]


@pytest.mark.parametrize("file", ["hps.safetensors", "HPS_v2.1_compressed.pt"])
def test_scores_match_a_float64_openclip_forward(file, checkpoint, images, tiny_clip_processor):
    state, folder = checkpoint
    scorer = load_scorer("hpsv2", folder / file, allow_pickle=True, device="cpu")
    pixels = tiny_clip_processor(images=images, return_tensors="pt").pixel_values  # OpenCLIP's eval transform
    expected = F.cosine_similarity(openclip_encode_image(state, pixels), openclip_encode_text(state, PROMPTS), dim=-1)
    torch.testing.assert_close(scorer.score(images, PROMPTS).double(), expected, rtol=1e-4, atol=1e-4)


def test_the_pickle_is_refused_without_allow_pickle(checkpoint):
    with pytest.raises(PickleRefusedError, match=r"HPS_v2\.1_compressed\.pt': pickle files .* allow_pickle=True"):
        load_scorer("hpsv2", checkpoint[1] / "HPS_v2.1_compressed.pt", device="cpu")


def test_missing_weights_name_the_metric_the_path_and_where_they_are_published(tmp_path):
    with pytest.raises(WeightsNotAvailableError, match=r"^metric 'hpsv2': weights file '.*HPS_v2\.1_compressed\.pt' "
                       r"not found; the published weights are hf://xswu/HPSv2/HPS_v2\.1_compressed\.pt "
                       r"\(https://huggingface\.co/xswu/HPSv2\): pass that, or a downloaded copy's path$"):
        load_scorer("hpsv2", tmp_path / "HPS_v2.1_compressed.pt", allow_pickle=True)


def test_a_non_openclip_checkpoint_is_refused(checkpoint, tmp_path):
    save_file({**checkpoint[0], "visual.attnpool.query": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(ModelSourceError, match=r"other\.safetensors': 1 tensors are not OpenCLIP ViT CLIP weights "
                       r"\(e\.g\. visual\.attnpool\.query\)"):
        load_scorer("hpsv2", tmp_path / "other.safetensors", device="cpu")
    save_file({"layers.0.weight": torch.zeros(2, 2)}, tmp_path / "aesthetic.safetensors")
    with pytest.raises(ModelSourceError, match=r"tensor 'token_embedding\.weight' is missing, so this is not an "
                       r"OpenCLIP ViT CLIP model"):
        load_scorer("hpsv2", tmp_path / "aesthetic.safetensors", device="cpu")
