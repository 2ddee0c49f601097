"""Fixtures of the CLI tests, imported by the test modules that use them.

Not a ``conftest.py``: under ``--doctest-modules`` a second ``conftest`` module name clashes with
tests/conftest.py ("import file mismatch").
"""

from __future__ import annotations

import pytest

from sdclip.testing import TINY_TEXT, TINY_VISION, random_clip_model, save_clip_folder


@pytest.fixture(scope="module")
def score_model_folder(tmp_path_factory):
    """A tiny CLIP (text + vision, 64 px images) folder for ``sdclip score``; the shared tiny-CLIP fixture
    in tests/conftest.py can stand in for it once it exists."""
    vision = {**TINY_VISION, "image_size": 64, "patch_size": 16}
    return save_clip_folder(random_clip_model(TINY_TEXT, vision, seed=4), tmp_path_factory.mktemp("tiny-clip"))
