"""sdclip.clip, OpenAI's clip API: the usage note's two snippets, tokenize, load, against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil

from sdclip.compat import openai_clip as clip
from sdclip.errors import ModelSourceError, PromptError, PromptTypeError
from sdclip.models.tokenizer import load_tokenizer

LABELS = ["a diagram", "a dog", "a cat"]


@pytest.fixture
def clip_png(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (120, 90, 4), dtype=np.uint8), "RGBA").save("CLIP.png")
    return tmp_path / "CLIP.png"


def reference(model, labels):
    """transformers on CLIP.png: CLIPImageProcessor pixels, padded ids."""
    processor = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    pixels = processor(images=[Image.open("CLIP.png")], return_tensors="pt").pixel_values
    tokens = load_tokenizer()(labels, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels)


# -- the usage note's snippets, unchanged but for the import and the model source -------------------


def test_feature_extraction_snippet(tiny_clip_folder, tiny_clip_model, clip_png):
    source = str(tiny_clip_folder)
    # --- the note's code ---
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, preprocess = clip.load(source, device=device)
    image = preprocess(Image.open("CLIP.png")).unsqueeze(0).to(device)
    text = clip.tokenize(["a diagram", "a dog", "a cat"]).to(device)
    with torch.no_grad():
        image_features = model.encode_image(image)
        text_features = model.encode_text(text)
    # --- end ---
    with torch.no_grad():
        tokens = load_tokenizer()(LABELS, padding=True, return_tensors="pt")
        expected_text = tiny_clip_model.get_text_features(input_ids=tokens.input_ids,
                                                   attention_mask=tokens.attention_mask).pooler_output
    out = reference(tiny_clip_model, LABELS)
    torch.testing.assert_close(torch.nn.functional.normalize(image_features.cpu(), dim=-1), out.image_embeds,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(text_features.cpu(), expected_text, atol=1e-5, rtol=1e-5)


def test_label_probabilities_snippet(tiny_clip_folder, tiny_clip_model, clip_png):
    source = str(tiny_clip_folder)
    # --- the note's code ---
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, preprocess = clip.load(source, device=device)
    image = preprocess(Image.open("CLIP.png")).unsqueeze(0).to(device)
    text = clip.tokenize(["a diagram", "a dog", "a cat"]).to(device)
    with torch.no_grad():
        logits_per_image, logits_per_text = model(image, text)
        probs = logits_per_image.softmax(dim=-1).cpu().numpy()
    # --- end ---
    expected = reference(tiny_clip_model, LABELS)
    assert isinstance(probs, np.ndarray) and probs.shape == (1, 3)
    np.testing.assert_allclose(probs, expected.logits_per_image.softmax(-1).numpy(), atol=1e-5)
    torch.testing.assert_close(logits_per_text.cpu(), expected.logits_per_text, atol=1e-4, rtol=0)


# -- pieces ---------------------------------------------------------------------------------------


def test_tokenize_matches_openai_layout():
    ids = clip.tokenize(["a cat", "a photo of a dog"])
    assert ids.shape == (2, 77) and ids.dtype == torch.int32
    assert ids[0, :5].tolist() == [49406, 320, 2368, 49407, 0]  # start, tokens, end, zero padding
    assert clip.tokenize("a cat").shape == (1, 77)
    assert clip.tokenize("a cat", context_length=10).shape == (1, 10)
    assert clip.tokenize([]).shape == (0, 77)


def test_tokenize_long_text():
    text = "a cat " * 60
    with pytest.raises(PromptError, match=r"texts\[0\]: 'a cat a cat .*'\.\.\. is 122 tokens, longer than the "
                       "context length 77; shorten it or pass truncate=True"):
        clip.tokenize(text)
    ids = clip.tokenize(text, truncate=True)
    assert ids.shape == (1, 77) and ids[0, -1].item() == 49407 and (ids[0] != 0).all()


def test_tokenize_rejects_non_strings():
    with pytest.raises(PromptTypeError, match=r"texts\[1\]: expected a string, got int 3"):
        clip.tokenize(["a", 3])


def test_encode_text_drops_trailing_padding_without_changing_features(tiny_clip_folder, tiny_clip_model):
    model, _ = clip.load(str(tiny_clip_folder), device="cpu")
    ids = clip.tokenize(LABELS)
    with torch.no_grad():
        full = tiny_clip_model.get_text_features(input_ids=ids.long()).pooler_output  # all 77 positions
    torch.testing.assert_close(model.encode_text(ids), full, atol=1e-5, rtol=1e-5)


def test_model_attributes(tiny_clip_folder):
    model, preprocess = clip.load(str(tiny_clip_folder), device="cpu")
    assert model.dtype == torch.float32 and not model.training
    assert (model.context_length, model.input_resolution) == (77, 64)
    assert preprocess(Image.new("RGB", (100, 50))).shape == (3, 64, 64)
    assert preprocess(np.zeros((50, 100, 3), np.uint8)).shape == (3, 64, 64)
    assert "64x64" in repr(preprocess)


def test_openai_names_map_to_hub_ids(monkeypatch, tiny_clip_folder):
    import sdclip.models.loading

    seen = []
    real = sdclip.models.loading.load_clip_model

    def fake(source, **kwargs):
        seen.append(source)
        return real(tiny_clip_folder, **kwargs)

    monkeypatch.setattr(sdclip.models.loading, "load_clip_model", fake)
    for name in clip.available_models():
        clip.load(name, device="cpu")
    assert seen == ["openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14",
                    "openai/clip-vit-large-patch14-336"]


def test_load_errors(tiny_clip_folder):
    with pytest.raises(ModelSourceError, match="model 'RN50': OpenAI's ResNet CLIP models have no transformers port"):
        clip.load("RN50")
    with pytest.raises(ModelSourceError, match="jit=True: sdclip.clip has no TorchScript models; use jit=False"):
        clip.load(str(tiny_clip_folder), jit=True)
    with pytest.warns(UserWarning, match="download_root is ignored"):
        clip.load(str(tiny_clip_folder), device="cpu", download_root="/tmp/clip")
