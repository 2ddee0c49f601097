"""Prompt weighting syntax of AUTOMATIC1111's webui and of ComfyUI, parsed to (text, weight) runs.

Plain Python over strings: no torch, no tokenizer. :func:`parse_prompt` turns a prompt into the list of
``(text, weight)`` pairs that the chunker tokenizes and the weighting step multiplies in.

Both parsers follow their upstream sources rule for rule, quirks included, with two exceptions that only
touch inputs upstream cannot handle (both documented on :func:`parse_prompt`):

* a weight literal that is not a finite float (A1111: ``(a:.)``, ``(a:1.2.3)``, 400 digits; ComfyUI:
  ``(a:inf)``, ``(a:nan)``, ``(a:1e400)``) is read as text, where A1111 raises and ComfyUI passes
  ``inf``/``nan`` on to the model;
* products of weights that overflow saturate at ``±sys.float_info.max`` instead of becoming ``inf``.

So every weight returned is finite, and no string makes :func:`parse_prompt` raise.
"""

from __future__ import annotations

import math
import re
import sys

from sdclip.errors import PromptError, PromptTypeError

__all__ = ["SYNTAXES", "parse_prompt"]

SYNTAXES: tuple[str, ...] = ("plain", "a1111", "comfy")
"""The prompt syntaxes :func:`parse_prompt` understands."""

BREAK_WEIGHT = -1.0
"""The weight A1111 gives its ``("BREAK", -1)`` marker; the chunker starts a new chunk there."""

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


def parse_prompt(text: str, syntax: str = "a1111") -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` runs, the way A1111 or ComfyUI read it.

    ``"plain"`` gives the whole text at weight 1.0.

    ``"a1111"`` is A1111's ``parse_prompt_attention``: ``(x)`` multiplies by 1.1, ``[x]`` by 1/1.1,
    ``(x:1.5)`` by 1.5, nesting multiplies, brackets left open are closed at the end, ``\\(`` ``\\)``
    ``\\[`` ``\\]`` ``\\\\`` are literal characters, a lone backslash is dropped, stray ``)`` ``]`` stay as
    text, and neighbouring runs of equal weight merge. ``BREAK`` (upper case, a word of its own) becomes
    ``("BREAK", -1.0)`` and swallows the whitespace around it; inside brackets its weight gets multiplied
    too, and the chunker then reads it as the word "break" (as A1111 does). The empty prompt gives
    ``[("", 1.0)]``. ``(x:0)`` and negative weights pass through; ``(time:12:30)`` gives ``"time:12"`` at
    30. Weights are A1111's floats, unrounded (``(((sky)))`` is 1.4641000000000006).

    ``"comfy"`` is ComfyUI's ``token_weights``: ``(x)`` multiplies by 1.1, ``(x:w)`` *sets* the weight to
    ``w`` (the text after the last colon, if ``float()`` reads it and the colon is not the first
    character), ``[x]`` is plain text, ``\\(`` ``\\)`` are literal, unbalanced brackets are plain text. Runs
    come in ComfyUI's order and are not merged; a prompt with no text (``""``, ``"()"``) gives ``[]``.
    ``embedding:name`` stays in the text.

    Deviations, only where upstream fails: a weight literal that is not a finite float is text (A1111
    would raise on ``(a:.)``; ComfyUI would pass ``inf`` on from ``(a:inf)``), and a product of weights
    that overflows saturates at ``±sys.float_info.max``. Everything else equals upstream exactly.

    Args:
        text: the prompt.
        syntax: one of :data:`SYNTAXES`.

    Returns:
        ``(text, weight)`` pairs in prompt order; every weight is a finite float.

    Raises:
        PromptTypeError: ``text`` is not a string.
        PromptError: ``syntax`` is not one of :data:`SYNTAXES`.

    Example:
        >>> parse_prompt("an (important) word")
        [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
        >>> parse_prompt("a (b:1.5) [c]", syntax="comfy")
        [('a ', 1.0), ('b', 1.5), (' [c]', 1.0)]
    """
    if not isinstance(text, str):
        raise PromptTypeError(f"prompt: expected a str, got {type(text).__name__} ({text!r:.60})")
    if syntax == "plain":
        return [(text, 1.0)]
    if syntax == "a1111":
        return _parse_a1111(text)
    if syntax == "comfy":
        return _parse_comfy(text)
    raise PromptError(f"syntax: expected one of {', '.join(map(repr, SYNTAXES))}, got {syntax!r}")


def _mul(a: float, b: float) -> float:
    """``a * b``, saturating at ``±sys.float_info.max`` so that finite weights stay finite."""
    product = a * b
    if math.isinf(product):
        return math.copysign(sys.float_info.max, product)
    return product


def _finite_float(literal: str) -> float | None:
    try:
        value = float(literal)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


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


# ComfyUI comfy/sd1_clip.py escape_important / unescape_important: escaped parentheses hide behind
# control-character pairs while the parser runs. As upstream, a prompt that itself holds "\0\1" or
# "\0\2" gets those turned into ")" and "(".
_ESCAPES = (("\\)", "\0\1"), ("\\(", "\0\2"))


def _escape_comfy(text: str) -> str:
    for escaped, hidden in _ESCAPES:
        text = text.replace(escaped, hidden)
    return text


def _unescape_comfy(text: str) -> str:
    for escaped, hidden in _ESCAPES:
        text = text.replace(hidden, escaped[1])
    return text


def _split_parentheses(text: str) -> list[str]:
    """ComfyUI's ``parse_parentheses``: top-level ``(...)`` groups and the text between them.

    A ``)`` with nothing open drives the depth negative, so everything after it stays text until the
    depth comes back to zero, exactly as upstream.
    """
    result: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0:
                if current:
                    result.append(current)
                current = "("
            else:
                current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                result.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        result.append(current)
    return result


def _parse_comfy(text: str) -> list[tuple[str, float]]:
    # ComfyUI's token_weights recurses once per nesting level; an explicit stack gives the same
    # depth-first order without Python's recursion limit on prompts like "((((...))))".
    out: list[tuple[str, float]] = []
    stack: list[tuple[str, float, bool]] = [(_escape_comfy(text), 1.0, False)]  # (text, weight, is_run)
    while stack:
        part, weight, is_run = stack.pop()
        if is_run:
            out.append((_unescape_comfy(part), weight))
            continue
        items: list[tuple[str, float, bool]] = []
        for piece in _split_parentheses(part):
            if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
                inner = piece[1:-1]
                inner_weight = _mul(weight, 1.1)
                colon = inner.rfind(":")
                if colon > 0:
                    literal = _finite_float(inner[colon + 1 :])
                    if literal is not None:
                        inner_weight, inner = literal, inner[:colon]
                items.append((inner, inner_weight, False))
            else:
                items.append((piece, weight, True))
        stack.extend(reversed(items))
    return out
