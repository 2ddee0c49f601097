"""Parsing is linear in the prompt's length (issue 16 #6), and equal to the upstream algorithms it replaces.

The fast scans are compared with the upstream algorithms transcribed as they are (A1111's regex split on
``BREAK``, ComfyUI's per-level ``parse_parentheses``), on generated prompts. Time bounds are about work:
1 MB must not cost much more than 10 x 100 kB, and stays under a generous absolute bound; both count
this process's CPU time, so other load on the machine does not decide them. (About 1 s CPU at most per
MB for these shapes, on the 2-core CI machine.)
"""

from __future__ import annotations

import math
import re
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdclip.errors import PromptError
from sdclip.prompts import a1111, comfy
from sdclip.prompts.a1111 import MAX_NESTING
from sdclip.prompts.parser import parse, parse_prompt

# ---------------------------------------------------------------- upstream, transcribed


def _a1111_break_split(chunk: str) -> list[str]:
    return re.split(r"\s*\bBREAK\b\s*", chunk)  # A1111 modules/prompt_parser.py, re_break


def _comfy_parse_parentheses(string: str) -> list[str]:  # ComfyUI comfy/sd1_clip.py
    result, current, nesting_level = [], "", 0
    for char in string:
        if char == "(":
            if nesting_level == 0:
                if current:
                    result.append(current)
                    current = "("
                else:
                    current = "("
            else:
                current += char
            nesting_level += 1
        elif char == ")":
            nesting_level -= 1
            if nesting_level == 0:
                result.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        result.append(current)
    return result


def _comfy_token_weights(string: str, current_weight: float) -> list[tuple[str, float]]:  # ComfyUI, finite weights
    out = []
    for x in _comfy_parse_parentheses(string):
        weight = current_weight
        if len(x) >= 2 and x[-1] == ")" and x[0] == "(":
            x = x[1:-1]
            xx = x.rfind(":")
            weight *= 1.1
            if xx > 0:
                try:
                    value = float(x[xx + 1 :])
                    if math.isfinite(value):  # sdclip's documented deviation: inf/nan literals are text
                        weight, x = value, x[:xx]
                except ValueError:
                    pass
            out += _comfy_token_weights(x, weight)
        else:
            out += [(x, current_weight)]
    return out


def _comfy_reference(text: str) -> list[tuple[str, float]]:
    escaped = text.replace("\\)", "\0\1").replace("\\(", "\0\2")
    return [(t.replace("\0\1", ")").replace("\0\2", "("), w) for t, w in _comfy_token_weights(escaped, 1.0)]


# ---------------------------------------------------------------- equal to upstream

COMFY_PIECES = ["(", ")", "((", "))", ":", ":1.5", ":2)", " ", "a", "b c", "\\(", "\\)", "\0\1", "\0\2", "1e2", "[", "]"]
BREAK_PIECES = ["BREAK", " ", "\n", "\t", "\u3000", "\xa0", "a", "_", "é", ",", "(", "1", "BREAKX", "xBREAK"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(COMFY_PIECES), max_size=40).map("".join))
def test_comfy_scan_equals_upstream(text: str) -> None:
    assert comfy._parse_comfy(text) == _comfy_reference(text)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(BREAK_PIECES), max_size=30).map("".join), st.text(max_size=30)))
def test_break_split_equals_upstream_regex(chunk: str) -> None:
    assert a1111._split_break(chunk) == _a1111_break_split(chunk)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(COMFY_PIECES + BREAK_PIECES + ["[", ":0.5]", "((a:1.2))"]), max_size=40).map("".join),
       st.sampled_from(["a1111", "comfy"]))
def test_the_pairs_shortcut_equals_the_typed_parse(text: str, syntax: str) -> None:
    """parse_prompt takes the syntax's own pairs (no Run objects); they must be what parse() gives."""
    try:
        typed = parse(text, syntax).to_pairs()
    except PromptError as error:  # a1111 refuses deep nesting: the shortcut must refuse it the same way
        with pytest.raises(PromptError, match=re.escape(str(error))):
            parse_prompt(text, syntax)
        return
    assert parse_prompt(text, syntax) == typed
    assert [type(weight) for _, weight in parse_prompt(text, syntax)] == [float] * len(typed)


def test_isspace_is_the_regex_whitespace() -> None:
    space = re.compile(r"\s")
    assert all(bool(space.fullmatch(chr(c))) == chr(c).isspace() for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)


def test_a1111_nesting_limit() -> None:
    inside = "(" * MAX_NESTING + "a" + ")" * MAX_NESTING
    assert parse_prompt(inside, "a1111") == [("a", math.prod([1.1] * MAX_NESTING))]
    weight = 1.1  # unclosed: round brackets apply first, then square ones, one multiplication each
    for _ in range(MAX_NESTING - 1):
        weight *= 1 / 1.1
    assert parse_prompt("[" * (MAX_NESTING - 1) + "(a", "a1111") == [("a", weight)]
    message = (
        r"^prompt '\[\[\[\[.*'\.\.\.: brackets nest more than 100 deep at character 100; the a1111 syntax reads "
        r"at most 100 levels \(escape literal brackets as \\\( \\\[, or use syntax='plain'\)$"
    )
    with pytest.raises(PromptError, match=message):
        parse_prompt("[" * 60 + "(" * 41 + "a", "a1111")
    assert parse_prompt("\\(" * 1000 + "a)" * 1000, "a1111")[0][1] == 1.0  # escaped and stray brackets: no depth


# ---------------------------------------------------------------- linear time

MB = 1_000_000


def _mixed(size: int) -> str:
    unit = "a (red:1.3) fox, [blurry] BREAK \\(x\\) ((snow)), (a (b:2) c:0.5) embedding:e :) ] "
    return (unit * (size // len(unit) + 1))[:size]


def _nested(size: int) -> str:
    return "(" * (size // 2) + ")" * (size // 2)


def _nested_runs(size: int) -> str:
    return "(a" * (size // 4) + ")" * (size // 4)


CASES = {
    "spaces": lambda n: " " * n,
    "spaces around BREAK": lambda n: " " * (n // 2) + "BREAK" + " " * (n // 2),
    "colon and spaces": lambda n: "(a:" + " " * n,
    "mixed": _mixed,
    "nested": _nested,
    "nested runs": _nested_runs,
    "unclosed": lambda n: "(" * n,
    "stray closers": lambda n: ")" * n,
}


def _seconds(text: str, syntax: str) -> float:
    best = math.inf
    for _ in range(2):
        start = time.process_time()
        try:
            parse_prompt(text, syntax)
        except PromptError:
            pass  # a1111 refuses deep nesting early: that counts as done
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("syntax", ["a1111", "comfy"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_megabyte_parses_in_linear_time(case: str, syntax: str) -> None:
    small, big = _seconds(CASES[case](MB // 10), syntax), _seconds(CASES[case](MB), syntax)
    assert big < 20 * max(small, 0.01), f"{case}: 100 kB {small:.3f} s, 1 MB {big:.3f} s: not linear"
    assert big < 5.0, f"{case}: 1 MB took {big:.2f} s"


def test_deep_comfy_nesting_is_linear_and_finite() -> None:
    text = "(" * 100_000 + "a" + ")" * 100_000
    start = time.process_time()
    [(part, weight)] = parse_prompt(text, "comfy")
    assert part == "a" and weight == sys.float_info.max  # 1.1 ** 100000 saturates: finite, documented
    assert time.process_time() - start < 2.0
