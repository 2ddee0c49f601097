"""sdclip.inspection.schedules and `sdclip tokens --steps`: the schedule table, checked against A1111's
documented schedules and the sampler rule written out by hand."""

from __future__ import annotations

import json

import pytest

from sdclip.cli.app import main
from sdclip.errors import PromptError
from sdclip.inspection.schedules import schedule


def test_entries_follow_a1111():
    # A1111: g("a [b:3]") == [[3, 'a '], [10, 'a b']]; step i (from 0) uses the first entry ending >= i
    assert schedule("a [b:3]", steps=10).entries == ((3, 0, 3, "a "), (10, 4, 9, "a b"))
    # [x|y] over 3 steps: entries end 1, 2, 3; steps 0 and 1 use the first, 2 the second, none the third
    assert schedule("[x|y]", steps=3).entries == ((1, 0, 1, "x"), (2, 2, 2, "y"), (3, 3, 2, "x"))
    assert schedule("a [b:3]", steps=10, syntax="comfy").entries == ((10, 0, 9, "a [b:3]"),)
    assert json.loads(json.dumps(schedule("[x|y]", steps=2).to_dict()))["entries"][1]["text"] == "y"


def test_steps_checked():
    with pytest.raises(PromptError, match=r"^steps: expected an integer >= 1 \(the pipeline's num_inference_steps\), got 0$"):
        schedule("a", steps=0)


def test_cli_tokens_steps(capsys):
    assert main(["tokens", "--syntax", "a1111", "--steps", "4", "a [cat:dog:0.5] on a mat"]) == 0
    out = capsys.readouterr().out
    assert "'a [cat:dog:0.5] on a mat': 2 texts over 4 steps" in out  # the title is text, not markup or emoji
    assert "'a cat on a mat'" in out and "'a dog on a mat'" in out
    assert out.count("<|startoftext|>") == 2  # the tokens of each distinct text
