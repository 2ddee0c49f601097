"""sdclip.inspection and ``sdclip inspect``: every number against a direct float64 recomputation.

The references call the tiny pipeline's text encoder themselves (tokenizer → model → hidden states),
so they share no code with ``TextConditioner``; nearest tokens are found by brute force in numpy.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from rich.console import Console

from sdclip.inspection import api as inspection
from sdclip.cli import main
from sdclip.conditioning.conditioner import TextConditioner
from sdclip.errors import PromptError, PromptTypeError
from sdclip.models.loading import LoadedTextEncoder
from sdclip.testing import TINY_TEXT, random_text_encoder, tiny_sd_pipeline
from sdclip.models.tokenizer import load_tokenizer

TOL = 1e-5  # float32 model vs float64 reference, on values of order 1
LONG = "a photo of a cat, " + "very " * 80 + "detailed"


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline()


@pytest.fixture(scope="module")
def cond(pipe):
    return TextConditioner([LoadedTextEncoder(pipe.text_encoder, pipe.tokenizer, None)])


@pytest.fixture(scope="module")
def projected():
    """A text encoder with a text projection: its pooled output lives in another space (width 96)."""
    return TextConditioner([LoadedTextEncoder(random_text_encoder(TINY_TEXT, projection=True, seed=1),
                                              load_tokenizer(), None)])  # fmt: skip


@pytest.fixture(scope="module")
def model_folder(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    pipe.text_encoder.save_pretrained(folder)
    return folder


def reference(model, tokenizer, prompt: str, *, layer: int | None = None) -> dict:
    """Hidden states (77, H), first-EOS row and pooled output in float64, straight from the model."""
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=layer is not None)
        hidden = out.last_hidden_state[0]
        if layer is not None:
            hidden = model.text_model.final_layer_norm(out.hidden_states[layer][0]) if hasattr(model, "text_model") \
                else model.final_layer_norm(out.hidden_states[layer][0])
    eos = int((ids[0] == tokenizer.eos_token_id).nonzero()[0])
    pooled = out.text_embeds[0] if hasattr(out, "text_embeds") else out.pooler_output[0]
    return {"ids": ids[0], "hidden": hidden.double(), "eos": eos, "pooled": pooled.double(),
            "eos_state": out.last_hidden_state[0, eos].double()}  # fmt: skip


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


# -- tokens --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["none", "tokenizer", "conditioner", "folder"])
def test_tokens_match_the_tokenizer(cond, model_folder, source):
    given = {"none": None, "tokenizer": load_tokenizer(), "conditioner": cond, "folder": str(model_folder)}[source]
    result = inspection.tokens("a photo of a cat", given)
    ids = load_tokenizer()("a photo of a cat").input_ids
    assert [t.id for t in result.tokens] == ids
    assert [t.position for t in result.tokens] == list(range(len(ids)))
    assert {(t.chunk, t.weight, t.truncated) for t in result.tokens} == {(0, 1.0, False)}
    assert result.tokens[0].text == "<|startoftext|>" and result.tokens[-1].text == "<|endoftext|>"


def test_tokens_flag_truncation():
    result = inspection.tokens(LONG)
    ids = load_tokenizer()(LONG).input_ids
    kept = [t for t in result.tokens if not t.truncated]
    assert len(kept) == 77 and kept[-1].text == "<|endoftext|>"
    assert len(result.truncated) == len(ids) - 77
    assert [t.id for t in result.truncated] == ids[76:-1]
    assert [t.position for t in result.truncated] == list(range(76, 76 + len(result.truncated)))


def test_tokens_rows_dict_and_table():
    result = inspection.tokens(LONG)
    assert result.to_rows()[1] == {"text": "a</w>", "id": 320, "chunk": 0, "position": 1, "weight": 1.0,
                                   "truncated": False}  # fmt: skip
    assert result.to_dict()["tokens"] == result.to_rows()
    console = Console(record=True, width=200)
    console.print(result)
    text = console.export_text()
    assert "truncated" in text and "<|startoftext|>" in text and "a</w>" in text


@pytest.mark.parametrize("bad, error, message", [
    ({"syntax": "markdown"}, PromptError, "syntax: expected one of 'plain', 'a1111', 'comfy', 'compel', got 'markdown'"),
    ({"prompt": 3}, PromptTypeError, "prompt: expected a string, got int"),
])  # fmt: skip
def test_tokens_errors(bad, error, message):
    with pytest.raises(error, match=message):
        inspection.tokens(bad.pop("prompt", "a cat"), **bad)


def test_syntax_reaches_tokens_and_reports(cond):
    # weights come through, with or without a model
    for source in (cond, load_tokenizer(), None):
        result = inspection.tokens("a (cat:1.5)", source, syntax="a1111")
        assert [(t.text, t.weight) for t in result.tokens if t.text == "cat</w>"] == [("cat</w>", 1.5)]
    report = inspection.embedding_report(cond, "a (cat:1.5)", syntax="a1111", k=0)
    assert [t.weight for t in report.tokens if t.text == "cat</w>"] == [1.5]
    long = inspection.embedding_report(cond, LONG, truncate=False, k=0)
    assert long.n_chunks == 2 and not any(t.truncated for t in long.tokens)


# -- embedding report ----------------------------------------------------------------------------


def test_embedding_report_matches_direct_computation(pipe, cond):
    prompt = "a photo of an astronaut riding a horse"
    report = inspection.embedding_report(cond, prompt, k=4)
    ref = reference(pipe.text_encoder, pipe.tokenizer, prompt)
    empty = reference(pipe.text_encoder, pipe.tokenizer, "")
    assert report.pooled_reference == "pooled" and report.hidden_size == 128 and report.n_chunks == 1
    assert [t.id for t in report.tokens] == [int(i) for i in ref["ids"][: ref["eos"] + 1]]
    for t in report.tokens:
        state = ref["hidden"][t.index]
        assert t.index == t.position
        assert t.norm == pytest.approx(float(state.norm()), rel=TOL)
        assert t.cos_pooled == pytest.approx(cos(state, ref["pooled"]), abs=TOL)
        assert t.cos_empty == pytest.approx(cos(state, empty["hidden"][t.position]), abs=TOL)
    assert report.tokens[0].cos_empty == pytest.approx(1.0, abs=TOL)  # BOS sees nothing yet: causal attention
    assert report.tokens[-1].cos_pooled == pytest.approx(1.0, abs=TOL)  # pooled is the EOS state


def brute_force_nearest(table: torch.Tensor, token_id: int, k: int) -> list[tuple[int, float]]:
    vectors = table.double().numpy()
    target = vectors[token_id]
    cosines = vectors @ target / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(target))
    cosines[token_id] = -np.inf
    order = np.argsort(-cosines, kind="stable")[:k]
    return [(int(i), float(cosines[i])) for i in order]


def test_nearest_tokens_match_brute_force(pipe, cond):
    report = inspection.embedding_report(cond, "a cat on a sofa", k=5)
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    for t in report.tokens:
        expected = brute_force_nearest(table, t.id, 5)
        assert [n.id for n in t.nearest] == [i for i, _ in expected]
        assert [n.cosine for n in t.nearest] == pytest.approx([c for _, c in expected], abs=TOL)
        assert [n.text for n in t.nearest] == pipe.tokenizer.convert_ids_to_tokens([i for i, _ in expected])
    assert inspection.embedding_report(cond, "a cat", k=0).tokens[1].nearest == []


def test_learned_token_neighbours():
    """A textual-inversion-style token set between 'cat' and 'dog' has those two as its nearest tokens."""
    tokenizer = copy.deepcopy(load_tokenizer())  # the shipped tokenizer is shared: never add tokens to it
    tokenizer.add_tokens(["<catdog>"])
    model = random_text_encoder(TINY_TEXT, seed=2)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = model.get_input_embeddings().weight
    cat, dog = tokenizer.convert_tokens_to_ids(["cat</w>", "dog</w>"])
    with torch.no_grad():
        table[-1] = table[cat] / table[cat].norm() + table[dog] / table[dog].norm()
    learned = TextConditioner([LoadedTextEncoder(model, tokenizer, None)])
    report = inspection.embedding_report(learned, "a photo of <catdog>", k=2)
    token = next(t for t in report.tokens if t.text == "<catdog>")
    assert token.id == len(tokenizer) - 1
    assert {n.text for n in token.nearest} == {"cat</w>", "dog</w>"}
    assert [n.cosine for n in token.nearest] == pytest.approx([c for _, c in brute_force_nearest(
        table.detach(), token.id, 2)], abs=TOL)  # fmt: skip


def test_embedding_report_with_projection_uses_the_eos_state(projected):
    model = projected.text_encoder
    prompt = "a red car in the rain"
    report = inspection.embedding_report(projected, prompt, k=0)
    ref = reference(model, projected.tokenizer, prompt)
    assert report.pooled_reference == "eos_hidden_state"
    assert ref["pooled"].shape[-1] == 96 and report.hidden_size == 128  # the pooled is projected elsewhere
    for t in report.tokens:
        assert t.cos_pooled == pytest.approx(cos(ref["hidden"][t.index], ref["eos_state"]), abs=TOL)


def test_embedding_report_with_clip_skip(pipe, cond):
    prompt = "a watercolor of a fox"
    report = inspection.embedding_report(cond, prompt, k=0, clip_skip=1)
    ref = reference(pipe.text_encoder, pipe.tokenizer, prompt, layer=-2)  # penultimate layer, final norm
    assert report.pooled_reference == "eos_hidden_state"
    eos_state = ref["hidden"][ref["eos"]]
    for t in report.tokens:
        assert t.norm == pytest.approx(float(ref["hidden"][t.index].norm()), rel=TOL)
        assert t.cos_pooled == pytest.approx(cos(ref["hidden"][t.index], eos_state), abs=TOL)


def test_embedding_report_truncated_tokens(cond):
    with pytest.warns(UserWarning, match="longer than the 77-token limit"):
        report = inspection.embedding_report(cond, LONG, k=1)
    seen = [t for t in report.tokens if not t.truncated]
    cut = [t for t in report.tokens if t.truncated]
    assert len(seen) == 77 and len(cut) == len(load_tokenizer()(LONG).input_ids) - 77
    assert all(t.norm is None and t.cos_empty is None and t.nearest == [] and t.index is None for t in cut)
    rows = report.to_rows()
    assert rows[-1]["truncated"] and rows[-1]["norm"] is None
    assert rows[1]["nearest"].startswith(report.tokens[1].nearest[0].text)
    console = Console(record=True, width=220)
    console.print(report)
    assert "truncated (not seen)" in console.export_text()
    assert json.loads(json.dumps(report.to_dict()))["tokens"][1]["nearest"][0]["id"] == report.tokens[1].nearest[0].id


# -- comparisons ---------------------------------------------------------------------------------


def test_compare_matches_direct_computation(pipe, cond):
    a, b = "a photo of a cat", "a photo of a dog"
    result = inspection.compare(cond, a, b)
    ref_a, ref_b = (reference(pipe.text_encoder, pipe.tokenizer, p) for p in (a, b))
    assert result.pooled_cosine == pytest.approx(cos(ref_a["pooled"], ref_b["pooled"]), abs=TOL)
    per_position = [cos(x, y) for x, y in zip(ref_a["hidden"], ref_b["hidden"])]
    assert result.position_cosine == pytest.approx(per_position, abs=TOL)
    assert result.mean_position_cosine == pytest.approx(float(np.mean(per_position)), abs=TOL)
    assert [(r.op, r.text_a, r.text_b) for r in result.alignment if r.op != "equal"] == [
        ("replace", "cat</w>", "dog</w>")
    ]
    for r in result.alignment:
        assert r.cosine == pytest.approx(cos(ref_a["hidden"][r.index_a], ref_b["hidden"][r.index_b]), abs=TOL)
    assert [r.cosine for r in result.alignment[:5]] == pytest.approx([1.0] * 5, abs=TOL)  # before the change


def test_compare_insertions(cond):
    result = inspection.compare(cond, "a cat", "a black cat")
    assert [(r.op, r.text_a, r.text_b, r.index_a, r.index_b) for r in result.alignment] == [
        ("equal", "<|startoftext|>", "<|startoftext|>", 0, 0),
        ("equal", "a</w>", "a</w>", 1, 1),
        ("insert", None, "black</w>", None, 2),
        ("equal", "cat</w>", "cat</w>", 2, 3),
        ("equal", "<|endoftext|>", "<|endoftext|>", 3, 4),
    ]
    assert result.alignment[2].cosine is None
    reverse = inspection.compare(cond, "a black cat", "a cat")
    assert [r.op for r in reverse.alignment] == ["equal", "equal", "delete", "equal", "equal"]
    assert result.to_rows()[2]["op"] == "insert"
    console = Console(record=True, width=200)
    console.print(result)
    text = console.export_text()
    assert "pooled cosine 0.9" in text and "insert" in text and "black</w>" in text


def test_compare_marks_reweighted_tokens(cond):
    """Same token, other weight: 'reweight' (the weights come from the conditioning's chunks)."""
    result = inspection.compare(cond, "a cat", "a (cat:1.5)", syntax="a1111")
    assert [(r.op, r.weight_a, r.weight_b) for r in result.alignment][2] == ("reweight", 1.0, 1.5)


def test_similarity_matrix_matches_direct_computation(pipe, cond):
    prompts = ["a cat", "a dog", "an oil painting of a lighthouse"]
    matrix = inspection.similarity_matrix(cond, prompts)
    pooled = [reference(pipe.text_encoder, pipe.tokenizer, p)["pooled"] for p in prompts]
    expected = [[cos(x, y) for y in pooled] for x in pooled]
    assert matrix.labels == prompts and matrix.kind == "prompts"
    assert np.allclose(matrix.values, expected, atol=TOL)
    assert len(matrix.to_rows()) == 9 and matrix.to_rows()[1] == {"a": "a cat", "b": "a dog",
                                                                   "cosine": matrix.values[0][1]}  # fmt: skip


def test_token_similarity_matches_direct_computation(pipe, cond):
    matrix = inspection.token_similarity(cond, "a cat on a mat")
    ref = reference(pipe.text_encoder, pipe.tokenizer, "a cat on a mat")
    states = ref["hidden"][: ref["eos"] + 1]
    expected = [[cos(x, y) for y in states] for x in states]
    assert matrix.labels == ["<|startoftext|>", "a", "cat", "on", "a", "mat", "<|endoftext|>"]
    assert np.allclose(matrix.values, expected, atol=TOL)


@pytest.mark.parametrize("call, error, message", [
    (lambda c: inspection.similarity_matrix(c, []), PromptError, "prompts: expected a non-empty list"),
    (lambda c: inspection.similarity_matrix(c, ["a", 2]), PromptTypeError, r"prompts\[1\]: expected a string"),
    (lambda c: inspection.compare(c, "a", None), PromptTypeError, "prompt_b: expected a string, got NoneType"),
    (lambda c: inspection.embedding_report(c, "a", k=-1), PromptError, "k: expected an integer >= 0, got -1"),
    (lambda c: inspection.embedding_report(c, "a", weighting="loud"), PromptError, "weighting: expected None or one of 'a1111', 'comfy', 'multiply', got 'loud'"),
])  # fmt: skip
def test_api_errors(cond, call, error, message):
    with pytest.raises(error, match=message):
        call(cond)


# -- docstring examples --------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["sdclip.inspection.api", "sdclip.plots", "sdclip.scoring.score_files"])
def test_docstring_examples_run(cond, module):
    import doctest
    import importlib

    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder().find(importlib.import_module(module), extraglobs={"cond": cond})
    assert sum(len(test.examples) for test in tests) >= 3
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_inspect(model_folder, tmp_path, capsys, cond):
    from PIL import Image

    out = tmp_path / "plots"
    code = main(["inspect", "a photo of a cat", "--compare", "a photo of a dog", "--compare", "a red car",
                 "--model", str(model_folder), "--device", "cpu", "--k", "2", "--plot", str(out),
                 "--json", str(tmp_path / "report.json")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "cat</w>" in captured.out and "pooled cosine" in captured.out and "replace" in captured.out
    payload = json.loads((tmp_path / "report.json").read_text())
    report = inspection.embedding_report(cond, "a photo of a cat", k=2)  # same weights, loaded another way
    assert [t["norm"] for t in payload["report"]["tokens"]] == pytest.approx([t.norm for t in report.tokens], rel=TOL)
    assert payload["similarity"]["labels"] == ["a photo of a cat", "a photo of a dog", "a red car"]
    for name in ("token_similarity.png", "token_report.png", "prompt_similarity.png"):
        path = out / name
        assert path.is_file() and path.stat().st_size > 10_000, name
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 250, (name, image.size)


@pytest.mark.parametrize("argv, message", [
    (["--syntax", "markdown"], "sdclip inspect: error: syntax: expected one of 'plain', 'a1111', 'comfy', 'compel', got 'markdown'"),
    (["--weighting", "loud"], "sdclip inspect: error: weighting: expected None or one of 'a1111', 'comfy', 'multiply', got 'loud'"),
    (["--model", "no/such/folder"], "sdclip inspect: error: model 'no/such/folder': no such file or folder"),
    (["--json", "out.txt"], "sdclip inspect: error: --json 'out.txt': expected a file ending in .json"),
])  # fmt: skip
def test_cli_inspect_errors(argv, message, capsys, model_folder):
    argv = (["--model", str(model_folder)] if "--model" not in argv else []) + argv
    assert main(["inspect", "a cat", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message)
