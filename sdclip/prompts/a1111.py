"""The ``"a1111"`` syntax: AUTOMATIC1111's ``parse_prompt_attention``, rule for rule.

``(x)`` multiplies by 1.1, ``[x]`` by 1/1.1, ``(x:1.5)`` by 1.5, nesting multiplies, brackets left open
are closed at the end, ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal, a lone backslash is dropped,
stray ``)`` ``]`` stay text, neighbouring runs of equal weight merge, and ``BREAK`` (upper case, a word
of its own) is a :class:`~sdclip.prompts.parsed.Break`. See :func:`sdclip.parse_prompt` for the details
and the two documented deviations (non-finite weight literals are text; overflowing products saturate).
"""

from __future__ import annotations

import math
import re

from ..errors import PromptError
from ._numbers import finite_float as _finite_float
from ._numbers import saturating_mul as _mul
from .parsed import BREAK_WEIGHT, ParsedPrompt, Syntax
from .schedules import prompt_schedule

__all__ = ["MAX_NESTING", "SYNTAX", "parse_a1111"]

_INF = math.inf


def parse_a1111(text: str) -> ParsedPrompt:
    """Read ``text`` as A1111 does.

    Example:
        >>> parse_a1111("a (b:1.5) [c] BREAK d").to_pairs()
        [('a ', 1.0), ('b', 1.5), (' ', 1.0), ('c', 0.9090909090909091), ('', 1.0), ('BREAK', -1.0), ('d', 1.0)]
    """
    return ParsedPrompt.from_pairs(_parse_a1111(text))


# A1111 modules/prompt_parser.py, `re_attention` (the current version, which allows spaces around the
# weight), wrapped in one group. Every character of a prompt falls in exactly one match.
_RE_ATTENTION = re.compile(
    r"""(
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
)""",
    re.X,
)
_RE_BREAK_WORD = re.compile(r"\bBREAK\b")  # A1111 splits on r"\s*\bBREAK\b\s*": see _split_break
_ROUND_MULTIPLIER = 1.1
_SQUARE_MULTIPLIER = 1 / 1.1  # A1111 multiplies by 1/1.1 rather than dividing by 1.1: the floats differ

MAX_NESTING = 100
"""Deepest bracket nesting the a1111 syntax reads (round and square together); deeper is a PromptError.

A1111 has no limit, but each closing bracket rescales every run opened inside it, so its time grows with
runs x depth; no real prompt nests this deep, and 1.1 ** 117 is already past float16's largest number.
"""


def _split_break(chunk: str) -> list[str]:
    r"""``re.split(r"\s*\bBREAK\b\s*", chunk)`` in linear time.

    That pattern backtracks over every run of whitespace at every position (quadratic: 100k spaces took
    minutes). Here each ``BREAK`` word is found once and the whitespace around it walked once:
    ``str.isspace`` is the regex's ``\s``, and the leading run never reaches back past the previous cut.
    """
    if "BREAK" not in chunk:
        return [chunk]
    parts: list[str] = []
    pos, length = 0, len(chunk)
    for match in _RE_BREAK_WORD.finditer(chunk):
        start, end = match.start(), match.end()
        while start > pos and chunk[start - 1].isspace():
            start -= 1
        while end < length and chunk[end].isspace():
            end += 1
        parts.append(chunk[pos:start])
        pos = end
    parts.append(chunk[pos:])
    return parts


def _scale(weights: list[float], start: int, multiplier: float) -> None:
    """Multiply ``weights[start:]`` in place, saturating at ``±sys.float_info.max`` (as saturating_mul)."""
    tail = [weight * multiplier for weight in weights[start:]]
    if _INF in tail or -_INF in tail:
        tail = [_mul(weight, multiplier) for weight in weights[start:]]
    weights[start:] = tail


def _too_deep(text: str, position: int) -> PromptError:
    shown = f"{text[:40]!r}{'...' if len(text) > 40 else ''}"
    return PromptError(
        f"prompt {shown}: brackets nest more than {MAX_NESTING} deep at character {position}; the a1111 syntax "
        f"reads at most {MAX_NESTING} levels (escape literal brackets as \\( \\[, or use syntax='plain')"
    )


def _parse_a1111(text: str) -> list[tuple[str, float]]:
    # A1111's algorithm with its list of [text, weight] split in two lists, so that a closing bracket
    # rescales the weights opened inside it with one list operation.
    texts: list[str] = []
    weights: list[float] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def add_text(chunk: str) -> None:
        if "BREAK" not in chunk:
            texts.append(chunk)
            weights.append(1.0)
            return
        for i, part in enumerate(_split_break(chunk)):
            if i > 0:
                texts.append("BREAK")
                weights.append(BREAK_WEIGHT)
            texts.append(part)
            weights.append(1.0)

    append_text, append_weight = texts.append, weights.append
    for match in _RE_ATTENTION.finditer(text):  # finditer, not findall: deep nesting stops early
        token, literal = match.groups()
        first = token[0]
        if first == "\\":
            append_text(token[1:])
            append_weight(1.0)
        elif first == "(" or first == "[":
            if len(round_brackets) + len(square_brackets) >= MAX_NESTING:
                raise _too_deep(text, match.start())
            (round_brackets if first == "(" else square_brackets).append(len(texts))
        elif literal and round_brackets:
            weight = _finite_float(literal)
            if weight is None:
                # What the regex would give without its weight alternative: ":", the digits, then ")".
                add_text(token[:-1])
                _scale(weights, round_brackets.pop(), _ROUND_MULTIPLIER)
            else:
                _scale(weights, round_brackets.pop(), weight)
        elif first == ")" and round_brackets:
            _scale(weights, round_brackets.pop(), _ROUND_MULTIPLIER)
        elif first == "]" and square_brackets:
            _scale(weights, square_brackets.pop(), _SQUARE_MULTIPLIER)
        elif "BREAK" in token:
            add_text(token)
        else:
            append_text(token)
            append_weight(1.0)

    # Unclosed brackets apply outermost first, as A1111 iterates its stacks bottom-up.
    for start in round_brackets:
        _scale(weights, start, _ROUND_MULTIPLIER)
    for start in square_brackets:
        _scale(weights, start, _SQUARE_MULTIPLIER)

    if not texts:
        return [("", 1.0)]

    # Neighbouring runs of equal weight merge (joined once: += on a growing string is quadratic).
    merged: list[tuple[str, float]] = []
    group, group_weight = [texts[0]], weights[0]  # a group keeps its first weight (0.0 vs -0.0 merge)
    for part, weight in zip(texts[1:], weights[1:]):
        if weight == group_weight:
            group.append(part)
        else:
            merged.append(("".join(group), float(group_weight)))
            group, group_weight = [part], weight
    merged.append(("".join(group), float(group_weight)))
    return merged

SYNTAX = Syntax(
    name="a1111", parse=parse_a1111, weighting="a1111", layout="a1111",
    description="AUTOMATIC1111: (x), [x], (x:1.3), BREAK; [from:to:when] and [a|b] with encode_schedule",
    schedule=prompt_schedule, pairs=_parse_a1111,
)
