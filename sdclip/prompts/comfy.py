"""The ``"comfy"`` syntax: ComfyUI's ``token_weights``, rule for rule.

``(x)`` multiplies by 1.1, ``(x:w)`` *sets* the weight to ``w``, ``[x]`` is plain text, ``\\(`` ``\\)``
are literal, unbalanced brackets are plain text, runs come in ComfyUI's order and are not merged, and
``embedding:name`` names a textual-inversion embedding. See :func:`sdclip.parse_prompt` for the details.
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_left

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


_RE_PAREN = re.compile(r"[()]")
_RE_COLON = re.compile(":")
_INF = float("inf")
_MAX = sys.float_info.max


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
        self.parens = [m.start() for m in _RE_PAREN.finditer(text)]
        self.opens = [paren == "(" for paren in _RE_PAREN.findall(text)]  # findall: no Match objects
        self.colons = [m.start() for m in _RE_COLON.finditer(text)]
        self.partner = partner = [-1] * len(self.parens)  # "(" index -> its ")" index, -1 if never closed
        stack: list[int] = []
        push, pop = stack.append, stack.pop  # locals: this loop runs once per parenthesis
        for j, is_open in enumerate(self.opens):
            if is_open:
                push(j)
            elif stack:
                partner[pop()] = j

    def pieces(self, lo: int, hi: int, jlo: int, jhi: int) -> list[tuple[int, int, int, int, bool]]:
        """``parse_parentheses`` of ``text[lo:hi]`` (parentheses ``jlo:jhi``), depth 0 at ``lo``.

        Returns (start, end, first paren, paren end, is_group) of each piece, in order.
        """
        parens, opens, partner = self.parens, self.opens, self.partner
        out: list[tuple[int, int, int, int, bool]] = []
        pos, j = lo, jlo
        while j < jhi:
            depth = 0
            while j < jhi and not (opens[j] and depth == 0):  # a ")" first: text until depth is 0 again
                depth += 1 if opens[j] else -1
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

    def weight_literal(self, lo: int, hi: int, jhi: int) -> float | None:
        """Upstream's ``inner.rfind(":")`` weight of ``text[lo:hi]``; returns the colon's position or None."""
        i = bisect_left(self.colons, hi) - 1
        if i < 0 or self.colons[i] <= lo:  # no colon, or the colon comes first: not a weight
            return None
        colon = self.colons[i]
        if jhi > 0 and self.parens[jhi - 1] > colon:  # float() reads no parenthesis: skip the copy
            return None
        return colon


def _parse_comfy(text: str) -> list[tuple[str, float]]:
    scanner = _Scanner(_escape_comfy(text))
    out: list[tuple[str, float]] = []
    # (lo, hi, paren lo, paren hi, weight, is_run); an explicit stack in upstream's depth-first order,
    # so deep nesting meets no recursion limit.
    stack = [(0, len(scanner.text), 0, len(scanner.parens), 1.0, False)]
    has_colons = bool(scanner.colons)
    parens, partner, escaped = scanner.parens, scanner.partner, "\0" in scanner.text
    while stack:
        lo, hi, jlo, jhi, weight, is_run = stack.pop()
        if is_run:
            out.append((_unescape_comfy(scanner.text[lo:hi]) if escaped else scanner.text[lo:hi], weight))
            continue
        # Deep nesting: while the whole range is one group with no weight literal, step inside it here
        # (what pieces() and the stack would do one level at a time, without their per-level cost).
        while (not has_colons and jlo < jhi and partner[jlo] == jhi - 1 and parens[jlo] == lo
               and parens[jhi - 1] == hi - 1):
            lo, hi, jlo, jhi = lo + 1, hi - 1, jlo + 1, jhi - 1
            inner = weight * 1.1
            weight = inner if -_INF < inner < _INF else (_MAX if inner > 0 else -_MAX)  # saturating, as _mul
        items = []
        for start, end, j, jend, is_group in scanner.pieces(lo, hi, jlo, jhi):
            if not is_group:
                items.append((start, end, 0, 0, weight, True))
                continue
            # inner text: start + 1 .. end - 1; its parentheses: j + 1 .. jend - 1 (the last is the closer)
            inner_hi, inner_jhi = end - 1, jend - 1
            inner_weight = weight * 1.1
            if inner_weight == _INF or inner_weight == -_INF:  # saturate, as _mul(weight, 1.1), inlined
                inner_weight = _MAX if inner_weight > 0 else -_MAX
            literal = None
            if has_colons:
                colon = scanner.weight_literal(start + 1, inner_hi, inner_jhi if inner_jhi > j + 1 else 0)
                literal = None if colon is None else _finite_float(scanner.text[colon + 1 : inner_hi])
            if literal is not None:
                inner_hi, inner_weight = colon, literal  # the parentheses all lie before the colon
            items.append((start + 1, inner_hi, j + 1, inner_jhi, inner_weight, False))
        stack.extend(reversed(items))
    return out

SYNTAX = Syntax(
    name="comfy", parse=parse_comfy, weighting="comfy", layout="comfy", embedding_prefix=True,
    description="ComfyUI: (x), (x:1.3); [x] is text; embedding:name",
)
