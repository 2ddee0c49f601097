"""Which text a prompt with A1111 prompt editing or alternation has at which sampling step.

``schedule(prompt, steps=N)`` is the table ``sdclip tokens --steps N`` prints: per entry, A1111's end
step, the denoising steps (counted from 0, as diffusers' callback and A1111's sampler count) that use it,
and the text. No model needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import PromptError
from ..prompts.schedules import prompt_schedule, step_ranges
from ..prompts.syntaxes import get_syntax
from .results import Renderable

__all__ = ["PromptSchedule", "schedule"]


@dataclass(frozen=True)
class PromptSchedule(Renderable):
    """A prompt's texts over sampling.

    Attributes:
        prompt: the prompt as written.
        steps: the number of sampling steps.
        entries: ``(end, first_step, last_step, text)``: A1111's end step, then the denoising steps (from
            0, inclusive) that use ``text``; ``first_step > last_step`` when no step does.
    """

    prompt: str
    steps: int
    entries: tuple[tuple[int, int, int, str], ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        keys = ("end", "first_step", "last_step", "text")
        return {"prompt": self.prompt, "steps": self.steps, "entries": [dict(zip(keys, e)) for e in self.entries]}

    def to_table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        # Text, not markup: a prompt's brackets are not style tags and its ":dog:" is not an emoji
        table = Table(title=Text(f"{self.prompt!r}: {len(self.entries)} texts over {self.steps} steps"),
                      title_justify="left")
        for name, justify in (("A1111 end", "right"), ("steps (from 0)", "right"), ("text", "left")):
            table.add_column(name, justify=justify)
        for end, first, last, text in self.entries:
            used = "-" if first > last else (str(first) if first == last else f"{first}-{last}")
            table.add_row(str(end), used, Text(repr(text)))
        return table


def schedule(prompt: str, *, steps: int, syntax: str = "a1111") -> PromptSchedule:
    """The texts ``prompt`` takes over ``steps`` sampling steps (one entry for a syntax without schedules).

    Raises:
        PromptError: ``steps`` is not an integer >= 1, or ``syntax`` is unknown.

    Example:
        >>> schedule("a [cat:dog:0.5]", steps=4).entries
        ((2, 0, 2, 'a cat'), (4, 3, 3, 'a dog'))
    """
    reader = get_syntax(syntax).schedule
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise PromptError(f"steps: expected an integer >= 1 (the pipeline's num_inference_steps), got {steps!r}")
    entries = reader(prompt, steps) if reader is not None else prompt_schedule("", steps)
    if reader is None:
        entries = (type(entries[0])(steps, prompt),)
    ranges = step_ranges(entries, steps)
    rows = tuple((e.end, r.start, r.stop - 1, e.text) for e, r in zip(entries, ranges, strict=True))
    return PromptSchedule(prompt, steps, rows)
