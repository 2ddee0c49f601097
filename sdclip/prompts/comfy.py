"""The ``"comfy"`` syntax: ComfyUI's ``token_weights``, rule for rule.

``(x)`` multiplies by 1.1, ``(x:w)`` *sets* the weight to ``w``, ``[x]`` is plain text, ``\\(`` ``\\)``
are literal, unbalanced brackets are plain text, runs come in ComfyUI's order and are not merged, and
``embedding:name`` names a textual-inversion embedding. See :func:`sdclip.parse_prompt` for the details.
"""

from __future__ import annotations

from ._numbers import finite_float as _finite_float
from ._numbers import saturating_mul as _mul
from .parsed import ParsedPrompt, Run, Syntax

__all__ = ["SYNTAX", "parse_comfy"]


def parse_comfy(text: str) -> ParsedPrompt:
    """Read ``text`` as ComfyUI does.

    Example:
        >>> parse_comfy("a (b:1.5) [c]").to_pairs()
        [('a ', 1.0), ('b', 1.5), (' [c]', 1.0)]
    """
    return ParsedPrompt(tuple(Run(part, weight) for part, weight in _parse_comfy(text)))


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


SYNTAX = Syntax(
    name="comfy", parse=parse_comfy, weighting="comfy", layout="comfy", embedding_prefix=True,
    description="ComfyUI: (x), (x:1.3); [x] is text; embedding:name",
)
