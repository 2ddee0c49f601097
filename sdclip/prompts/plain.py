"""The ``"plain"`` syntax: the whole text at weight 1.0, as diffusers reads prompts (brackets are text)."""

from __future__ import annotations

from .parsed import ParsedPrompt, Run, Syntax

__all__ = ["SYNTAX", "parse_plain"]


def parse_plain(text: str) -> ParsedPrompt:
    """One run: the text as it is, at weight 1.0.

    Example:
        >>> parse_plain("a (cat:1.5)").to_pairs()
        [('a (cat:1.5)', 1.0)]
    """
    return ParsedPrompt((Run(text, 1.0),))


SYNTAX = Syntax(
    name="plain", parse=parse_plain, weighting=None, layout="diffusers",
    description="as diffusers: brackets are text, no weights",
)
