"""The ``"a1111"`` syntax: AUTOMATIC1111's ``parse_prompt_attention``, rule for rule.

``(x)`` multiplies by 1.1, ``[x]`` by 1/1.1, ``(x:1.5)`` by 1.5, nesting multiplies, brackets left open
are closed at the end, ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal, a lone backslash is dropped,
stray ``)`` ``]`` stay text, neighbouring runs of equal weight merge, and ``BREAK`` (upper case, a word
of its own) is a :class:`~sdclip.prompts.parsed.Break`. See :func:`sdclip.parse_prompt` for the details
and the two documented deviations (non-finite weight literals are text; overflowing products saturate).
"""

from __future__ import annotations

import re

from ._numbers import finite_float as _finite_float
from ._numbers import saturating_mul as _mul
from .parsed import BREAK_WEIGHT, ParsedPrompt, Syntax

__all__ = ["SYNTAX", "parse_a1111"]


def parse_a1111(text: str) -> ParsedPrompt:
    """Read ``text`` as A1111 does.

    Example:
        >>> parse_a1111("a (b:1.5) [c] BREAK d").to_pairs()
        [('a ', 1.0), ('b', 1.5), (' ', 1.0), ('c', 0.9090909090909091), ('', 1.0), ('BREAK', -1.0), ('d', 1.0)]
    """
    return ParsedPrompt.from_pairs(_parse_a1111(text))


# A1111 modules/prompt_parser.py, `re_attention` (the current version, which allows spaces around the
# weight). Every character of a prompt falls in exactly one match, so finditer covers the whole text.
_RE_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
_RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_ROUND_MULTIPLIER = 1.1
_SQUARE_MULTIPLIER = 1 / 1.1  # A1111 multiplies by 1/1.1 rather than dividing by 1.1: the floats differ


def _parse_a1111(text: str) -> list[tuple[str, float]]:
    res: list[list] = []  # [text, weight] pairs, mutable as in A1111: closing brackets rescale them
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for run in res[start:]:
            run[1] = _mul(run[1], multiplier)

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_RE_BREAK.split(chunk)):
            if i > 0:
                res.append(["BREAK", BREAK_WEIGHT])
            res.append([part, 1.0])

    for match in _RE_ATTENTION.finditer(text):
        token, literal = match.group(0), match.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif literal is not None and round_brackets:
            weight = _finite_float(literal)
            if weight is None:
                # What the regex would give without its weight alternative: ":", the digits, then ")".
                add_text(token[:-1])
                multiply_range(round_brackets.pop(), _ROUND_MULTIPLIER)
            else:
                multiply_range(round_brackets.pop(), weight)
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), _ROUND_MULTIPLIER)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), _SQUARE_MULTIPLIER)
        else:
            add_text(token)

    # Unclosed brackets apply outermost first, as A1111 iterates its stacks bottom-up.
    for start in round_brackets:
        multiply_range(start, _ROUND_MULTIPLIER)
    for start in square_brackets:
        multiply_range(start, _SQUARE_MULTIPLIER)

    if not res:
        res = [["", 1.0]]

    merged: list[tuple[str, float]] = []
    for part, weight in res:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + part, merged[-1][1])
        else:
            merged.append((part, float(weight)))
    return merged




SYNTAX = Syntax(
    name="a1111", parse=parse_a1111, weighting="a1111", layout="a1111",
    description="AUTOMATIC1111: (x), [x], (x:1.3), BREAK",
)
