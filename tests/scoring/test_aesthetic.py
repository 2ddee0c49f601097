"""The LAION aesthetic predictor against a float64 recomputation of its formula: ``MLP(e / ||e||)`` on
transformers' CLIP image embeddings of ``CLIPImageProcessor`` pixels. Tolerance 1e-4 (float32 vs float64)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdclip.errors import ModelSourceError, ScorerError, WeightsNotAvailableError
from sdclip.scoring import load_scorer
from sdclip.scoring.aesthetic import AestheticScorer, aesthetic_layers
from sdclip.scoring.clip_scorer import ClipScorer

LAION_WIDTHS = (768, 1024, 128, 64, 16, 1)
LAION_INDICES = (0, 2, 4, 6, 7)  # nn.Sequential with Dropouts at 1, 3, 5


def head_state_dict(widths, *, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {f"layers.{index}.{kind}": torch.randn(*shape, generator=generator) * 0.3
            for index, fan_in, fan_out in zip(LAION_INDICES, widths[:-1], widths[1:])
            for kind, shape in (("weight", (fan_out, fan_in)), ("bias", (fan_out,)))}


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    state = head_state_dict((96, 64, 32, 16, 8, 1))
    folder = tmp_path_factory.mktemp("aesthetic")
    torch.save(state, folder / "head.pth")  # as LAION published it: a plain state dict
    save_file(state, folder / "head.safetensors")
    return state, folder


@pytest.fixture(scope="module")
def images():
    rs = np.random.RandomState(3)
    return [Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(64, 64), (90, 70), (70, 120)]]


def reference(model, processor, images, state):
    """float64: normalise CLIP's projected image embedding, then the linear layers in index order."""
    model = copy.deepcopy(model).double()
    pixels = processor(images=images, return_tensors="pt").pixel_values.double()
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    x = getattr(out, "pooler_output", out)
    x = x / x.norm(dim=-1, keepdim=True)
    for index in LAION_INDICES:
        x = x @ state[f"layers.{index}.weight"].double().T + state[f"layers.{index}.bias"].double()
    return x[:, 0]


@pytest.mark.parametrize("file", ["head.pth", "head.safetensors"])
def test_scores_match_the_float64_formula(file, head, images, tiny_clip_folder, tiny_clip_model, tiny_clip_processor):
    state, folder = head
    scorer = load_scorer("aesthetic", folder / file, clip_model=tiny_clip_folder, device="cpu")  # .pth: no flag
    expected = reference(tiny_clip_model, tiny_clip_processor, images, state)
    torch.testing.assert_close(scorer.score(images).double(), expected, rtol=1e-4, atol=1e-4)


def test_built_on_a_clip_scorer_shares_its_model(head, tiny_clip_folder):
    clip = ClipScorer.from_pretrained(tiny_clip_folder, device="cpu")
    scorer = AestheticScorer.from_pretrained(head[1] / "head.safetensors", clip_model=clip)
    assert scorer.model is clip.model and scorer.preprocess_config == clip.preprocess_config


def test_the_published_layout_is_accepted():
    layers = aesthetic_layers({k: torch.zeros(v.shape) for k, v in head_state_dict(LAION_WIDTHS).items()},
                              input_dim=768)
    assert [tuple(w.shape) for w, _ in layers] == [(1024, 768), (128, 1024), (64, 128), (16, 64), (1, 16)]


class Payload:
    """Pickled as a global: what a weights_only load must refuse (unpickling it could run code)."""


def test_a_pth_holding_code_is_refused_even_without_allow_pickle(tmp_path):
    torch.save({"layers.0.weight": torch.zeros(1, 96), "layers.0.bias": torch.zeros(1), "x": Payload()},
               tmp_path / "head.pth")
    with pytest.raises(ModelSourceError, match=r"head\.pth': holds objects other than tensors \(code or custom "
                       r"classes\), which sdclip's safe loader does not run"):
        AestheticScorer.from_pretrained(tmp_path / "head.pth")


def test_missing_weights_name_the_metric_the_path_and_where_they_are_published(tmp_path):
    missing = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    with pytest.raises(WeightsNotAvailableError, match=r"^metric 'aesthetic': weights file '.*linearMSE\.pth' not "
                       r"found; the published weights are hf://camenduru/improved-aesthetic-predictor/sac\+logos\+"
                       r"ava1-l14-linearMSE\.pth \(a mirror of https://github\.com/christophschuhmann/.*\): pass "
                       r"that, or a downloaded copy's path$"):
        AestheticScorer.from_pretrained(missing)


@pytest.mark.parametrize("change, message", [
    (lambda s: {**s, "extra.weight": torch.zeros(1)}, r"unexpected key 'extra\.weight'; expected LAION's"),
    (lambda s: {k: v for k, v in s.items() if k != "layers.4.bias"}, r"layers\.4 has \['weight'\]; expected weight and bias"),
    (lambda s: {**s, "layers.2.weight": torch.zeros(32, 63)}, r"layers\.2\.weight has shape \(32, 63\), expected \(out, 64\)"),
    (lambda s: {k: v for k, v in s.items() if not k.startswith("layers.7")}, r"the last layer gives 8 outputs, expected 1"),
    (lambda s: {}, r"no layers\.N\.weight keys"),
])  # fmt: skip
def test_malformed_heads_are_refused(change, message):
    with pytest.raises(ScorerError, match=message):
        aesthetic_layers(change(head_state_dict((96, 64, 32, 16, 8, 1))), source="head.pth", input_dim=96)


def test_a_head_for_another_backbone_width_is_refused(tiny_clip_folder):
    clip = ClipScorer.from_pretrained(tiny_clip_folder, device="cpu")  # 96-wide embeddings
    layers = aesthetic_layers(head_state_dict(LAION_WIDTHS))
    with pytest.raises(ScorerError, match=r"layers\.0\.weight has shape \(1024, 768\), expected \(out, 96\)"):
        AestheticScorer.on(clip, layers)
