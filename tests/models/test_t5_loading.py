"""T5 loading errors that need no weights (the weighted cases are in tests/models/test_mmdit_sources.py, marked slow)."""

from __future__ import annotations

import pytest

from sdclip import ModelSourceError, TextConditioner


def test_a_t5_without_a_tokenizer_fails_before_any_weights_are_read(tmp_path):
    missing = tmp_path / "t5xxl_fp16.safetensors"  # never opened: the tokenizer is checked first
    with pytest.raises(ModelSourceError, match=r"^t5 '.*t5xxl_fp16.safetensors': no T5 tokenizer given; pass "
                       r"t5_tokenizer= a folder with tokenizer.json or spiece.model"):
        TextConditioner.from_files(clip_l=tmp_path / "clip_l.safetensors", t5=missing, family="flux", device="cpu")
    with pytest.raises(ModelSourceError, match=r"^t5 '.*': '.*empty' holds no tokenizer.json or spiece.model; pass"):
        (tmp_path / "empty").mkdir()
        TextConditioner.from_files(clip_l=tmp_path / "clip_l.safetensors", t5=missing, family="flux", device="cpu",
                                   t5_tokenizer=tmp_path / "empty")


def test_a_path_that_is_no_t5_source_is_named(tmp_path):
    from sdclip.models.t5 import load_t5

    with pytest.raises(ModelSourceError, match=r"^t5 '.*nothing.bin': expected a T5EncoderModel folder or a "
                       r".safetensors file, found nothing at that path$"):
        load_t5(tmp_path / "nothing.bin", device="cpu", dtype=None)
