"""The one table of prompt syntaxes: name -> :class:`~sdclip.prompts.parsed.Syntax`.

Everything that takes ``syntax=`` reads it: parsing (:func:`sdclip.prompts.parser.parse`), chunking,
the conditioner's default weighting and textual-inversion lookup, ``sdclip tokens --syntax`` and
``sdclip.inspection``. A new syntax is one module defining a ``Syntax`` plus one line here in
``_BUILTIN`` (or, from outside sdclip, a :func:`register_syntax` call).

The built-in syntaxes load on first use, not at import.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from ..errors import PromptError
from .parsed import Syntax

__all__ = ["Syntax", "get_syntax", "register_syntax", "syntax_names", "unregister_syntax"]

_BUILTIN = ("plain", "a1111", "comfy", "compel")  # each is the module sdclip.prompts.<name>, defining SYNTAX
_table: dict[str, Syntax] = {}
_lock = threading.Lock()


def _syntaxes() -> dict[str, Syntax]:
    if not _table:
        with _lock:
            if not _table:
                loaded = {name: importlib.import_module(f"{__package__}.{name}").SYNTAX for name in _BUILTIN}
                _table.update(loaded)
    return _table


def syntax_names() -> tuple[str, ...]:
    """The names ``syntax=`` accepts, built-in ones first.

    Example:
        >>> syntax_names()
        ('plain', 'a1111', 'comfy', 'compel')
    """
    return tuple(_syntaxes())


def get_syntax(name: Any) -> Syntax:
    """The registered syntax called ``name``; the one check of every ``syntax=`` argument.

    Raises:
        PromptError: no syntax has that name (the message lists those that do).

    Example:
        >>> get_syntax("comfy").weighting
        'comfy'
        >>> get_syntax("webui")
        Traceback (most recent call last):
        ...
        sdclip.errors.PromptError: syntax: expected one of 'plain', 'a1111', 'comfy', 'compel', got 'webui'
    """
    table = _syntaxes()
    if isinstance(name, str) and name in table:
        return table[name]
    raise PromptError(f"syntax: expected one of {', '.join(map(repr, table))}, got {name!r}")


def register_syntax(syntax: Syntax, *, replace: bool = False) -> None:
    """Make ``syntax`` available as ``syntax=syntax.name`` everywhere (conditioner, inspection, chunking).

    Args:
        syntax: the entry to add.
        replace: allow replacing a registered syntax of the same name.

    Raises:
        PromptError: the name is taken (and ``replace`` is False), or ``syntax`` is not a ``Syntax``.

    Example:
        >>> from sdclip.prompts.parsed import ParsedPrompt, Run
        >>> register_syntax(Syntax("shout", lambda text: ParsedPrompt((Run(text.upper()),))))
        >>> from sdclip.prompts.parser import parse_prompt
        >>> parse_prompt("a cat", syntax="shout")
        [('A CAT', 1.0)]
        >>> unregister_syntax("shout")
    """
    if not isinstance(syntax, Syntax) or not isinstance(syntax.name, str) or not syntax.name:
        raise PromptError(f"syntax: expected a sdclip.prompts.parsed.Syntax with a name, got {syntax!r:.80}")
    table = _syntaxes()
    with _lock:
        if syntax.name in table and not replace:
            raise PromptError(f"syntax {syntax.name!r}: already registered; pass replace=True to replace it")
        table[syntax.name] = syntax


def unregister_syntax(name: str) -> None:
    """Remove a syntax added with :func:`register_syntax` (the built-in ones stay).

    Raises:
        PromptError: ``name`` is built in or not registered.
    """
    get_syntax(name)
    if name in _BUILTIN:
        raise PromptError(f"syntax {name!r}: built in, cannot be unregistered")
    with _lock:
        del _table[name]
