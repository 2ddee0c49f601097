"""Tests for sdclip.prompts.parser: A1111 and ComfyUI weighting syntax.

Expected values are transcribed from A1111's ``parse_prompt_attention`` docstring or worked by hand from
the upstream rules; where a weight is a product it is written as that product (``1.1 * 1.5``), in the
order upstream multiplies (innermost bracket first), so the float matches to the last bit.
"""

from __future__ import annotations

import doctest
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdclip.prompts import parser as prompt_parser
from sdclip.errors import PromptError, PromptTypeError
from sdclip.prompts.parser import SYNTAXES, parse_prompt

BIG = "9" * 300  # float() reads this as 1e300: two of them multiplied overflow
HUGE = "9" * 400  # float() reads this as inf

A1111_CASES = [
    # --- A1111's own docstring, transcribed ---
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
    # --- brackets and nesting ---
    ("", [("", 1.0)]),
    ("()", [("", 1.0)]),
    ("[a]", [("a", 1 / 1.1)]),
    ("[[a]]", [("a", (1 / 1.1) * (1 / 1.1))]),
    ("((a))", [("a", 1.1 * 1.1)]),
    ("(a:1.5)", [("a", 1.5)]),
    ("(a: 1.5 )", [("a", 1.5)]),
    ("((a:1.5))", [("a", 1.5 * 1.1)]),
    ("((a):1.5)", [("a", 1.1 * 1.5)]),
    ("[(a:2)]", [("a", 2.0 * (1 / 1.1))]),
    ("a (b) (c)", [("a ", 1.0), ("b", 1.1), (" ", 1.0), ("c", 1.1)]),
    ("(a)[b]", [("a", 1.1), ("b", 1 / 1.1)]),
    ("((a) b)", [("a", 1.1 * 1.1), (" b", 1.1)]),
    ("((a:1.5) b:0.5)", [("a", 1.5 * 0.5), (" b", 0.5)]),
    ("(猫:1.3) 🐱", [("猫", 1.3), (" 🐱", 1.0)]),
    # --- weights A1111 passes through as they are ---
    ("(a:0)", [("a", 0.0)]),
    ("(a:-1)", [("a", -1.0)]),
    ("(a:+2)", [("a", 2.0)]),
    ("(a:.5)", [("a", 0.5)]),
    ("x (a:1.)", [("x a", 1.0)]),  # weight 1.0 merges with its neighbour
    ("(time:12:30)", [("time:12", 30.0)]),  # only the last ":number)" is a weight
    ("(a:1e5)", [("a:1e5", 1.1)]),  # no exponent in A1111's regex: text, and (...) is x1.1
    # --- malformed: unbalanced, stray closers, colons ---
    ("((a)", [("a", 1.1 * 1.1)]),
    ("[a", [("a", 1 / 1.1)]),
    ("([a)", [("a", 1.1 * (1 / 1.1))]),
    ("(a]", [("a]", 1.1)]),
    ("a)", [("a)", 1.0)]),
    ("a]", [("a]", 1.0)]),
    ("a:b", [("a:b", 1.0)]),
    ("a:1.5)", [("a:1.5)", 1.0)]),  # a weight with no "(" open is text
    ("[a:1.5)", [("a:1.5)", 1 / 1.1)]),
    ("(a:1.5", [("a:1.5", 1.1)]),
    # --- escapes ---
    ("\\\\", [("\\", 1.0)]),
    ("a\\b", [("ab", 1.0)]),  # a lone backslash is dropped
    ("\\(a\\)", [("(a)", 1.0)]),
    ("(\\(a\\))", [("(a)", 1.1)]),
    ("\\[a\\]", [("[a]", 1.0)]),
    # --- BREAK ---
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("a BREAK", [("a", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a\nBREAK\nb", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a,BREAK,b", [("a,", 1.0), ("BREAK", -1.0), (",b", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.0 * 1.1), ("b", 1.1)]),  # multiplied: no longer a BREAK
    # --- where A1111 itself fails: sdclip reads the literal as text (documented deviation) ---
    ("(a:.)", [("a:.", 1.1)]),
    ("(a:1.2.3)", [("a:1.2.3", 1.1)]),
    (f"(a:{HUGE})", [(f"a:{HUGE}", 1.1)]),
    (f"((a:{BIG}):{BIG})", [("a", sys.float_info.max)]),  # saturates instead of inf
]

COMFY_CASES = [
    ("", []),
    ("a", [("a", 1.0)]),
    ("(a)", [("a", 1.1)]),
    ("((a))", [("a", 1.1 * 1.1)]),
    ("(a:1.5)", [("a", 1.5)]),
    ("((a:1.5))", [("a", 1.5)]),  # (x:w) sets the weight, it does not multiply
    ("((a):1.5)", [("a", 1.5 * 1.1)]),
    ("a (b) c", [("a ", 1.0), ("b", 1.1), (" c", 1.0)]),
    ("(a)(b)", [("a", 1.1), ("b", 1.1)]),  # not merged
    ("(a (b:2) c:0.5)", [("a ", 0.5), ("b", 2.0), (" c", 0.5)]),
    ("[a]", [("[a]", 1.0)]),
    ("(a", [("(a", 1.0)]),
    ("((a)", [("(a", 1.1)]),
    ("a)", [("a)", 1.0)]),
    ("a) (b)", [("a) (b)", 1.0)]),  # a stray ")" keeps the rest as text
    ("()", []),
    ("( )", [(" ", 1.1)]),
    ("(a:1.5:2)", [("a:1.5", 2.0)]),
    ("(time:12:30)", [("time:12", 30.0)]),
    ("(:1.5)", [(":1.5", 1.1)]),  # a colon in first place is not a weight
    ("(a:)", [("a:", 1.1)]),
    ("(a: 2 )", [("a", 2.0)]),
    ("(a:1e3)", [("a", 1000.0)]),
    ("(a:0)", [("a", 0.0)]),
    ("(a:-1)", [("a", -1.0)]),
    ("\\(a\\)", [("(a)", 1.0)]),
    ("(\\(a\\):1.2)", [("(a)", 1.2)]),
    ("a\\b", [("a\\b", 1.0)]),
    ("(a BREAK b)", [("a BREAK b", 1.1)]),
    ("embedding:foo, (bar)", [("embedding:foo, ", 1.0), ("bar", 1.1)]),
    ("x \0\1", [("x )", 1.0)]),  # ComfyUI's escape placeholder, kept as upstream
    # --- where ComfyUI passes inf/nan on: sdclip reads the literal as text (documented deviation) ---
    ("(a:inf)", [("a:inf", 1.1)]),
    ("(a:nan)", [("a:nan", 1.1)]),
    ("(a:1e400)", [("a:1e400", 1.1)]),
]


@pytest.mark.parametrize(("text", "expected"), A1111_CASES)
def test_a1111(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt(text, "a1111") == expected


@pytest.mark.parametrize(("text", "expected"), COMFY_CASES)
def test_comfy(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt(text, "comfy") == expected


@pytest.mark.parametrize("text", ["", "(a) [b] \\(", "a BREAK b"])
def test_plain_is_the_text_at_weight_one(text: str) -> None:
    assert parse_prompt(text, "plain") == [(text, 1.0)]


def test_default_syntax_is_a1111() -> None:
    assert parse_prompt("[a]") == [("a", 1 / 1.1)]


def test_weights_are_floats() -> None:
    for syntax in SYNTAXES:
        for _, weight in parse_prompt("a (b:2) BREAK [c] (d:-1)", syntax):
            assert type(weight) is float


def test_unknown_syntax_names_value_and_choices() -> None:
    with pytest.raises(PromptError, match=r"^syntax: expected one of 'plain', 'a1111', 'comfy', 'compel', got 'webui'$"):
        parse_prompt("a", "webui")


def test_non_string_prompt() -> None:
    with pytest.raises(PromptTypeError, match=r"^prompt: expected a str, got int \(3\)$"):
        parse_prompt(3)  # type: ignore[arg-type]


def test_deep_nesting_does_not_hit_the_recursion_limit() -> None:
    depth = sys.getrecursionlimit() + 100  # past where a recursive parser would stop
    text = "(" * depth + "a" + ")" * depth
    assert parse_prompt(text, "comfy") == [("a", math.prod([1.1] * depth))]
    assert parse_prompt("(" * depth + "a", "comfy") == [("(" * depth + "a", 1.0)]
    # a1111 reads up to MAX_NESTING levels (exactly, see test_a1111_nesting_limit) and refuses deeper.
    with pytest.raises(PromptError, match=r"brackets nest more than 100 deep at character 100;"):
        parse_prompt(text, "a1111")


def test_examples_in_docstrings() -> None:
    result = doctest.testmod(prompt_parser)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- properties

SYNTAX_PIECES = ["(", ")", "[", "]", ":", "\\", " ", "\n", ".", "-", "+", "1", "0.5", "BREAK", " BREAK ", "a", "é",
                 ":1.5)", "(x:0)", "inf", "nan", "e9", "_", BIG, HUGE, "\0", "\1"]  # fmt: skip
any_prompt = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(SYNTAX_PIECES), max_size=30).map("".join),
)


def _is_subsequence(small: str, big: str) -> bool:
    rest = iter(big)
    return all(char in rest for char in small)


def _strip_syntax(text: str) -> str:
    """Drop every character either parser may consume as syntax, a weight literal or BREAK's spacing.

    What is left (letters other than e/E, punctuation, emoji, ...) must come out in order, none lost,
    none added. Unicode digits count: float() and the regex's ``\\d`` accept them.
    """
    return "".join(c for c in text if not (c in "()[]\\:+-._eE" or c.isdecimal() or c.isspace()))


# compel's syntax is left out of these two: it refuses .swap() and withLora(), and drops quotes and the
# text after .and() as compel does (tests/prompts/test_compel.py compares it with compel itself).
TEXT_SYNTAXES = tuple(name for name in SYNTAXES if name != "compel")


@settings(max_examples=200, deadline=None)
@given(text=any_prompt, syntax=st.sampled_from(TEXT_SYNTAXES))
def test_never_raises_and_weights_are_finite(text: str, syntax: str) -> None:
    runs = parse_prompt(text, syntax)
    assert all(isinstance(part, str) and math.isfinite(weight) for part, weight in runs)


@settings(max_examples=200, deadline=None)
@given(text=any_prompt, syntax=st.sampled_from(TEXT_SYNTAXES))
def test_text_is_kept_in_order(text: str, syntax: str) -> None:
    joined = "".join(part for part, _ in parse_prompt(text, syntax))
    if syntax == "comfy":  # ComfyUI's unescape turns its placeholders into parentheses wherever they are
        text = text.replace("\0\1", ")").replace("\0\2", "(")
    assert _strip_syntax(joined) == _strip_syntax(text)
    assert _is_subsequence(joined, text)


# A prompt built from a tree, rendered to text, with its runs and weights worked out from the tree alone.
LEAF = st.text(alphabet="ab z,.!é猫7", min_size=1, max_size=4)
A1111_WEIGHTS = ["0", "0.5", "1.5", "2", "-1", ".25", "1.", "+3", " 1.5 "]
COMFY_WEIGHTS = [*A1111_WEIGHTS, "1e2"]


def _tree(weights: list[str]) -> st.SearchStrategy:
    return st.recursive(
        LEAF.map(lambda s: ("text", s)),
        lambda children: st.one_of(
            st.tuples(st.just("round"), st.lists(children, max_size=3)),
            st.tuples(st.just("square"), st.lists(children, max_size=3)),
            st.tuples(st.just("weighted"), st.lists(children, min_size=1, max_size=3), st.sampled_from(weights)),
        ),
        max_leaves=12,
    )


def _render(node: tuple) -> str:
    if node[0] == "text":
        return node[1]
    inner = "".join(_render(child) for child in node[1])
    if node[0] == "square":
        return f"[{inner}]"
    return f"({inner}:{node[2]})" if node[0] == "weighted" else f"({inner})"


def _a1111_expected(node: tuple, multipliers: tuple[float, ...] = ()) -> list[tuple[str, float]]:
    if node[0] == "text":
        weight = 1.0
        for multiplier in reversed(multipliers):  # the innermost bracket closes, and multiplies, first
            weight *= multiplier
        return [(node[1], weight)]
    multiplier = {"round": 1.1, "square": 1 / 1.1}.get(node[0]) or float(node[2])
    return [run for child in node[1] for run in _a1111_expected(child, (*multipliers, multiplier))]


def _flatten_squares(node: tuple) -> list[tuple]:
    """ComfyUI has no square-bracket syntax: splice each ``[...]`` into its parent as text and groups."""
    if node[0] == "text":
        return [node]
    children = [flat for child in node[1] for flat in _flatten_squares(child)]
    if node[0] == "square":
        return [("text", "["), *children, ("text", "]")]
    return [(node[0], children, *node[2:])]


def _comfy_runs(node: tuple, weight: float) -> list[tuple[str, float]]:
    runs: list[tuple[str, float]] = []
    pending = ""
    for child in node[1]:
        if child[0] == "text":
            pending += child[1]
            continue
        if pending:
            runs.append((pending, weight))
            pending = ""
        runs += _comfy_runs(child, _mul_weight(weight, child))
    if pending:
        runs.append((pending, weight))
    return runs


def _mul_weight(weight: float, group: tuple) -> float:
    return weight * 1.1 if group[0] == "round" else float(group[2])


def _merge_equal_weights(runs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    merged: list[tuple[str, float]] = []
    for part, weight in runs:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + part, weight)
        else:
            merged.append((part, weight))
    return merged or [("", 1.0)]


@settings(max_examples=200, deadline=None)
@given(nodes=st.lists(_tree(A1111_WEIGHTS), max_size=4))
def test_a1111_weights_follow_the_bracket_tree(nodes: list[tuple]) -> None:
    text = "".join(_render(node) for node in nodes)
    expected = _merge_equal_weights([run for node in nodes for run in _a1111_expected(node)])
    assert parse_prompt(text, "a1111") == expected


@settings(max_examples=200, deadline=None)
@given(nodes=st.lists(_tree(COMFY_WEIGHTS), max_size=4))
def test_comfy_weights_follow_the_bracket_tree(nodes: list[tuple]) -> None:
    text = "".join(_render(node) for node in nodes)
    [root] = _flatten_squares(("root", nodes))
    assert parse_prompt(text, "comfy") == _comfy_runs(root, 1.0)
