"""The scorer's text cache is bounded by entries and bytes; both bounds are checked before a model loads."""

from __future__ import annotations

import pytest

from sdclip import ClipScorer
from sdclip.errors import ScorerError


@pytest.mark.parametrize("name, value", [("cache_size", -1), ("cache_size", True), ("cache_bytes", "1 MB"),
                                         ("cache_bytes", None)])
def test_from_pretrained_checks_cache_bounds_before_loading(name, value, tmp_path):
    message = rf"{name}: expected an integer >= 0 \(0 disables the cache\), got {value!r}"
    with pytest.raises(ScorerError, match=message):
        ClipScorer.from_pretrained(tmp_path / "no-such-model", device="cpu", **{name: value})


def test_cache_bytes_bounds_the_cached_rows(tiny_clip_folder):
    """10 prompts of (D,) float32 rows: a bound of 3 rows' bytes keeps at most 3 (counted independently)."""
    reference_scorer = ClipScorer.from_pretrained(tiny_clip_folder, device="cpu")
    row_bytes = 4 * reference_scorer.feature_dim
    scorer = ClipScorer(reference_scorer.model, reference_scorer.tokenizer, cache_bytes=3 * row_bytes)
    scorer.text_features([f"prompt {i}" for i in range(10)])
    held = [value for _, value in scorer._cache.items()]
    assert 0 < len(held) <= 3
    assert sum(row.untyped_storage().nbytes() for row in held) <= 3 * row_bytes
