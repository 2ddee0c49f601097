"""The aggregate metrics' functional core: (sum, count) states merge to exactly the whole run's value.
(``tests/scoring/test_clip_scorer.py`` checks ``ClipScorer.clip_score`` against torchmetrics' CLIPScore.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sdclip.scoring.metrics import ClipScoreState, ClipSState, clip_s, clip_score


@pytest.fixture
def cosines():
    return torch.from_numpy(np.random.RandomState(0).uniform(-0.3, 0.6, 1001)).float()


def reference_clip_score(cos: torch.Tensor) -> float:
    """torchmetrics' definition in float64: max(100 * mean(cos), 0)."""
    return max(100 * cos.double().mean().item(), 0.0)


def reference_clip_s(cos: torch.Tensor, w: float = 2.5) -> float:
    """Hessel et al. in float64: mean(w * max(cos, 0))."""
    return (w * cos.double().clamp(min=0)).mean().item()


@pytest.mark.parametrize("splits", [[1], [500], [3, 400, 998], list(range(1, 1001, 97))])
def test_merged_states_equal_the_whole(cosines, splits):
    parts = torch.tensor_split(cosines, splits)
    for state_type, reference in ((ClipScoreState, reference_clip_score), (ClipSState, reference_clip_s)):
        merged = state_type()
        for part in parts:
            merged = merged.merge(state_type.from_cosines(part))
        whole = state_type.from_cosines(cosines)
        assert merged.count == whole.count == 1001
        assert merged.compute() == pytest.approx(whole.compute(), rel=1e-12)
        assert merged.compute() == pytest.approx(reference(cosines), rel=1e-9)


def test_update_is_merge(cosines):
    state = ClipScoreState().update(cosines[:10]).update(cosines[10:])
    assert state == ClipScoreState.from_cosines(cosines[:10]).merge(ClipScoreState.from_cosines(cosines[10:]))


def test_functional_forms(cosines):
    assert clip_score(cosines).dtype == torch.float32 and clip_score(cosines).shape == ()
    assert clip_score(cosines).item() == pytest.approx(reference_clip_score(cosines), rel=1e-6)
    assert clip_s(cosines, w=1.0).item() == pytest.approx(reference_clip_s(cosines, 1.0), rel=1e-6)


def test_clip_score_clamps_the_mean_clip_s_each_pair():
    cos = torch.tensor([0.3, -0.1, -0.4])
    assert clip_score(cos).item() == 0.0  # mean -0.0667, clamped
    assert clip_s(cos).item() == pytest.approx(2.5 * 0.3 / 3)


def test_empty_and_mismatched_states():
    assert math.isnan(ClipScoreState().compute()) and math.isnan(ClipSState().compute())
    with pytest.raises(ValueError, match="clip_s: cannot merge states with w=2.5 and w=1.0"):
        ClipSState(w=2.5).merge(ClipSState(w=1.0))
