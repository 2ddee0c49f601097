"""Prompt text to its parsed form, with the syntax named: the entry point to every syntax.

Plain Python over strings: no torch, no tokenizer. :func:`parse` gives the typed
:class:`~sdclip.prompts.parsed.ParsedPrompt` that the chunker reads; :func:`parse_prompt` (public, as
``sdclip.parse_prompt``) gives the same as ``(text, weight)`` pairs with ``("BREAK", -1.0)`` for a
break. The syntaxes themselves live one per module (:mod:`~sdclip.prompts.plain`,
:mod:`~sdclip.prompts.a1111`, :mod:`~sdclip.prompts.comfy`), listed in :mod:`~sdclip.prompts.syntaxes`.

Both parsers follow their upstream sources rule for rule, quirks included, with two exceptions that only
touch inputs upstream cannot handle (both documented on :func:`parse_prompt`):

* a weight literal that is not a finite float (A1111: ``(a:.)``, ``(a:1.2.3)``, 400 digits; ComfyUI:
  ``(a:inf)``, ``(a:nan)``, ``(a:1e400)``) is read as text, where A1111 raises and ComfyUI passes
  ``inf``/``nan`` on to the model;
* products of weights that overflow saturate at ``±sys.float_info.max`` instead of becoming ``inf``
  (the conditioner then refuses a weight that is not finite in the model's dtype).

So every weight returned is finite. Parsing takes time linear in the prompt's length (a 1 MB prompt in
0.3-0.5 s of CPU on a 2-core machine, whatever its brackets); for that, the a1111 syntax refuses
brackets nested deeper than :data:`sdclip.prompts.a1111.MAX_NESTING` (100) with a
:class:`~sdclip.errors.PromptError` (A1111 has no limit, but its time grows with runs x depth). Apart
from that, no string makes :func:`parse_prompt` raise.
"""

from __future__ import annotations

from ..errors import PromptTypeError
from .lists import check_unicode
from .parsed import BREAK_WEIGHT, ParsedPrompt, Syntax
from .syntaxes import get_syntax

__all__ = ["BREAK_WEIGHT", "SYNTAXES", "parse", "parse_prompt"]

SYNTAXES: tuple[str, ...] = ("plain", "a1111", "comfy", "compel")
"""The built-in prompt syntaxes (more can be registered: :func:`sdclip.prompts.syntaxes.register_syntax`)."""


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
    that overflows saturates at ``±sys.float_info.max``. Everything else equals upstream exactly, except
    that ``"a1111"`` refuses brackets nested more than 100 deep.

    Args:
        text: the prompt.
        syntax: a registered syntax name (:data:`SYNTAXES` are built in).

    Returns:
        ``(text, weight)`` pairs in prompt order; every weight is a finite float.

    Raises:
        PromptTypeError: ``text`` is not a string.
        PromptError: ``syntax`` is not a registered syntax.

    Example:
        >>> parse_prompt("an (important) word")
        [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
        >>> parse_prompt("a (b:1.5) [c]", syntax="comfy")
        [('a ', 1.0), ('b', 1.5), (' [c]', 1.0)]
    """
    entry, text = _checked(text, syntax)
    return entry.parse(text).to_pairs() if entry.pairs is None else entry.pairs(text)


def parse(text: str, syntax: str = "plain") -> ParsedPrompt:
    """Read a prompt with a registered syntax: the typed form everything inside sdclip uses.

    Args:
        text: the prompt.
        syntax: a name from :func:`sdclip.prompts.syntaxes.syntax_names`.

    Returns:
        :class:`~sdclip.prompts.parsed.Run` and :class:`~sdclip.prompts.parsed.Break` items in prompt order.

    Raises:
        PromptTypeError: ``text`` is not a string.
        PromptError: ``syntax`` is unknown, or ``text`` holds a lone surrogate (not valid UTF-8 text).

    Example:
        >>> parse("a (cat:1.5), BREAK snow", "comfy").items
        (Run(text='a ', weight=1.0), Run(text='cat', weight=1.5), Run(text=', BREAK snow', weight=1.0))
        >>> parse("cat BREAK snow", "a1111").items
        (Run(text='cat', weight=1.0), Break(), Run(text='snow', weight=1.0))
    """
    entry, text = _checked(text, syntax)
    return entry.parse(text)


def _checked(text: object, syntax: str) -> tuple[Syntax, str]:
    """The registered syntax and the text, both checked (the type first, then the syntax, then the text)."""
    if not isinstance(text, str):
        raise PromptTypeError(f"prompt: expected a str, got {type(text).__name__} ({text!r:.60})")
    entry = get_syntax(syntax)
    return entry, check_unicode(text, "prompt")
