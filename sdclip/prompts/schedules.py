"""A1111's prompt editing ``[from:to:when]`` and alternation ``[a|b]``: which text at which sampling step.

Plain Python over strings, no torch. :func:`prompt_schedule` is A1111's
``get_learned_conditioning_prompt_schedules`` for one prompt (``modules/prompt_parser.py``, without
hires-fix offsets): the steps at which the text changes and the text up to each, read with the same
grammar::

    start:     (prompt | /[][():]/+)*
    prompt:    (emphasized | scheduled | alternate | plain | WHITESPACE)*
    emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"     (kept as text)
    scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
    alternate: "[" prompt ("|" [prompt])+ "]"
    plain:     /([^\\\\\\[\\]():|]|\\\\.)+/

A1111 parses with lark's Earley parser; here a recursive descent tries each bracket construct in the
order above (scheduled, alternate, emphasized) and falls back to a stray bracket, which picks the same
reading on A1111's documented examples and on the generated prompts of the tests. As in A1111, a prompt
the grammar does not accept (a ``|`` outside brackets, a trailing lone backslash) has no schedule.

Steps: ``NUMBER`` with a ``.`` is a fraction of ``steps`` (``[a:b:0.25]``), without one a step number
(``[a:b:5]``); both are truncated to whole steps, capped at ``steps``, and ignored below 1. The text for
step ``s`` is the entry with the smallest end step ``>= s``. One deviation: A1111 crashes on a number
that overflows to infinity (``1e400``); here it reads as ``steps``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["ScheduleEntry", "has_schedule", "prompt_schedule", "step_ranges"]

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_WHITESPACE = re.compile(r"\s+")
# lark's common.SIGNED_NUMBER: ["+"|"-"] (FLOAT | INT), FLOAT = INT _EXP | DECIMAL _EXP?
_NUMBER = re.compile(r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)")
_STRAY = "[]():"


@dataclass(frozen=True)
class ScheduleEntry:
    """One entry of a prompt's schedule: ``text`` is used up to and including step ``end`` (A1111's steps).

    Attributes:
        end: the last step (A1111's ``end_at_step``) at which ``text`` is the prompt.
        text: the prompt text then, with the scheduling syntax resolved (emphasis left as written).
    """

    end: int
    text: str


# The parse tree: str (text kept as written), _Scheduled, _Alternate; a list is a sequence.
@dataclass
class _Scheduled:
    before: list | None
    after: list
    number: str


@dataclass
class _Alternate:
    options: list[list | None]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text

    def prompt(self, pos: int) -> tuple[list, int]:
        """``prompt``: as many items as match from ``pos`` (never fails; may be empty)."""
        items: list = []
        text = self.text
        while pos < len(text):
            char = text[pos]
            if char == "[" or char == "(":
                found = self.bracket(pos)
                if found is None:
                    break
                node, pos = found
                items.append(node)
                continue
            match = _PLAIN.match(text, pos)  # plain text includes whitespace
            if match is None:
                break
            items.append(match.group())
            pos = match.end()
        return items, pos

    def bracket(self, pos: int) -> tuple[object, int] | None:
        """A scheduled, alternate or emphasized construct starting at ``pos``, or None."""
        text = self.text
        if text[pos] == "(":
            inner, end = self.prompt(pos + 1)
            if end < len(text) and text[end] == ")":
                return ["(", inner, ")"], end + 1
            if end < len(text) and text[end] == ":":
                second, end2 = self.prompt(end + 1)
                if end2 < len(text) and text[end2] == ")":
                    return ["(", inner, ":", second, ")"], end2 + 1
            return None
        first, end = self.prompt(pos + 1)
        if end >= len(text):
            return None
        if text[end] == ":":
            found = self.schedule_tail(first, end + 1)
            if found is not None:
                return found
        if text[end] == "|":
            options: list[list | None] = [first]
            while end < len(text) and text[end] == "|":
                option, end = self.prompt(end + 1)
                options.append(option or None)
            if end < len(text) and text[end] == "]" and len(options) > 1:
                return _Alternate(options), end + 1
            return None
        if text[end] == "]":
            return ["[", first, "]"], end + 1
        return None

    def schedule_tail(self, first: list, pos: int) -> tuple[_Scheduled, int] | None:
        """After ``"[" prompt ":"``: either ``prompt ":" when "]"`` or ``when "]"``."""
        text = self.text
        second, end = self.prompt(pos)
        if end < len(text) and text[end] == ":":
            found = self.when(end + 1)
            if found is not None:
                return _Scheduled(first, second, found[0]), found[1]
        found = self.when(pos)
        if found is not None:
            return _Scheduled(None, first, found[0]), found[1]
        return None

    def when(self, pos: int) -> tuple[str, int] | None:
        """``[WHITESPACE] NUMBER [WHITESPACE] "]"`` at ``pos``: the number's text and the end."""
        text = self.text
        space = _WHITESPACE.match(text, pos)
        pos = space.end() if space else pos
        number = _NUMBER.match(text, pos)
        if number is None:
            return None
        pos = number.end()
        space = _WHITESPACE.match(text, pos)
        pos = space.end() if space else pos
        if pos < len(text) and text[pos] == "]":
            return number.group(), pos + 1
        return None

    def start(self) -> list | None:
        """``start``: prompts and stray brackets/colons up to the end; None where A1111's parser fails."""
        items: list = []
        pos, text = 0, self.text
        while pos < len(text):
            node, pos = self.prompt(pos)
            items += node
            if pos < len(text):
                if text[pos] not in _STRAY:
                    return None  # e.g. a "|" outside brackets, a lone trailing backslash
                items.append(text[pos])
                pos += 1
        return items


def _when(number: str, steps: int) -> int:
    value = float(number)
    if "." in number:
        value *= steps
    if math.isinf(value):  # A1111 raises OverflowError in int(); the nearest reading is "never" / "always"
        return steps if value > 0 else -1
    return min(steps, int(value))


def _collect(node: object, steps: int, found: set[int]) -> None:
    if isinstance(node, str):
        return
    if isinstance(node, list):
        for child in node:
            _collect(child, steps, found)
    elif isinstance(node, _Scheduled):
        when = _when(node.number, steps)
        if when >= 1:
            found.add(when)
        for child in (node.before, node.after):
            _collect(child, steps, found)
    elif isinstance(node, _Alternate):
        found.update(range(1, steps + 1))
        for child in node.options:
            _collect(child, steps, found)


def _text_at(node: object, step: int, steps: int, out: list[str]) -> None:
    if isinstance(node, str):
        out.append(node)
    elif isinstance(node, list):
        for child in node:
            _text_at(child, step, steps, out)
    elif isinstance(node, _Scheduled):
        chosen = node.before if step <= _when(node.number, steps) else node.after
        if chosen:
            _text_at(chosen, step, steps, out)
    elif isinstance(node, _Alternate):
        chosen = node.options[(step - 1) % len(node.options)]
        if chosen:
            _text_at(chosen, step, steps, out)


def has_schedule(text: str) -> bool:
    """Whether ``text`` could hold prompt editing or alternation (a cheap check: it has ``[``).

    Example:
        >>> has_schedule("a (cat:1.2)"), has_schedule("a [cat:dog:5]")
        (False, True)
    """
    return "[" in text


def prompt_schedule(text: str, steps: int) -> tuple[ScheduleEntry, ...]:
    """The texts ``text`` takes during ``steps`` sampling steps, as A1111's
    ``get_learned_conditioning_prompt_schedules([text], steps)[0]`` gives them.

    Args:
        text: the prompt, in A1111's syntax.
        steps: the number of sampling steps, >= 1.

    Returns:
        Entries in step order; the last ends at ``steps``. A prompt without scheduling gives one.
        Neighbouring entries may hold the same text (A1111 keeps every boundary it finds).

    Example:
        >>> [(e.end, e.text) for e in prompt_schedule("a [cat:dog:0.5] in [snow|rain]", 4)]
        [(1, 'a cat in snow'), (2, 'a cat in rain'), (3, 'a dog in snow'), (4, 'a dog in rain')]
        >>> prompt_schedule("a [b:3]", 10)
        (ScheduleEntry(end=3, text='a '), ScheduleEntry(end=10, text='a b'))
    """
    if not has_schedule(text):
        return (ScheduleEntry(steps, text),)
    tree = _Parser(text).start()
    if tree is None:
        return (ScheduleEntry(steps, text),)
    found = {steps}
    _collect(tree, steps, found)
    entries = []
    for step in sorted(found):
        out: list[str] = []
        _text_at(tree, step, steps, out)
        entries.append(ScheduleEntry(step, "".join(out)))
    return tuple(entries)


def step_ranges(entries: tuple[ScheduleEntry, ...], steps: int) -> list[range]:
    """The denoising steps (from 0: diffusers' callback index, A1111's sampler counter) each entry is used
    for: A1111 picks, at step ``i``, the first entry whose end is ``>= i``. An entry may get no step.

    Example:
        >>> step_ranges(prompt_schedule("a [cat:dog:3]", 6), 6)
        [range(0, 4), range(4, 6)]
        >>> [list(r) for r in step_ranges(prompt_schedule("[cat|dog]", 3), 3)]
        [[0, 1], [2], []]
    """
    ranges, first = [], 0
    for entry in entries:
        last = min(entry.end, steps - 1)
        ranges.append(range(first, max(first, last + 1)))
        first = max(first, last + 1)
    return ranges
