"""Fixtures for tests/models: a tiny text encoder's weights, to be damaged one way at a time."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_text_weights():
    """(config dict, state dict with ``text_model.`` keys) of a tiny CLIP text encoder, as saved by transformers."""
    from sdclip.testing import TINY_TEXT, random_text_encoder

    model = random_text_encoder(TINY_TEXT)
    return model.config.to_dict(), {k: v.contiguous() for k, v in model.state_dict().items()}
