"""Tests for sdclip.conditioning.weighting against float64 references written here with plain loops."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from sdclip.conditioning import weighting
from sdclip.errors import PromptError
from sdclip.conditioning.weighting import apply_weights

B, T, H = 3, 77, 16


def reference(hidden: np.ndarray, weights: np.ndarray, mode: str, empty: np.ndarray | None = None) -> np.ndarray:
    """The three formulas, one number at a time, in float64."""
    hidden = hidden.astype(np.float64)
    out = np.empty_like(hidden)
    n_batch, n_tokens, n_channels = hidden.shape
    for b in range(n_batch):
        original_sum = weighted_sum = 0.0
        for t in range(n_tokens):
            w = float(weights[b, t])
            for c in range(n_channels):
                x = hidden[b, t, c]
                if mode == "comfy":
                    e = empty[min(b, empty.shape[0] - 1), t, c]
                    out[b, t, c] = x if w == 1.0 else (x - e) * w + e
                else:
                    out[b, t, c] = x * w
                original_sum += x
                weighted_sum += x * w
        if mode == "a1111":  # restore this row's mean: sum ratio == mean ratio (same element count)
            out[b] *= original_sum / weighted_sum
    return out


def a1111_whole_batch(hidden: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A1111's EmphasisOriginal as written upstream: one mean over the whole batch."""
    z = hidden.astype(np.float64) * weights[..., None]
    return z * (hidden.astype(np.float64).mean() / z.mean())


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, T, H, generator=generator, dtype=torch.float64) + 0.5  # mean well away from 0
    weights = torch.ones(B, T, dtype=torch.float64)
    weights[:, 1:10] = torch.tensor([1.1, 1.21, 0.5, 1.5, 0.0, -1.0, 2.0, 0.9090909, 1.3])
    weights[1, 20:30] = 1.4
    empty = torch.randn(1, T, H, generator=generator, dtype=torch.float64)
    return hidden, weights, empty


@pytest.mark.parametrize("mode", ["a1111", "comfy", "multiply"])
def test_matches_float64_reference(data, mode: str) -> None:
    hidden, weights, empty = data
    got = apply_weights(hidden, weights, mode=mode, empty_hidden=empty)
    expected = reference(hidden.numpy(), weights.numpy(), mode, empty.numpy())
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_comfy_with_per_row_empty_hidden(data) -> None:
    hidden, weights, _ = data
    empty = torch.randn(B, T, H, dtype=torch.float64)
    got = apply_weights(hidden, weights, mode="comfy", empty_hidden=empty)
    np.testing.assert_allclose(got.numpy(), reference(hidden.numpy(), weights.numpy(), "comfy", empty.numpy()), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["a1111", "comfy", "multiply"])
def test_lower_precision_within_rounding_of_reference(data, mode: str, dtype: torch.dtype) -> None:
    hidden, weights, empty = (x.to(dtype) for x in data)
    got = apply_weights(hidden, weights.float(), mode=mode, empty_hidden=empty)
    assert got.dtype == dtype
    expected = reference(hidden.double().numpy(), weights.double().numpy(), mode, empty.double().numpy())
    tolerance = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]  # ~2 ulp at |x| <= 4
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=tolerance, atol=tolerance * 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["a1111", "comfy", "multiply"])
def test_all_ones_leave_input_unchanged(data, mode: str, dtype: torch.dtype) -> None:
    hidden, _, empty = (x.to(dtype) for x in data)
    got = apply_weights(hidden, torch.ones(B, T), mode=mode, empty_hidden=empty)
    assert got.dtype == dtype and torch.equal(got, hidden)


def test_comfy_leaves_weight_one_tokens_bit_for_bit(data) -> None:
    hidden, weights, empty = (x.to(torch.float16) for x in data)
    got = apply_weights(hidden, weights, mode="comfy", empty_hidden=empty)
    untouched = weights == 1.0
    assert torch.equal(got[untouched], hidden[untouched])
    assert not torch.equal(got[~untouched], hidden[~untouched])


def test_a1111_per_row_equals_a1111_whole_batch_at_batch_size_one(data) -> None:
    hidden, weights, _ = data
    for row in range(B):
        one_hidden, one_weights = hidden[row : row + 1], weights[row : row + 1]
        got = apply_weights(one_hidden, one_weights, mode="a1111")
        np.testing.assert_allclose(got.numpy(), a1111_whole_batch(one_hidden.numpy(), one_weights.numpy()), rtol=1e-12)


def test_a1111_per_row_differs_from_whole_batch_when_rows_differ(data) -> None:
    """The documented difference: upstream's mean spans the batch, so rows influence each other."""
    hidden, weights, _ = data
    got = apply_weights(hidden, weights, mode="a1111").numpy()
    assert not np.allclose(got, a1111_whole_batch(hidden.numpy(), weights.numpy()), rtol=1e-6)


def test_a1111_keeps_each_rows_mean(data) -> None:
    hidden, weights, _ = data
    got = apply_weights(hidden, weights, mode="a1111")
    np.testing.assert_allclose(got.mean(dim=(1, 2)).numpy(), hidden.mean(dim=(1, 2)).numpy(), rtol=1e-12)


def test_fp16_means_do_not_overflow() -> None:
    hidden = torch.full((1, T, 768), 30000.0, dtype=torch.float16)  # sum of one row ~1.8e9, fp16 max 65504
    weights = torch.ones(1, T)
    weights[0, 5] = 2.0
    got = apply_weights(hidden, weights, mode="a1111")
    expected = reference(hidden.double().numpy(), weights.double().numpy(), "a1111")
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-3)


def test_a1111_zero_weighted_mean_only_multiplies() -> None:
    hidden = torch.ones(1, 2, 2)
    got = apply_weights(hidden, torch.tensor([[1.0, -1.0]]), mode="a1111")
    assert torch.equal(got, torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]]))


def test_unknown_mode() -> None:
    with pytest.raises(PromptError, match=r"^mode: expected one of 'a1111', 'comfy', 'multiply', got 'original'$"):
        apply_weights(torch.ones(1, 2, 2), torch.ones(1, 2), mode="original")


def test_comfy_needs_empty_hidden() -> None:
    with pytest.raises(PromptError, match=r"^empty_hidden: mode 'comfy' needs the hidden states of the empty prompt"):
        apply_weights(torch.ones(1, 2, 2), torch.ones(1, 2), mode="comfy")


def test_shape_mismatches() -> None:
    with pytest.raises(PromptError, match=r"^weights: expected shape \(B, T\) = \(1, 2\) .* got weights \(1, 3\)"):
        apply_weights(torch.ones(1, 2, 2), torch.ones(1, 3), mode="multiply")
    with pytest.raises(PromptError, match=r"^empty_hidden: expected shape \(1, T, H\) or \(B, T, H\) .* got \(2, 2, 2\)$"):
        apply_weights(torch.ones(3, 2, 2), torch.ones(3, 2), mode="comfy", empty_hidden=torch.ones(2, 2, 2))


def test_examples_in_docstrings() -> None:
    result = doctest.testmod(weighting)
    assert result.attempted > 0 and result.failed == 0
