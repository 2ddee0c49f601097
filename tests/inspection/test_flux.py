"""Inspection on Flux (T5's rows) and the empty-prompt cosines on SDXL, against diffusers' encode_prompt.

Every expected number is recomputed in float64 from the tensors the pipeline's own ``encode_prompt`` returns
(and, for neighbours, from T5's input-embedding table). Tolerance: 1e-5 on norms and cosines (fp32 encodings).
"""

from __future__ import annotations

import json

import pytest
import torch

from sdclip import TextConditioner
from sdclip.cli import main
from sdclip.inspection import compare, embedding_report, similarity_matrix, token_similarity

TOL = 1e-5
PROMPT = "a photo of a cat"


def cos64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


@pytest.fixture(scope="module")
def flux(flux_pipe):
    return TextConditioner.from_pipeline(flux_pipe)


def flux_reference(flux_pipe, prompts: list[str], **kwargs):
    with torch.inference_mode():
        embeds, pooled, _ = flux_pipe.encode_prompt(prompts, device="cpu", **kwargs)
    return embeds.double(), pooled.double()


def test_embedding_report_reads_t5_rows_with_t5_tokens(flux, flux_pipe):
    embeds, _ = flux_reference(flux_pipe, [PROMPT, ""])  # (2, 512, 384): the prompt and the empty text
    ids = flux_pipe.tokenizer_2(PROMPT).input_ids  # the text's tokens, then </s>
    report = embedding_report(flux, PROMPT, k=3)
    assert [(t.text, t.id, t.index) for t in report.tokens] == list(
        zip(flux_pipe.tokenizer_2.convert_ids_to_tokens(ids), ids, range(len(ids))))
    assert (report.pooled_reference, report.hidden_size, report.n_chunks) == ("t5_eos_hidden_state", 384, 1)
    rows, eos = embeds[0, : len(ids)], embeds[0, len(ids) - 1]
    assert max(abs(t.norm - n) for t, n in zip(report.tokens, rows.norm(dim=-1).tolist())) < TOL
    assert max(abs(t.cos_pooled - c) for t, c in zip(report.tokens, cos64(rows, eos[None]).tolist())) < TOL
    assert max(abs(t.cos_empty - c) for t, c in zip(report.tokens, cos64(rows, embeds[1, : len(ids)]).tolist())) < TOL
    table = flux_pipe.text_encoder_2.get_input_embeddings().weight.double()
    table = table / table.norm(dim=-1, keepdim=True)
    for token in report.tokens:
        sims = table @ table[token.id]
        sims[token.id] = -2.0  # not its own neighbour
        assert [n.id for n in token.nearest] == sims.topk(3).indices.tolist()


def test_embedding_report_shows_t5_weights(flux, flux_pipe):
    embeds, _ = flux_reference(flux_pipe, [PROMPT])
    report = embedding_report(flux, "a (photo:1.3) of a cat", syntax="a1111", k=0)
    assert [t.weight for t in report.tokens] == [1.0, 1.3, 1.0, 1.0, 1.0, 1.0]
    expected = embeds[0, :6].norm(dim=-1) * torch.tensor([1.0, 1.3, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert max(abs(t.norm - n) for t, n in zip(report.tokens, expected.tolist())) < TOL  # sd_embed's h * w


def test_embedding_report_flags_what_t5_cut(flux, flux_pipe):
    from sdclip import TruncationWarning

    with pytest.warns(TruncationWarning):
        report = embedding_report(flux, "a cat " * 300, k=0)  # 600 T5 tokens, 512 rows
    seen = [t for t in report.tokens if not t.truncated]
    cut = [t for t in report.tokens if t.truncated]
    assert len(seen) == 512 and seen[-1].text == "</s>" and len(cut) == 600 - 511
    assert all(t.norm is None and t.index is None for t in cut) and seen[-1].index == 511


def test_embedding_report_reads_compel_and_windows(flux, flux_pipe):
    from compel.convenience_wrappers import CompelForFlux

    prompt = '("a cat", "a dog").and()'  # compel: one 512-row T5 window per part
    with torch.inference_mode():
        embeds = CompelForFlux(flux_pipe)(prompt).embeds[0].double()  # (1024, 384)
    report = embedding_report(flux, prompt, syntax="compel", k=0)
    assert [(t.text, t.chunk, t.index) for t in report.tokens] == [
        ("▁a", 0, 0), ("▁cat", 0, 1), ("</s>", 0, 2), ("▁a", 1, 512), ("▁dog", 1, 513), ("</s>", 1, 514)]
    assert report.n_chunks == 2
    assert max(abs(t.norm - float(embeds[t.index].norm())) for t in report.tokens) < TOL


def test_compare_pools_clip_l_and_aligns_t5_rows(flux, flux_pipe):
    a, b = "a cat", "a red cat painting"
    embeds, pooled = flux_reference(flux_pipe, [a, b])
    length = len(flux_pipe.tokenizer_2(b).input_ids)  # the longer prompt's tokens and </s>
    result = compare(flux, a, b)
    assert abs(result.pooled_cosine - float(cos64(pooled[0], pooled[1]))) < TOL
    expected = cos64(embeds[0, :length], embeds[1, :length])
    assert len(result.position_cosine) == length
    assert max(abs(x - y) for x, y in zip(result.position_cosine, expected.tolist())) < TOL
    assert abs(result.mean_position_cosine - float(expected.mean())) < TOL
    rows = [(r.op, r.text_a, r.text_b, r.index_a, r.index_b) for r in result.alignment]
    assert rows == [("equal", "▁a", "▁a", 0, 0), ("insert", None, "▁red", None, 1),
                    ("equal", "▁cat", "▁cat", 1, 2), ("insert", None, "▁painting", None, 3),
                    ("equal", "</s>", "</s>", 2, 4)]
    paired = [r for r in result.alignment if r.cosine is not None]
    assert max(abs(r.cosine - float(cos64(embeds[0, r.index_a], embeds[1, r.index_b]))) for r in paired) < TOL


def test_token_and_prompt_similarities(flux, flux_pipe):
    embeds, pooled = flux_reference(flux_pipe, [PROMPT, "a dog"])
    matrix = token_similarity(flux, PROMPT)
    n = len(flux_pipe.tokenizer_2(PROMPT).input_ids)
    assert matrix.labels == flux_pipe.tokenizer_2.convert_ids_to_tokens(flux_pipe.tokenizer_2(PROMPT).input_ids)
    expected = cos64(embeds[0, :n, None], embeds[0, None, :n])  # (n, n)
    assert (torch.tensor(matrix.values, dtype=torch.float64) - expected).abs().max() < TOL
    prompts = similarity_matrix(flux, [PROMPT, "a dog"])  # CLIP-L's pooled vectors
    assert abs(prompts.values[0][1] - float(cos64(pooled[0], pooled[1]))) < TOL


def test_sdxl_cos_empty_is_against_the_encoded_empty_prompt(sdxl_pipe):
    # SDXL pipelines default to force_zeros_for_empty_prompt: the empty prompt must still be encoded, not zeros
    with torch.inference_mode():
        embeds = sdxl_pipe.encode_prompt([PROMPT, ""], device="cpu", do_classifier_free_guidance=False)[0].double()
    report = embedding_report(TextConditioner.from_pipeline(sdxl_pipe), PROMPT, k=0)
    expected = cos64(embeds[0, :7], embeds[1, :7]).tolist()
    assert max(abs(t.cos_empty - c) for t, c in zip(report.tokens, expected)) < TOL


@pytest.mark.slow
def test_cli_inspect_on_a_flux_folder(flux_pipeline_folder, flux_pipe, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["inspect", "a cat", "--compare", "a dog", "--model", str(flux_pipeline_folder), "--device", "cpu",
                 "--k", "2", "--json", str(out), "--plot", str(tmp_path / "plots")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "▁cat" in captured.out and "T5's </s>" in captured.out and "▁dog" in captured.out
    payload = json.loads(out.read_text())
    _, pooled = flux_reference(flux_pipe, ["a cat", "a dog"])
    assert [t["text"] for t in payload["report"]["tokens"]] == ["▁a", "▁cat", "</s>"]
    assert abs(payload["comparisons"][0]["pooled_cosine"] - float(cos64(pooled[0], pooled[1]))) < TOL
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "prompt_similarity.png", "token_report.png", "token_similarity.png"]
