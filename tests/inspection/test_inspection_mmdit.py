"""Inspection on SD3 / Flux: T5 tokens with T5's ids, per-token reports on CLIP's rows (Flux's: tests/inspection/test_flux.py)."""

from __future__ import annotations

import pytest
import torch

from sdclip import TextConditioner
from sdclip.inspection import embedding_report, tokens


@pytest.mark.parametrize("source", [pytest.param("folder", marks=pytest.mark.slow), "conditioner"])
def test_tokens_lists_t5_tokens(source, sd3_pipe, sd3_pipeline_folder):
    src = sd3_pipeline_folder if source == "folder" else TextConditioner.from_pipeline(sd3_pipe)
    result = tokens("a (photo:1.3) of a cat", src, syntax="a1111")
    expected = sd3_pipe.tokenizer_3("a photo of a cat").input_ids
    assert [t.id for t in result.t5_tokens] == expected
    assert [t.weight for t in result.t5_tokens] == [1.0, 1.3, 1.0, 1.0, 1.0, 1.0]
    assert result.to_dict()["t5_tokens"][1]["id"] == expected[1]
    assert [t.id for t in result.tokens][1:3] == sd3_pipe.tokenizer("a photo").input_ids[1:3]


def test_embedding_report_reads_the_clip_rows_of_sd3(sd3_pipe):
    report = embedding_report(TextConditioner.from_pipeline(sd3_pipe), "a photo of a cat", k=0)
    with torch.inference_mode():
        embeds = sd3_pipe.encode_prompt("a photo of a cat", None, None, device="cpu")[0][0]  # (77 + 256, 384)
    norms = [t.norm for t in report.tokens]
    assert report.n_chunks == 1 and len(norms) == 7
    assert max(abs(n - float(embeds[i].norm())) for i, n in enumerate(norms)) < 1e-4

