"""The contrastive loss against a float64 recomputation of its formula, written out with ``math``."""

from __future__ import annotations

import math

import pytest
import torch

from sdclip.training import LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, ClipLoss, clip_loss
from sdclip.training.loss import clamp_logit_scale_


def _reference(images: list[list[float]], texts: list[list[float]], log_scale: float) -> float:
    """Symmetric InfoNCE from the formula: mean over i of -log softmax_j(s cos(I_i, T_j))[i], both ways, halved."""
    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    images, texts = [unit(v) for v in images], [unit(v) for v in texts]
    scale = math.exp(min(log_scale, math.log(100)))
    logits = [[scale * sum(a * b for a, b in zip(i, t)) for t in texts] for i in images]
    n = len(images)

    def cross_entropy(rows):
        return sum(math.log(sum(math.exp(x) for x in row)) - row[k] for k, row in enumerate(rows)) / n

    columns = [[logits[i][j] for i in range(n)] for j in range(n)]
    return (cross_entropy(logits) + cross_entropy(columns)) / 2


@pytest.mark.parametrize("log_scale", [0.0, LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, 6.0])
def test_loss_matches_a_float64_recomputation(log_scale):
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    expected = _reference(images.tolist(), texts.tolist(), log_scale)
    got64 = clip_loss(images.double(), texts.double(), torch.tensor(log_scale, dtype=torch.float64))
    got32 = ClipLoss()(images, texts, torch.tensor(log_scale))
    assert float(got64) == pytest.approx(expected, rel=1e-12)
    assert float(got32) == pytest.approx(expected, rel=1e-5)


def test_temperature_is_clamped_at_ln_100_and_initialised_at_ln_1_over_0_07():
    assert LOGIT_SCALE_INIT == pytest.approx(math.log(1 / 0.07)) and LOGIT_SCALE_MAX == pytest.approx(math.log(100))
    images, texts = torch.randn(4, 3), torch.randn(4, 3)
    scale = torch.tensor(7.0, requires_grad=True)
    loss = clip_loss(images, texts, scale)
    loss.backward()
    assert loss.item() == pytest.approx(_reference(images.tolist(), texts.tolist(), 7.0), rel=1e-5)
    assert float(scale.grad) == 0.0  # above the clamp the temperature gets no gradient
    parameter = torch.nn.Parameter(torch.tensor(5.0))
    clamp_logit_scale_(parameter)
    assert parameter.item() == pytest.approx(math.log(100))


def test_gradient_matches_float64_finite_differences():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    texts = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    clip_loss(images, texts, torch.tensor(LOGIT_SCALE_INIT, dtype=torch.float64)).backward()
    step = 1e-6
    for i, j in [(0, 0), (2, 1), (3, 2)]:
        plus, minus = images.detach().clone(), images.detach().clone()
        plus[i, j] += step
        minus[i, j] -= step
        numeric = (_reference(plus.tolist(), texts.tolist(), LOGIT_SCALE_INIT)
                   - _reference(minus.tolist(), texts.tolist(), LOGIT_SCALE_INIT)) / (2 * step)  # fmt: skip
        assert float(images.grad[i, j]) == pytest.approx(numeric, rel=1e-6, abs=1e-9)
