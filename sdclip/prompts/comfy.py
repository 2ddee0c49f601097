"""The ``"comfy"`` syntax: ComfyUI's ``token_weights``, rule for rule.

``(x)`` multiplies by 1.1, ``(x:w)`` *sets* the weight to ``w``, ``[x]`` is plain text, ``\\(`` ``\\)``
are literal, unbalanced brackets are plain text, runs come in ComfyUI's order and are not merged, and
``embedding:name`` names a textual-inversion embedding. See :func:`sdclip.parse_prompt` for the details.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from itertools import chain, starmap

from ._numbers import finite_float as _finite_float
from .parsed import ParsedPrompt, Run, Syntax

__all__ = ["SYNTAX", "parse_comfy"]


def parse_comfy(text: str) -> ParsedPrompt:
    """Read ``text`` as ComfyUI does.

    Example:
        >>> parse_comfy("a (b:1.5) [c]").to_pairs()
        [('a ', 1.0), ('b', 1.5), (' [c]', 1.0)]
    """
    return ParsedPrompt(tuple(starmap(Run, _parse_comfy(text))))


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


_RE_PARENS = re.compile(r"[()]+")
_RE_NOT_PARENS = re.compile(r"[^()]+")
_INF = float("inf")
_MAX = sys.float_info.max


def _positions(stretch: re.Pattern, text: str) -> list[int]:
    """The positions of the characters in ``text``'s stretches that ``stretch`` matches, listed in C from
    each stretch's span (a 1 MB prompt of nested brackets holds a million, in two stretches)."""
    return list(chain.from_iterable(starmap(range, map(re.Match.span, stretch.finditer(text)))))


class _Scanner:
    """ComfyUI's ``token_weights`` over ranges of one escaped text, in time linear in its length.

    Upstream re-scans (and re-copies) a group's inner text once per nesting level, so 10k levels took
    15-27 s. Its ``parse_parentheses``, on a range whose depth starts at ``base``, opens a group at a
    ``(`` met at depth ``base`` and closes it at the first ``)`` back to ``base``: that close is the
    ``(``'s partner in ordinary stack matching, found once for the whole text. A ``)`` that drives the
    depth below ``base`` keeps what follows as text until a ``(`` at depth ``base`` again, as upstream;
    those stretches are walked once, at their own level. Ranges are kept as indices into the list of
    parentheses, so no inner text is copied before it is output.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.parens = _positions(_RE_PARENS, text)
        self.kinds = kinds = _RE_NOT_PARENS.sub("", text)  # the parentheses alone: kinds[j] is "(" or ")"
        self.partner = partner = [-1] * len(self.parens)  # "(" index -> its ")" index, -1 if never closed
        stack: list[int] = []
        push, pop = stack.append, stack.pop  # locals: this loop runs once per parenthesis
        for j, kind in enumerate(kinds):
            if kind == "(":
                push(j)
            elif stack:
                partner[pop()] = j

    def pieces(self, lo: int, hi: int, jlo: int, jhi: int) -> list[tuple[int, int, int, int, bool]]:
        """``parse_parentheses`` of ``text[lo:hi]`` (parentheses ``jlo:jhi``), depth 0 at ``lo``.

        Returns (start, end, first paren, paren end, is_group) of each piece, in order.
        """
        parens, kinds, partner = self.parens, self.kinds, self.partner
        out: list[tuple[int, int, int, int, bool]] = []
        pos, j = lo, jlo
        while j < jhi:
            depth = 0
            while j < jhi and not (depth == 0 and kinds[j] == "("):  # a ")" first: text until depth is 0 again
                depth += 1 if kinds[j] == "(" else -1
                j += 1
            if j == jhi:
                break
            start = parens[j]
            if start > pos:
                out.append((pos, start, 0, 0, False))
            close = partner[j]
            if close == -1 or close >= jhi:  # left open: the rest is one piece, a group if it ends with ")"
                is_group = hi - start >= 2 and self.text[hi - 1] == ")"
                out.append((start, hi, j, jhi, is_group))
                return out
            out.append((start, parens[close] + 1, j, close + 1, True))
            pos, j = parens[close] + 1, close + 1
        if pos < hi:
            out.append((pos, hi, 0, 0, False))
        return out


def _parse_comfy(text: str) -> list[tuple[str, float]]:
    scanner = _Scanner(_escape_comfy(text))
    source, parens, partner, pieces = scanner.text, scanner.parens, scanner.partner, scanner.pieces
    out: list[tuple[str, float]] = []
    append = out.append

    def inside(start: int, end: int, j: int, jend: int, weight: float) -> tuple[int, int, int, int, float]:
        """The group ``source[start:end]`` (parentheses ``j:jend``): its inner range and the weight there."""
        # inner text: start + 1 .. end - 1; its parentheses: j + 1 .. jend - 1 (the last is the closer)
        inner_hi, inner_jhi = end - 1, jend - 1
        inner_weight = weight * 1.1
        if inner_weight == _INF or inner_weight == -_INF:  # saturate, as saturating_mul(weight, 1.1), inlined
            inner_weight = _MAX if inner_weight > 0 else -_MAX
        # The weight literal: upstream's inner.rfind(":") (not the first character) if float() reads what
        # follows it, so no parenthesis does: look only after the last inner one. Those stretches hold no
        # parenthesis, so no character is looked at twice.
        colon = source.rfind(":", parens[inner_jhi - 1] + 1 if inner_jhi > j + 1 else start + 1, inner_hi)
        if colon > start + 1:
            literal = _finite_float(source[colon + 1 : inner_hi])
            if literal is not None:
                inner_hi, inner_weight = colon, literal
        return start + 1, inner_hi, j + 1, inner_jhi, inner_weight

    def enter(lo: int, hi: int, jlo: int, jhi: int, weight: float) -> tuple[Iterator, float]:
        """The pieces of a group's inner range, and their weight."""
        # Deep nesting: while the range is some text then one group that ends it, output the text and
        # step inside the group here (what pieces() and the loop below would do one level at a time).
        while jlo < jhi and partner[jlo] == jhi - 1 and parens[jhi - 1] == hi - 1:
            start = parens[jlo]
            if start > lo:
                append((source[lo:start], weight))
            if jhi - jlo > 2 and parens[jhi - 2] == hi - 2:  # the inner text ends with ")": no weight literal
                lo, hi, jlo, jhi = start + 1, hi - 1, jlo + 1, jhi - 1
                inner = weight * 1.1
                weight = inner if -_INF < inner < _INF else (_MAX if inner > 0 else -_MAX)  # saturating
            else:
                lo, hi, jlo, jhi, weight = inside(start, hi, jlo, jhi, weight)
        return iter(pieces(lo, hi, jlo, jhi)), weight

    # One iterator of pieces per open group, innermost last: upstream's depth-first order, with no
    # recursion (so deep nesting meets no recursion limit).
    stack = [enter(0, len(source), 0, len(parens), 1.0)]
    while stack:
        items, weight = stack[-1]
        for start, end, j, jend, is_group in items:
            if not is_group:
                append((source[start:end], weight))
            elif jend == j + 2:  # no parentheses inside: the inner text is one run (if any)
                lo, hi, _, _, inner_weight = inside(start, end, j, jend, weight)
                if hi > lo:
                    append((source[lo:hi], inner_weight))
            else:
                stack.append(enter(*inside(start, end, j, jend, weight)))
                break  # the group's pieces come first; this iterator resumes after them
        else:
            stack.pop()
    if "\0" in source:
        return [(_unescape_comfy(part), weight) for part, weight in out]
    return out


SYNTAX = Syntax(
    name="comfy", parse=parse_comfy, weighting="comfy", layout="comfy", embedding_prefix=True,
    description="ComfyUI: (x), (x:1.3); [x] is text; embedding:name", pairs=_parse_comfy,
)
