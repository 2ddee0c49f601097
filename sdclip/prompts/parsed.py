"""The typed parsed form of a prompt, and what a prompt syntax is: plain data, no torch.

A syntax turns text into a :class:`ParsedPrompt`: a sequence of :class:`Run` (text at a weight) and
:class:`Break` (start a new 77-token chunk). The chunker reads these items; nothing downstream sees the
syntax's own notation.

compel's blends (``("a cat", "a dog").blend(0.7, 0.3)``) and conjunctions (``("a cat", "a dog").and()``)
combine *encodings* of whole sub-prompts, not tokens: a syntax that has them gives a
:class:`CombinedPrompt` of :class:`ParsedPrompt` and :class:`Blend` parts from its ``structured`` entry,
and the conditioner (``conditioning/compel_math.py``), not the chunker, encodes each part and mixes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BREAK_WEIGHT", "Blend", "Break", "CombinedPrompt", "Item", "ParsedPrompt", "Run", "Syntax"]

BREAK_WEIGHT = -1.0
"""The weight A1111 gives its ``("BREAK", -1)`` marker in the ``(text, weight)`` pairs."""


@dataclass(frozen=True)
class Run:
    """Text read at one weight.

    Attributes:
        text: the text, with the syntax's notation (brackets, weights, escapes) removed.
        weight: the emphasis weight, a finite float (1.0 for plain text).
    """

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Break:
    """A1111's ``BREAK``: the chunker starts a new 77-token chunk here."""


Item = Run | Break


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt as a syntax read it: runs of weighted text and breaks, in prompt order.

    Example:
        >>> parsed = ParsedPrompt((Run("a ", 1.0), Run("cat", 1.5), Break(), Run("snow", 1.0)))
        >>> parsed.to_pairs()
        [('a ', 1.0), ('cat', 1.5), ('BREAK', -1.0), ('snow', 1.0)]
        >>> ParsedPrompt.from_pairs(parsed.to_pairs()) == parsed
        True
    """

    items: tuple[Item, ...]

    def to_pairs(self) -> list[tuple[str, float]]:
        """The ``(text, weight)`` pairs of :func:`sdclip.parse_prompt`, with ``("BREAK", -1.0)`` for a break."""
        return [("BREAK", BREAK_WEIGHT) if isinstance(item, Break) else (item.text, item.weight) for item in self.items]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, float]]) -> ParsedPrompt:
        """The typed form of ``(text, weight)`` pairs; ``("BREAK", -1.0)`` (exactly) is a break, as in A1111."""
        return cls(tuple(Break() if (t == "BREAK" and w == BREAK_WEIGHT) else Run(t, w) for t, w in pairs))


@dataclass(frozen=True)
class Blend:
    """compel's ``(...).blend(w1, w2, ...)``: the encodings of ``parts`` mixed as ``sum(w_i * e_i)``.

    Attributes:
        parts: the prompts mixed, each read on its own.
        weights: one per part.
        normalize: divide the weights by their sum first (compel's default; off with ``no_normalize``).
    """

    parts: tuple[ParsedPrompt, ...]
    weights: tuple[float, ...]
    normalize: bool = True


@dataclass(frozen=True)
class CombinedPrompt:
    """A prompt whose encoding combines several encodings: compel's ``.and()`` parts (concatenated on
    the token axis, each scaled away from the empty prompt by its weight) of which each is a
    :class:`ParsedPrompt` or a :class:`Blend`. A plain prompt is one part at weight 1.0.
    """

    parts: tuple[ParsedPrompt | Blend, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Syntax:
    """A prompt syntax: how text is read, chunked and weighted. Registered with
    :func:`sdclip.prompts.syntaxes.register_syntax`; everything that takes ``syntax=`` reads this entry.

    Attributes:
        name: what ``syntax=`` and ``--syntax`` accept.
        parse: text to :class:`ParsedPrompt`; gets a valid ``str`` (checked before), never raises on one
            except :class:`~sdclip.errors.PromptError` for input it refuses.
        weighting: the weighting mode used when ``weighting=None`` (``"a1111"``, ``"comfy"``,
            ``"multiply"``, or None for none).
        layout: how runs fill 77-token chunks: ``"diffusers"`` (one window cut as diffusers cuts it when
            truncating, A1111's chunks otherwise), ``"a1111"`` or ``"comfy"``
            (see :mod:`sdclip.prompts.chunking`).
        embedding_prefix: whether ``embedding:name`` names a textual-inversion embedding (ComfyUI).
        description: one line for help texts.
        schedule: ``(text, steps) -> entries`` for a syntax whose prompts change during sampling (A1111's
            ``[from:to:when]`` and ``[a|b]``: :func:`sdclip.prompts.schedules.prompt_schedule`); None when
            its prompts never do. ``encode_schedule`` reads it; ``parse`` sees each scheduled text.
        structured: text to :class:`CombinedPrompt` for a syntax whose prompts combine encodings (compel's
            blends and ``.and()``); the conditioner then encodes with compel's math
            (``conditioning/compel_math.py``, whose weighting is ``"comfy"``: such a syntax is registered with
            ``weighting="comfy"``) and ``parse`` is only what inspection shows.
        pairs: text straight to ``parse(text).to_pairs()``, for a syntax that computes the pairs first:
            :func:`sdclip.parse_prompt` then skips building a :class:`Run` per run (a 1 MB prompt can
            hold 200k of them); None builds the pairs from ``parse``.
    """

    name: str
    parse: Callable[[str], ParsedPrompt]
    weighting: str | None = None
    layout: Literal["diffusers", "a1111", "comfy"] = "a1111"
    embedding_prefix: bool = False
    description: str = ""
    schedule: Callable[[str, int], tuple] | None = None
    structured: Callable[[str], CombinedPrompt] | None = None
    pairs: Callable[[str], list[tuple[str, float]]] | None = None
