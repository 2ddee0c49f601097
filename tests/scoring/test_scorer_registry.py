"""Adding a metric touches one module and one registry line: here a test-only "brightness" scorer,
defined and registered from this file alone, runs through the shared base (image inputs, batching,
prefetch, error rows) and matches a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from sdclip.errors import ScorerError
from sdclip.scoring.base import Scorer
from sdclip.scoring.preprocess import PreprocessConfig
from sdclip.scoring.registry import available_scorers, load_scorer, register_scorer, unregister_scorer

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


class BrightnessScorer(Scorer):
    """Mean brightness of the 32x32 center crop, in [0, 100]: no model, no text."""

    uses_text = False

    def __init__(self, **options):
        super().__init__(preprocess_config=PreprocessConfig(shortest_edge=32, crop=(32, 32), mean=MEAN, std=STD),
                         **options)
        self.embedded: list[int] = []

    @classmethod
    def from_pretrained(cls, source=None, **options):
        return cls(**options)

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float32

    @property
    def feature_dim(self):
        return 1

    def embed_images(self, pixels):
        self.embedded.append(len(pixels))
        return (pixels * 0.5 + 0.5).mean(dim=(1, 2, 3))[:, None]  # undo the normalization: [0, 1]

    def pair_scores(self, image_features, text_features):
        assert text_features is None
        return 100 * image_features[:, 0]


@pytest.fixture
def brightness():
    register_scorer("test-brightness", BrightnessScorer)
    yield
    unregister_scorer("test-brightness")
    assert "test-brightness" not in available_scorers()


def direct(image: Image.Image) -> float:
    """The same metric computed by hand: PIL resize (shorter side 32, the longer truncated, as transformers)
    + center crop, float64 mean."""
    small = image.convert("RGB").resize((32, int(32 * image.height / image.width)) if image.width <= image.height
                                        else (int(32 * image.width / image.height), 32), Image.Resampling.BICUBIC)
    left, top = (small.width - 32) // 2, (small.height - 32) // 2
    return 100 * np.asarray(small.crop((left, top, left + 32, top + 32)), dtype=np.float64).mean() / 255


def test_a_test_only_scorer_plugs_into_the_base(brightness, tmp_path):
    rs = np.random.RandomState(0)
    images = [Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(40, 40), (64, 50), (33, 90)]]
    images[2].save(tmp_path / "third.png")
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    scorer = load_scorer("test-brightness", batch_size=2)
    assert isinstance(scorer, BrightnessScorer) and "test-brightness" in available_scorers()

    batches = list(scorer.iter_scores([images[0], broken, images[1], tmp_path / "third.png"], errors="return"))
    assert [b.start for b in batches] == [0, 2] and scorer.embedded == [1, 2]  # batches of 2, failures skipped
    scores = torch.cat([b.scores for b in batches])
    errors = [e for b in batches for e in b.errors]
    assert errors[0] is None and "not an image file Pillow can read" in errors[1] and math.isnan(scores[1])
    expected = [direct(image) for image in images]
    assert scores[[0, 2, 3]].tolist() == pytest.approx(expected, abs=1e-4)
    assert scorer.score(images).tolist() == pytest.approx(expected, abs=1e-4)


def test_registry_errors(brightness):
    with pytest.raises(ScorerError, match="scorer 'test-brightness': already registered; pass replace=True"):
        register_scorer("test-brightness", BrightnessScorer)
    with pytest.raises(ScorerError, match="scorer 'nope': not registered; available: aesthetic, clip, hpsv2, pickscore, test-brightness"):
        load_scorer("nope")
    with pytest.raises(ScorerError, match="scorer 'x': expected a subclass of sdclip.scoring.base.Scorer"):
        register_scorer("x", dict)


def test_clip_is_built_in(tiny_clip_folder):
    from sdclip import ClipScorer

    scorer = load_scorer("clip", tiny_clip_folder, device="cpu", batch_size=3)
    assert type(scorer) is ClipScorer and scorer.batch_size == 3



def test_a_metric_can_reuse_clips_towers(tiny_clip_folder):
    from sdclip import ClipScorer

    class Negated(ClipScorer):
        def pair_scores(self, image_features, text_features):
            return -super().pair_scores(image_features, text_features)

    register_scorer("test-negated-clip", Negated)
    try:
        negated = load_scorer("test-negated-clip", tiny_clip_folder, device="cpu")
        plain = ClipScorer.from_pretrained(tiny_clip_folder, device="cpu")
        images = torch.rand(3, 3, 40, 40)
        torch.testing.assert_close(negated.score(images, "a cat"), -plain.score(images, "a cat"))
    finally:
        unregister_scorer("test-negated-clip")
