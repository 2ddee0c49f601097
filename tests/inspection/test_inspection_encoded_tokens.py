"""Inspection reads the tokens from the Conditioning it inspects; its JSON is always strict JSON."""

from __future__ import annotations

import json

import pytest

from sdclip import inspection
from sdclip.cli.inspect_cmd import json_text


def test_reports_take_tokens_from_the_conditioning_not_a_second_parse(conditioner, monkeypatch):
    prompt = "a (photo:1.4) of a cat BREAK on a mat"
    expected = [(t.text, t.id, t.chunk, t.position, t.weight) for t in conditioner.parse(prompt, syntax="a1111", truncate=False)]
    monkeypatch.setattr(conditioner, "parse", lambda *a, **k: pytest.fail("inspection parsed the prompt again"))
    report = inspection.embedding_report(conditioner, prompt, syntax="a1111", truncate=False, k=1)
    assert [(t.text, t.id, t.chunk, t.position, t.weight) for t in report.tokens] == expected
    assert {t.chunk for t in report.tokens} == {0, 1}
    result = conditioner.encode(prompt, syntax="a1111", truncate=False)
    assert all(int(result.prompt_ids[0, t.index]) == t.id for t in report.tokens)  # each token at its row
    matrix = inspection.token_similarity(conditioner, prompt, syntax="a1111", truncate=False)
    assert len(matrix.labels) == len(expected)
    comparison = inspection.compare(conditioner, prompt, "a photo of a dog", syntax="a1111", truncate=False)
    assert {row.op for row in comparison.alignment} >= {"reweight", "replace"}


def test_inspect_json_is_strict_even_for_non_finite_numbers():
    payload = {"report": {"tokens": [{"norm": float("nan"), "cos": float("-inf")}, {"norm": 2.5}]}}
    text = json_text(payload)
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}")) == {
        "report": {"tokens": [{"norm": None, "cos": None}, {"norm": 2.5}]}
    }
