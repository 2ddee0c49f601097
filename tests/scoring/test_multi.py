"""Several metrics in one pass: one vision forward per image for metrics on one model, one decode per
preprocessing, columns equal to each metric scored on its own (whose formulas have their own float64 tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdclip.errors import ImageInputError, PromptError, ScorerError
from sdclip.scoring import load_scorer
from sdclip.scoring.aesthetic import AestheticScorer
from sdclip.scoring.clip_scorer import ClipScorer
from sdclip.scoring.multi import MultiScorer, score_many
from sdclip.testing import random_openclip_state_dict

PROMPTS = ["a cat", "a dog", "a cat", "a diagram", "a cat"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi")
    rs = np.random.RandomState(2)
    paths = []
    for index in range(5):
        paths.append(folder / f"img{index}.png")
        Image.fromarray(rs.randint(0, 256, (64 + 4 * index, 70, 3), dtype=np.uint8)).save(paths[-1])
    generator = torch.Generator().manual_seed(1)
    save_file({"layers.0.weight": torch.randn(8, 96, generator=generator), "layers.0.bias": torch.zeros(8),
               "layers.1.weight": torch.randn(1, 8, generator=generator), "layers.1.bias": torch.ones(1)},
              folder / "aesthetic.safetensors")
    save_file(random_openclip_state_dict(seed=2), folder / "hps.safetensors")
    return folder, paths


@pytest.fixture(scope="module")
def multi(files, tiny_clip_folder):
    folder, _ = files
    return MultiScorer.from_pretrained(
        ["clip", "aesthetic", "pickscore", "hpsv2"], device="cpu", batch_size=2,
        sources={"clip": tiny_clip_folder, "aesthetic": folder / "aesthetic.safetensors",
                 "pickscore": tiny_clip_folder, "hpsv2": folder / "hps.safetensors"})


def test_aesthetic_is_built_on_the_clip_metric(multi):
    assert multi.names == ["clip", "aesthetic", "pickscore", "hpsv2"]
    assert multi.scorers["aesthetic"].model is multi.scorers["clip"].model
    assert multi.vision_passes == 3  # clip+aesthetic, pickscore's model, hpsv2's model


def test_columns_equal_each_metric_on_its_own(multi, files):
    _, paths = files
    together = multi.score(paths, PROMPTS)
    for name, scorer in multi.scorers.items():
        alone = scorer.score(paths, None if name == "aesthetic" else PROMPTS)
        torch.testing.assert_close(together[name], alone, rtol=1e-5, atol=1e-5)


def test_one_vision_forward_per_batch_for_clip_and_aesthetic(files, tiny_clip_folder, monkeypatch):
    folder, paths = files
    clip = ClipScorer.from_pretrained(tiny_clip_folder, device="cpu", batch_size=2)
    multi = MultiScorer({"clip": clip, "aesthetic": AestheticScorer.from_pretrained(
        folder / "aesthetic.safetensors", clip_model=clip)})
    calls, decodes = [], []
    original, original_decode = ClipScorer.embed_images, Image.open
    monkeypatch.setattr(ClipScorer, "embed_images", lambda self, pixels: calls.append(len(pixels)) or original(self, pixels))
    monkeypatch.setattr(Image, "open", lambda *a, **k: decodes.append(1) or original_decode(*a, **k))
    scores = multi.score(paths, "a cat")
    assert calls == [2, 2, 1]  # 5 images, batches of 2, one forward each for both metrics
    assert len(decodes) == len(paths)  # each file decoded once
    assert set(scores) == {"clip", "aesthetic"}


def test_a_failed_image_is_nan_in_every_column(multi, files, tmp_path):
    _, paths = files
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    items = [paths[0], broken, paths[1]]
    batches = list(multi.iter_scores(items, "a cat", errors="return"))
    errors = [e for b in batches for e in b.errors]
    assert errors[0] is None and errors[2] is None and "broken.png" in errors[1]
    for name in multi.names:
        column = torch.cat([b.scores[name] for b in batches])
        assert torch.isnan(column[1]) and not torch.isnan(column[[0, 2]]).any()
    with pytest.raises(ImageInputError, match="broken.png"):
        multi.score(items, "a cat")


def test_score_many_by_name(files, tiny_clip_folder):
    folder, paths = files
    scores = score_many(paths[:2], "a cat", metrics=["aesthetic"], device="cpu",
                        sources={"aesthetic": folder / "aesthetic.safetensors", "clip": tiny_clip_folder})
    alone = load_scorer("aesthetic", folder / "aesthetic.safetensors", clip_model=tiny_clip_folder, device="cpu")
    torch.testing.assert_close(scores["aesthetic"], alone.score(paths[:2]))


def test_text_metrics_need_prompts(multi, files):
    with pytest.raises(PromptError, match=r"prompts: metrics clip, pickscore, hpsv2 compare images with text"):
        multi.score(files[1][:1])


def test_bad_scorer_maps_are_refused():
    with pytest.raises(ScorerError, match="scorers: expected a non-empty mapping"):
        MultiScorer({})
    with pytest.raises(ScorerError, match=r"scorers\['clip'\]: expected a metric name -> Scorer, got str"):
        MultiScorer({"clip": "openai/clip-vit-large-patch14"})
