"""The demo model that ships as ``sdclip:shapes``: every loader takes it, and it has learnt its data.

Quality is measured on a freshly generated held-out set (a seed the training script never uses) with
transformers' own ``CLIPModel`` features and the metrics written out here, not sdclip's scorer. The
issue's targets are zero-shot colour + shape accuracy >= 95 % over the 48 class prompts and text -> image
recall@1 >= 0.8 among 100 images whose full captions ("a small red circle on the left") all differ.
Accuracy is taken over 3,000 held-out images: near 0.95 its standard error is 0.4 points, where 300
images (this test's earlier size; they are the first 300 of the 3,000) gave 1.3: the previous model's
figures over the ten 300-image slices of the 3,000 ranged from 0.917 to 0.96. The shipped model (2,600 steps of
scripts/train_demo_model.py, each scene next to its twin with a look-alike shape) reaches colour + shape
0.957 (first 300: 0.953) and recall@1 0.91; benchmarks/RESULTS.md has the figures and the variants that
fell short.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdclip import ClipScorer, ModelSourceError, TextConditioner, clip
from sdclip.datasets.shapes import class_prompts, full_caption, generate_shapes
from sdclip.models import sources
from sdclip.models.sources import DEMO_MODEL, resolve_source

HELD_OUT_SEED = 20261128  # training uses seed 0 and validation seed 1 (scripts/train_demo_model.py)
HELD_OUT_IMAGES = 3000  # standard error of an accuracy near 0.95: 0.4 points (300 images: 1.3)
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]


@pytest.fixture(scope="module")
def demo():
    """transformers' CLIPModel read straight from the shipped files (no sdclip loader), and its image size."""
    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPModel

    folder = sources.PACKAGED_MODELS[DEMO_MODEL]
    config = json.loads((folder / "config.json").read_text())
    model = CLIPModel(CLIPConfig(**{k: v for k, v in config.items() if k != "architectures"}))
    model.load_state_dict({k: v.float() for k, v in load_file(folder / "model.safetensors").items()})
    return model.eval(), config["vision_config"]["image_size"]


def _features(model, size: int, samples, texts: list[str]):
    from sdclip.models.tokenizer import load_tokenizer

    pixels = torch.from_numpy(np.stack([s.pixels for s in samples])).permute(0, 3, 1, 2).float() / 255
    ids = load_tokenizer()(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        image = model.get_image_features(pixel_values=(pixels - MEAN) / STD).pooler_output  # projected
        text = model.get_text_features(input_ids=ids).pooler_output
    return torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)


@pytest.fixture(scope="module")
def zero_shot(demo) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(predicted, true) (colour, shape) of the held-out images among the 48 class prompts."""
    model, size = demo
    samples = list(generate_shapes(HELD_OUT_IMAGES, seed=HELD_OUT_SEED, image_size=size))
    labels = class_prompts()
    images, texts = _features(model, size, samples, list(labels.values()))
    keys = list(labels)
    return [(keys[p], (s.attributes.color, s.attributes.shape))
            for p, s in zip((images @ texts.T).argmax(dim=1).tolist(), samples)]  # fmt: skip


def test_zero_shot_colour_and_shape_accuracy_on_held_out_images(zero_shot):
    accuracy = np.mean([predicted == truth for predicted, truth in zero_shot])
    assert accuracy >= 0.95, accuracy


def test_zero_shot_colour_accuracy_on_held_out_images(zero_shot):
    """The colour of a shape the model has never seen (chance: 1/8)."""
    accuracy = np.mean([predicted[0] == truth[0] for predicted, truth in zero_shot])
    assert accuracy >= 0.95, accuracy


def test_zero_shot_shape_accuracy_on_held_out_images(zero_shot):
    """The shape of a held-out image among six (chance: 1/6)."""
    accuracy = np.mean([predicted[1] == truth[1] for predicted, truth in zero_shot])
    assert accuracy >= 0.9, accuracy


def test_text_to_image_recall_at_1_among_100_held_out_images(demo):
    model, size = demo
    chosen, seen = [], set()
    for sample in generate_shapes(1000, seed=HELD_OUT_SEED + 1, image_size=size):
        caption = full_caption(sample.attributes)
        if caption not in seen:
            seen.add(caption)
            chosen.append(sample)
        if len(chosen) == 100:
            break
    images, texts = _features(model, size, chosen, [full_caption(s.attributes) for s in chosen])
    similarity = texts @ images.T  # (100 texts, 100 images)
    own = similarity.diagonal()[:, None]
    recall = ((similarity > own).sum(dim=1) == 0).float().mean().item()  # own image strictly first
    assert recall >= 0.8, recall


def test_every_loader_takes_the_name(demo):
    model, _ = demo
    scorer = ClipScorer.from_pretrained(DEMO_MODEL, device="cpu")
    reference = dict(model.state_dict())
    assert all(torch.equal(t, reference[k]) for k, t in scorer.model.state_dict().items())
    from sdclip.scoring.registry import load_scorer

    assert isinstance(load_scorer("clip", DEMO_MODEL, device="cpu"), ClipScorer)
    cond = TextConditioner.from_pretrained(DEMO_MODEL, device="cpu")
    ids = cond.tokenizer("a red circle", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.text_model(input_ids=ids).last_hidden_state
    assert (cond.encode("a red circle").prompt_embeds - expected).abs().max().item() < 1e-5
    clip_model, preprocess = clip.load(DEMO_MODEL, device="cpu")
    assert preprocess.config.output_size == (model.config.vision_config.image_size,) * 2


def test_cli_model_flag_takes_the_name(capsys, tmp_path):
    from sdclip.cli import main

    out = tmp_path / "e.safetensors"
    assert main(["encode", "a blue star", "--model", DEMO_MODEL, "--device", "cpu", "--out", str(out)]) == 0
    assert out.is_file() and "(1, 77, 128)" in capsys.readouterr().out


def test_shipped_file_is_small_and_zeroes_unused_tokens():
    from safetensors import safe_open

    path = sources.PACKAGED_MODELS[DEMO_MODEL] / "model.safetensors"
    assert path.stat().st_size < 16 * 2**20
    with safe_open(path, "pt") as file:
        embedding = file.get_tensor("text_model.embeddings.token_embedding.weight")
    used = (embedding != 0).any(dim=1)
    assert 20 < int(used.sum()) < 200  # the generator's words, the special tokens, nothing else


def test_unknown_or_missing_packaged_model(tmp_path, monkeypatch):
    with pytest.raises(ModelSourceError, match=r"model 'sdclip:cats': no such packaged model; expected one of sdclip:shapes"):
        resolve_source("sdclip:cats")
    monkeypatch.setitem(sources.PACKAGED_MODELS, DEMO_MODEL, tmp_path / "gone")
    with pytest.raises(ModelSourceError, match=r"model 'sdclip:shapes': config.json, model.safetensors missing from "
                       r".*gone \(an install without package data\?\); reinstall sdclip, or rebuild the model with "
                       r"`python scripts/train_demo_model.py`"):  # fmt: skip
        ClipScorer.from_pretrained(DEMO_MODEL, device="cpu")
