"""The ``"compel"`` syntax: compel's prompt language (``damian0815/compel``, ``prompt_parser.py``).

Plain Python, no torch, no pyparsing: a recursive-descent reading of compel's grammar.

* ``word+`` / ``word-`` (runs: ``cat+++``), ``(a phrase)++``, ``"a phrase"--``: weight ``1.1 ** n`` for
  ``+`` and ``0.9 ** n`` for ``-`` (compel's two bases); ``(a phrase)1.3`` and ``"..."0.7`` set a number;
  ``(x).attend(1.2)`` is the explicit form. Nesting multiplies.
* ``("a cat", "a dog").blend(0.7, 0.3)`` mixes the encodings of whole prompts (weights normalized to sum
  1 unless ``no_normalize`` is the last option); only as the whole prompt, as in compel.
* ``("a cat", "a dog").and()`` (or ``.add()``; optional weights ``.and(1, 0.5)``) concatenates the
  encodings on the token axis, as compel does for SD; text after it is ignored, as in compel.
* ``\\(`` ``\\)`` ``\\"`` are literal characters; other escapes (``\\,`` ``\\.`` ``\\+`` ``\\-`` ``\\=``)
  keep their text, backslash included, as in compel. ``,x`` gets a space (``, x``) first, as in compel.
* Plain words keep their text; runs of equal weight are joined with single spaces (compel's fusing).

Not supported (a :class:`~sdclip.errors.PromptError`): ``.swap()`` (cross-attention control, which is
not conditioning) and ``withLora()`` / ``useLora()`` (LoRA loading). Malformed syntax that compel reads
in its own surprising ways (an unclosed ``(`` around several words, a blend whose target is two bare
words) may be read differently here; the tests compare both parsers on well-formed prompts and the
edge cases named there.

:func:`parse_compel` gives the structure (parts, blends, weights) that ``conditioning.compel_math``
encodes; the ``Syntax``'s ``parse`` gives the runs that tokenization and inspection show (the parts of
``.and()`` separated by breaks, since each part gets its own chunks; a blend shows its first prompt).
"""

from __future__ import annotations

import re

from ..errors import PromptError
from .parsed import Blend, Break, CombinedPrompt, ParsedPrompt, Run, Syntax

__all__ = ["MINUS", "PLUS", "SYNTAX", "parse_compel"]

PLUS = 1.1
"""compel's ``attention_plus_base``: each ``+`` multiplies by it."""
MINUS = 0.9
"""compel's ``attention_minus_base``: each ``-`` multiplies by it."""

_WS = " \t\n\r"  # pyparsing's default whitespace
_ALL_WS = " \t\n\r\x0b\x0c"  # string.whitespace: never part of a word
_SYNTACTIC = '()",.+-='
_ESCAPES = ("\\(", "\\)", '\\"', "\\,", "\\.", "\\+", "\\-", "\\=")
_REAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")
_INT = re.compile(r"-?\d+")
_KEYWORD = re.compile(r"[A-Za-z0-9_-]+")
_NUMBER_WEIGHT = re.compile(r"\d+\.\d*|\.\d+|\d+")  # an unsigned number after a group (+/- are runs)


class _Fail(Exception):
    """This alternative does not match here (the caller tries the next)."""


class _Frag:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text.replace("\\(", "(").replace("\\)", ")").replace('\\"', '"')  # compel's Fragment


class _Attn:
    __slots__ = ("children", "weight")

    def __init__(self, weight: float, children: list) -> None:
        self.weight, self.children = weight, children


def _memo(method):
    """Remember a rule's result (or failure) per position: nested groups are otherwise re-read once per
    alternative that tries them, which grows exponentially with the nesting depth."""

    def wrapper(self, i, **kwargs):
        key = (method.__name__, i, *kwargs.values())
        if key not in self.memo:
            try:
                self.memo[key] = method(self, i, **kwargs)
            except _Fail:
                self.memo[key] = None
        found = self.memo[key]
        if found is None:
            raise _Fail
        return found

    return wrapper


class _Reader:
    def __init__(self, text: str) -> None:
        self.s = text
        self.memo: dict[tuple, tuple | None] = {}

    def skip(self, i: int) -> int:
        while i < len(self.s) and self.s[i] in _WS:
            i += 1
        return i

    def literal(self, i: int, lit: str) -> int:
        i = self.skip(i)
        if not self.s.startswith(lit, i):
            raise _Fail
        return i + len(lit)

    # -- words --------------------------------------------------------------------------------------
    @_memo
    def word(self, i: int) -> tuple[_Frag, int]:
        """compel's ``non_syntax_word``: escapes, ``+``/``-`` inside a word, characters without syntax."""
        s, j = self.s, i
        while j < len(s):
            if s.startswith(_ESCAPES, j):
                j += 2
            elif s[j] in "+-":
                nxt = s[j + 1] if j + 1 < len(s) else ""
                if not nxt or nxt in _WS or nxt in _SYNTACTIC:
                    break
                j += 1
            elif s[j] in _ALL_WS or s[j] in _SYNTACTIC:
                break
            else:
                j += 1
        if j == i:
            raise _Fail
        return _Frag(s[i:j]), j

    def free_word(self, i: int) -> tuple[_Frag, int]:
        j = i
        while j < len(self.s) and self.s[j] not in _ALL_WS:
            j += 1
        if j == i:
            raise _Fail
        return _Frag(self.s[i:j]), j

    # -- groups -------------------------------------------------------------------------------------
    @_memo
    def quoted(self, i: int, *, inner: bool = True) -> tuple[list, int]:
        i = self.skip(i)
        s = self.s
        if i >= len(s) or s[i] != '"':
            raise _Fail
        j = i + 1
        while True:
            if j >= len(s) or s[j] in "\n\r":
                raise _Fail
            if s.startswith('\\"', j):
                j += 2
            elif s[j] == '"':
                break
            else:
                j += 1
        content = s[i + 1 : j]
        if not content.strip():
            return [_Frag("")], j + 1
        reader = _Reader(content)
        nodes, end = reader.sequence(0) if inner else reader.prompt(0)
        if reader.skip(end) != len(content):
            raise _Fail
        return nodes, j + 1

    @_memo
    def paren(self, i: int) -> tuple[list, int]:
        i = self.literal(i, "(")
        nodes, i = self.sequence(i)
        return nodes, self.literal(i, ")")

    @_memo
    def target(self, i: int) -> tuple[list, int]:
        """compel's ``potential_operator_target``: quoted, parenthesized or one word."""
        for alternative in (self.quoted, self.paren):
            try:
                return alternative(i)
            except _Fail:
                pass
        frag, end = self.word(self.skip(i))
        return [frag], end

    def operator(self, i: int, *, numbers: bool) -> tuple[float, int]:
        s = self.s
        if i < len(s) and s[i] in "+-":
            j = i
            while j < len(s) and s[j] == s[i]:
                j += 1
            return (PLUS if s[i] == "+" else MINUS) ** (j - i), j
        match = _NUMBER_WEIGHT.match(s, i) if numbers else None
        if match is None:
            raise _Fail
        return float(match.group()), match.end()

    @_memo
    def attention(self, i: int) -> tuple[_Attn, int]:
        try:  # explicit: target.attend(weight)
            nodes, j = self.target(i)
            j = self.literal(j, ".attend")
            j = self.skip(self.literal(j, "("))
            weight, j = self.operator(j, numbers=True)
            return _Attn(weight, nodes), self.literal(j, ")")
        except _Fail:
            pass
        for group in (self.quoted, self.paren):  # implicit, after a group: +++, ---, or a number
            try:
                nodes, j = group(i)
                weight, j = self.operator(j, numbers=True)
                return _Attn(weight, nodes), j
            except _Fail:
                pass
        frag, j = self.word(self.skip(i))  # after a word: +++ or --- only
        weight, j = self.operator(j, numbers=False)
        return _Attn(weight, [frag]), j

    def unsupported(self, i: int) -> None:
        i = self.skip(i)
        if self.s.startswith(("withLora(", "useLora("), i):
            raise PromptError(f"prompt {self.s[:60]!r}: withLora()/useLora() load LoRAs, which sdclip does not; "
                              "load the LoRA into the pipeline and remove it from the prompt")
        try:
            _, j = self.target(i)
            self.literal(j, ".swap")
        except _Fail:
            return
        raise PromptError(f"prompt {self.s[:60]!r}: .swap() is cross-attention control, not conditioning; "
                          "sdclip does not support it (use compel for it, or A1111 prompt editing [a:b:when])")

    def first(self, i: int, alternatives: tuple) -> tuple[object, int]:
        """pyparsing's ordered choice: the first of ``alternatives`` that parses at ``i``, else ``_Fail``."""
        for alternative in alternatives:
            try:
                return alternative(i)
            except _Fail:
                pass
        raise _Fail

    def sequence(self, i: int) -> tuple[list, int]:
        """compel's fragment sequence inside parentheses and quotes: groups, words, ``,`` and ``.``."""
        nodes: list = []
        while True:
            self.unsupported(i)
            try:
                node, i = self.first(i, (self.attention, self.paren, self.quoted))
                nodes.append(node)
            except _Fail:
                j = self.skip(i)
                try:
                    node, i = self.word(j)
                    nodes.append(node)
                except _Fail:
                    if j < len(self.s) and self.s[j] in ",.":
                        nodes.append(_Frag(self.s[j]))
                        i = j + 1
                    else:
                        return nodes, i

    def prompt(self, i: int) -> tuple[list, int]:
        """compel's top-level prompt: groups, weighted words, else any run without whitespace."""
        nodes: list = []
        while i < len(self.s):
            if self.s[i] in _ALL_WS:  # \x0b and \x0c too: compel raises on them (pyparsing skips only " \t\n\r")
                i += 1
                continue
            self.unsupported(i)
            try:
                node, i = self.first(i, (self.attention, self.quoted, self.paren, self.free_word))
                nodes.append(node)
            except _Fail:
                pass
        return nodes, i

    def combinator(self, i: int, names: tuple[str, ...]) -> tuple[str, list[list], list[str], int]:
        """``(target, ...).name(options)``: the operator, the targets, the options and the end."""
        j = self.literal(i, "(")
        targets = []
        while True:
            try:
                nodes, j = self.target(j)
            except _Fail:
                nodes, j = self.quoted(j, inner=False)  # compel's quoted_prompt
            targets.append(nodes)
            try:
                j = self.literal(j, ",")
            except _Fail:
                break
        j = self.literal(j, ")")
        j = self.skip(j)
        name = next((n for n in names if self.s.startswith(n, j)), None)
        if name is None:
            raise _Fail
        j = self.literal(j + len(name), "(")
        options: list[str] = []
        while True:
            j = self.skip(j)
            match = _KEYWORD.match(self.s, j)
            if match and self.s.startswith("=", self.skip(match.end())):
                raise PromptError(f"prompt {self.s[:60]!r}: {name}() takes numbers (and no_normalize), "
                                  f"not {match.group()}=...")
            number = _REAL.match(self.s, j) or _INT.match(self.s, j)
            match = number or match
            if match is None:
                break
            options.append(match.group())
            j = match.end()
            try:
                j = self.literal(j, ",")
            except _Fail:
                break
        return name, targets, options, self.literal(j, ")")


def _flatten(nodes: list, scale: float, out: list[tuple[str, float]]) -> None:
    for node in nodes:
        if isinstance(node, list):
            _flatten(node, scale, out)
        elif isinstance(node, _Attn):
            _flatten(node.children, scale * node.weight, out)
        else:
            out.append((node.text, 1.0 * scale))


def _fused(nodes: list) -> ParsedPrompt | None:
    """compel's ``flatten`` + ``fuse_fragments``: neighbouring fragments of equal weight joined by spaces."""
    fragments: list[tuple[str, float]] = []
    _flatten(nodes, 1.0, fragments)
    fused: list[list] = []
    for text, weight in fragments:
        if fused and fused[-1][1] == weight:
            fused[-1][0] += " " + text
        else:
            fused.append([text, weight])
    return ParsedPrompt(tuple(Run(text, weight) for text, weight in fused)) if fused else None


def _floats(options: list[str], text: str) -> list[float]:
    try:
        return [float(option) for option in options]
    except ValueError:
        raise PromptError(f"prompt {text[:60]!r}: expected numbers as weights, got {options!r}") from None


def parse_compel(text: str) -> CombinedPrompt:
    """Read ``text`` as compel's ``PromptParser().parse_conjunction`` does.

    Returns:
        The parts to encode (each a :class:`~sdclip.prompts.parsed.ParsedPrompt` of weighted runs, or a
        :class:`~sdclip.prompts.parsed.Blend`) and the weight of each in the ``.and()``.

    Raises:
        PromptError: ``.swap()`` or ``withLora()``, a blend with more weights than prompts (or fewer), or
            a blend followed by more text (compel raises on these too).

    Example:
        >>> parse_compel("a cat++ (on a mat)0.8").parts[0].to_pairs()
        [('a', 1.0), ('cat', 1.2100000000000002), ('on a mat', 0.8)]
        >>> blend = parse_compel('("a cat", "a dog").blend(0.7, 0.3)').parts[0]
        >>> [part.to_pairs() for part in blend.parts], blend.weights, blend.normalize
        ([[('a cat', 1.0)], [('a dog', 1.0)]], (0.7, 0.3), True)
        >>> parse_compel('("a cat", "a dog").and(1, 0.5)').weights
        (1.0, 0.5)
    """
    text = re.sub(r",(\S)", r", \1", text)
    if not text.strip():
        return CombinedPrompt((ParsedPrompt((Run("", 1.0),)),), (1.0,))
    reader = _Reader(text)
    try:  # an explicit conjunction; text after it is ignored, as compel parses without parse_all
        _, targets, options, _ = reader.combinator(0, (".and", ".add"))
        weights = _floats(options, text) or [1.0] * len(targets)
        if len(weights) != len(targets):
            raise PromptError(f"prompt {text[:60]!r}: .and() has {len(targets)} prompts but {len(weights)} weights")
        parts = [(part, weight) for part, weight in zip(map(_fused, targets), weights) if part is not None]
        return CombinedPrompt(tuple(p for p, _ in parts), tuple(w for _, w in parts))
    except _Fail:
        pass
    try:
        _, targets, options, end = reader.combinator(0, (".blend",))
    except _Fail:
        nodes, _ = reader.prompt(0)
        return CombinedPrompt((_fused(nodes) or ParsedPrompt((Run("", 1.0),)),), (1.0,))
    if reader.skip(end) != len(text):
        raise PromptError(f"prompt {text[:60]!r}: text after .blend(...); compel takes a blend only as the whole "
                          "prompt")
    normalize = not (options and options[-1] == "no_normalize")
    weights = _floats(options[:-1] if not normalize else options, text) or [1.0] * len(targets)
    parts = [part for part in map(_fused, targets) if part is not None]
    if len(weights) != len(parts):
        raise PromptError(f"prompt {text[:60]!r}: .blend() has {len(parts)} prompts but {len(weights)} weights")
    return CombinedPrompt((Blend(tuple(parts), tuple(weights), normalize),), (1.0,))


def _runs(text: str) -> ParsedPrompt:
    """What tokenization and inspection show: each ``.and()`` part's runs, parts separated by breaks."""
    items: list = []
    for index, part in enumerate(parse_compel(text).parts):
        if index:
            items.append(Break())
        items += (part.parts[0] if isinstance(part, Blend) else part).items
    return ParsedPrompt(tuple(items))


SYNTAX = Syntax(
    name="compel", parse=_runs, weighting="comfy", layout="a1111",
    description='compel: cat++, (a cat)1.3, cat--, ("a", "b").blend(0.7, 0.3), ("a", "b").and()',
    structured=parse_compel,
)
