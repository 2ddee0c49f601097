"""PickScore against a float64 recomputation of its README's formula on a tiny random CLIPModel:
``logit_scale.exp() * cos(text_embeds, image_embeds)``, and ``softmax`` over a prompt's images. Tolerance 1e-4."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from sdclip.errors import WeightsNotAvailableError
from sdclip.models.tokenizer import load_tokenizer
from sdclip.scoring import load_scorer
from sdclip.scoring.pickscore import PickScoreScorer

PROMPT = "a photo of an astronaut riding a horse"


@pytest.fixture(scope="module")
def images():
    rs = np.random.RandomState(5)
    return [Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(64, 64), (80, 66), (99, 64)]]


def reference(model, processor, images, prompt):
    model = copy.deepcopy(model).double()
    pixels = processor(images=images, return_tensors="pt").pixel_values.double()
    ids = torch.tensor([load_tokenizer()(prompt).input_ids])
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=ids)
    image, text = getattr(image, "pooler_output", image), getattr(text, "pooler_output", text)
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    return model.logit_scale.exp() * (image @ text.T)[:, 0]


def test_scores_and_probabilities_match_the_float64_formula(images, tiny_clip_folder, tiny_clip_model,
                                                            tiny_clip_processor, tmp_path):
    model = copy.deepcopy(tiny_clip_model)
    with torch.no_grad():
        model.logit_scale.fill_(2.0)  # not the default log(1/0.07): the scale must be read, not assumed
    folder = tmp_path / "pickscore-scale-2"
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text((tiny_clip_folder / "preprocessor_config.json").read_text())
    scorer = load_scorer("pickscore", folder, device="cpu")
    expected = reference(model, tiny_clip_processor, images, PROMPT)
    torch.testing.assert_close(scorer.score(images, PROMPT).double(), expected, rtol=1e-4, atol=1e-4)
    ranking = scorer.rank(images, PROMPT)
    probabilities = torch.softmax(expected, dim=0)
    assert list(ranking.indices) == torch.argsort(expected, descending=True).tolist()
    torch.testing.assert_close(torch.tensor(ranking.probabilities, dtype=torch.float64),
                               probabilities[list(ranking.indices)], rtol=1e-4, atol=1e-5)


def test_missing_weights_name_the_metric_and_the_published_model():
    with pytest.raises(WeightsNotAvailableError, match=r"^metric 'pickscore': .*nobody/no-such-model.*\(the published "
                       r"model is yuvalkirstain/PickScore_v1 on the Hugging Face hub"):
        PickScoreScorer.from_pretrained("nobody/no-such-model", local_files_only=True)
