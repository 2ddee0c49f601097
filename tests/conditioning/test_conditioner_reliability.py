"""Issue 16 for the conditioner: threads, cache memory, non-finite weights, clear errors; and training."""

from __future__ import annotations

import threading

import pytest
import torch

from sdclip import EmbeddingError, PromptError, TextConditioner
from sdclip.models.loading import LoadedTextEncoder
from sdclip.models.tokenizer import load_tokenizer
from sdclip.testing import TINY_TEXT, random_text_encoder

ONE_LAYER = {**TINY_TEXT, "num_hidden_layers": 1}


def make(config: dict = ONE_LAYER, **options) -> TextConditioner:
    model = random_text_encoder(config, seed=5)
    return TextConditioner([LoadedTextEncoder(model, load_tokenizer(), None)], **options)


# -- #1 threads ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_eight_threads_share_one_conditioner_and_the_cache_holds_only_right_entries():
    cond = make(cache_size=1000)
    reference = TextConditioner(cond.encoders, cache_size=0)  # same model, its own path, no cache
    prompts = [f"a (photo:1.{i % 9}) of {'a red ' * (i % 4 * 30)}cat number {i}" for i in range(40)]
    expected = {p: reference.encode(p, "blurry", syntax="a1111", truncate=False) for p in prompts}
    errors, checked = [], []

    def work(seed: int) -> None:
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed)).tolist()
        try:
            for i in order[:25]:
                out = cond.encode(prompts[i], "blurry", syntax="a1111", truncate=False)
                want = expected[prompts[i]]
                assert out.prompt_embeds.shape == want.prompt_embeds.shape, prompts[i]
                torch.testing.assert_close(out.prompt_embeds, want.prompt_embeds, rtol=0, atol=1e-5)
                torch.testing.assert_close(out.negative_prompt_embeds, want.negative_prompt_embeds, rtol=0, atol=1e-5)
                checked.append(i)
        except Exception as error:  # noqa: BLE001 - reported below with the thread's error
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert len(checked) == 8 * 25
    entries = cond._cache.items()
    assert len(entries) >= len(prompts)
    for (index, text, _settings), (hidden, pooled, ids, chunked) in entries:
        k = len(chunked.chunks)
        assert hidden.shape == (k, 77, ONE_LAYER["hidden_size"]) and ids.tolist() == [list(c.ids) for c in chunked.chunks]
        if text is None:
            continue
        want = expected.get(text) or reference.encode("", text, syntax="a1111", truncate=False)
        rows = want.prompt_embeds[0] if text in expected else want.negative_prompt_embeds[0]
        torch.testing.assert_close(hidden.flatten(0, 1), rows[: 77 * k], rtol=0, atol=1e-5)


# -- #4 memory -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [300, pytest.param(3000, marks=pytest.mark.slow)])
def test_cache_holds_copies_of_its_entries_not_the_batch(n):
    cond = make()
    prompts = [f"cat {i}" for i in range(n)]
    cond.encode(prompts)
    entries = cond._cache.items()
    assert len(entries) == 256
    own = sum(t.numel() * t.element_size() for _, (hidden, pooled, ids, _) in entries for t in (hidden, pooled, ids))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for _, (hidden, pooled, ids, _) in entries for t in (hidden, pooled, ids)}  # fmt: skip
    assert sum(storages.values()) == own == cond._cache.nbytes
    assert own < 11 * 2**20  # 256 entries of (1, 77, 128) float32 and their ids: ~10 MB, not the whole batch


def test_cache_bytes_bound_evicts_the_oldest_entries():
    one_entry = 77 * 128 * 4 + 128 * 4 + 77 * 8  # hidden (1, 77, 128) f32, pooled (128,), ids (1, 77) int64
    cond = make(cache_bytes=5 * one_entry)
    cond.encode([f"dog {i}" for i in range(20)])
    assert len(cond._cache) == 5 and cond._cache.nbytes == 5 * one_entry
    assert [key[1] for key, _ in cond._cache.items()] == [f"dog {i}" for i in range(16, 20)] + [""]


# -- #3 non-finite ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "syntax"),
    [("(x:1e39)", "comfy"), ("(x:1e308)", "comfy"), ("(" * 1000 + "x" + ")" * 1000, "a1111"),
     ("(x:" + "9" * 50 + ")", "a1111")],
)  # fmt: skip
def test_a_weight_that_overflows_is_a_prompt_error_naming_the_text(prompt, syntax):
    cond = make()
    # 1000 nested a1111 brackets stop at the parser's nesting limit, before any weight is multiplied out
    expected = (r"prompt '\(+(x\S*)?': weight .* makes the conditioning infinite or NaN in torch.float32"
                r"|prompt '\(+'\.\.\.: brackets nest more than 100 deep")
    with pytest.raises(PromptError, match=expected):
        cond.encode(["a fine prompt", prompt], syntax=syntax)
    assert len(cond._cache) == 0  # nothing of the failed batch was kept
    assert torch.isfinite(cond.encode("(x:1e30)", syntax="comfy").prompt_embeds).all()  # large but finite is fine


# -- #14 clear errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, 0, 1.0, "2"])
def test_num_images_per_prompt_must_be_a_positive_integer(value):
    with pytest.raises(PromptError, match=rf"num_images_per_prompt: expected an integer >= 1, got {value!r}"):
        make().encode("a cat", num_images_per_prompt=value)


@pytest.mark.parametrize("value", ["x", -1, 2.5, True])
def test_cache_size_must_be_a_non_negative_integer(value, sd_pipe):
    message = rf"cache_size: expected an integer >= 0 \(0 disables the cache\), got {value!r}"
    with pytest.raises(PromptError, match=message):
        make(cache_size=value)
    with pytest.raises(PromptError, match=message):
        TextConditioner.from_pipeline(sd_pipe, cache_size=value)


def test_cache_bytes_must_be_a_non_negative_integer():
    with pytest.raises(PromptError, match=r"cache_bytes: expected an integer >= 0 \(0 disables the cache\), got '1 MB'"):
        make(cache_bytes="1 MB")


def _safetensors(path, tensors):
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


def test_embedding_with_zero_vectors_is_refused(tmp_path):
    path = _safetensors(tmp_path / "none.safetensors", {"emb_params": torch.zeros(0, 128)})
    with pytest.raises(EmbeddingError, match=r"embedding '.*none.safetensors': holds 0 vectors \(shape \(0, 128\)\)"):
        make().load_textual_inversion(path)


def test_embedding_full_of_nan_is_refused_naming_the_file(tmp_path):
    path = _safetensors(tmp_path / "broken.safetensors", {"emb_params": torch.full((2, 128), float("nan"))})
    with pytest.raises(EmbeddingError, match=r"embedding '.*broken.safetensors': vectors contain NaN or infinity"):
        make().load_textual_inversion(path)


def test_a1111_pt_with_empty_string_to_param_is_refused(tmp_path):
    path = tmp_path / "empty.pt"
    torch.save({"string_to_param": {}, "name": "empty"}, path)
    with pytest.raises(EmbeddingError, match=r"embedding '.*empty.pt': string_to_param is empty"):
        make().load_textual_inversion(path, allow_pickle=True)


# -- training --------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", ["plain", "a1111"])
def test_trainable_conditioner_lets_gradients_reach_the_text_encoder(syntax):
    cond = make(trainable=True)
    table = cond.text_encoder.get_input_embeddings().weight
    out = cond.encode(["a (cat:1.3)", "a (cat:1.3) on a mat"], syntax=syntax)
    assert out.prompt_embeds.requires_grad and len(cond._cache) == 0  # no cache: every call builds a graph
    (out.prompt_embeds.square().mean() + out.pooled_prompt_embeds.sum()).backward()
    cat = cond.tokenizer.convert_tokens_to_ids("cat</w>")
    assert table.grad is not None and table.grad[cat].abs().sum() > 0
    assert getattr(cond.text_encoder, "text_model", cond.text_encoder).encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0


def test_inference_is_still_the_default():
    cond = make()
    out = cond.encode("a cat")
    assert not out.prompt_embeds.requires_grad and len(cond._cache) == 2  # "a cat" and the negative ""
    with pytest.raises(PromptError, match=r"trainable: expected True or False, got 'yes'"):
        make(trainable="yes")


@pytest.mark.parametrize("name, value", [("cache_size", -1), ("cache_bytes", "1 MB")])
def test_from_pretrained_checks_cache_bounds_before_loading(name, value, tmp_path, sd_pipe):
    """A bad bound is reported before any model loads: the source here does not even exist."""
    message = rf"{name}: expected an integer >= 0 \(0 disables the cache\), got {value!r}"
    with pytest.raises(PromptError, match=message):
        TextConditioner.from_pretrained(tmp_path / "no-such-model", device="cpu", **{name: value})
    with pytest.raises(PromptError, match=message):
        TextConditioner.from_pipeline(sd_pipe, **{name: value})
