"""Prompt arguments as lists of strings: one text per prompt, checked, with errors that name the item.

Pure Python (no torch), shared by the text conditioner, the scorer and (through
:func:`sdclip.prompts.parser.parse`) every path from prompt text to tokens: a prompt that is not valid
Unicode text (a lone surrogate) is a ``PromptError`` naming the argument, never an error deep inside a
tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import PromptError, PromptTypeError


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate: what Python makes of a byte that is not UTF-8.

    Example:
        >>> has_lone_surrogate("caf\\udcc3"), has_lone_surrogate("café")
        (True, False)
    """
    return not text.isascii() and any("\ud800" <= char <= "\udfff" for char in text)


def printable(text: str) -> str:
    """``text`` with each lone surrogate shown as U+FFFD, so it prints and draws anywhere.

    Example:
        >>> printable("caf\\udcc3.png")
        'caf\ufffd.png'
    """
    if not has_lone_surrogate(text):
        return text
    return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text)


def check_unicode(text: str, name: str) -> str:
    """``text`` if it is valid Unicode text; a lone surrogate (what Python makes of a byte that is not
    UTF-8 in a file name or a command-line argument) is a ``PromptError`` naming ``name``.

    Example:
        >>> check_unicode("a cat", "prompt")
        'a cat'
        >>> check_unicode("a \\udcff cat", "prompt")
        Traceback (most recent call last):
        ...
        sdclip.errors.PromptError: prompt: must be valid UTF-8 text, but character 2 is a lone surrogate '\\udcff' (a byte that is not UTF-8, from a file or command line?); decode the text first
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise PromptError(
                f"{name}: must be valid UTF-8 text, but character {error.start} is a lone surrogate "
                f"{text[error.start]!r} (a byte that is not UTF-8, from a file or command line?); decode the text first"
            ) from None
    return text


def as_prompt_list(value: Any, name: str, *, allow_empty: bool = True) -> list[str]:
    """``value`` (a string or a sequence of strings) as a list; errors name the argument and the item.

    Example:
        >>> as_prompt_list("a cat", "prompt")
        ['a cat']
    """
    if not allow_empty and isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 0:
        raise PromptError(f"{name}: expected at least one text, got an empty list")
    if isinstance(value, str):
        return [check_unicode(value, name)]
    if not isinstance(value, Sequence):
        raise PromptTypeError(f"{name}: expected a string or a list of strings, got {type(value).__name__}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise PromptTypeError(f"{name}[{index}]: expected a string, got {type(item).__name__} {item!r}")
        check_unicode(item, f"{name}[{index}]")
    return list(value)


def validate_prompts(prompt: Any, negative_prompt: Any) -> tuple[list[str], list[str]]:
    """Prompt and negative prompt as two lists of equal length (a single negative is shared).

    Example:
        >>> validate_prompts(["a cat", "a dog"], "blurry")
        (['a cat', 'a dog'], ['blurry', 'blurry'])
    """
    prompts = as_prompt_list(prompt, "prompt")
    if not prompts:
        raise PromptError("prompt: expected at least one prompt, got an empty list")
    if negative_prompt is None:
        return prompts, [""] * len(prompts)
    return prompts, one_per_prompt(negative_prompt, prompts, "negative_prompt", "negative prompt")


def one_per_prompt(value: Any, prompts: list[str], name: str, what: str) -> list[str]:
    """``value`` as one text per prompt: a string is shared, a list must match ``prompts`` in length."""
    return one_per(value, len(prompts), name=name, what=what, per="prompt")


def one_per(value: Any, count: int, *, name: str, what: str, per: str) -> list[str]:
    """``value`` as ``count`` texts, one per ``per`` item: a string is shared, a list must have ``count``.

    Example:
        >>> one_per("a cat", 2, name="prompts", what="prompt", per="image")
        ['a cat', 'a cat']
    """
    if isinstance(value, str):
        return [check_unicode(value, name)] * count
    items = as_prompt_list(value, name, allow_empty=False)
    if len(items) != count:
        raise PromptError(
            f"{name}: has {len(items)} items but {per if per == 'prompt' else per + 's'} has {count}; "
            f"pass one {what} per {per}, or a single string for all"
        )
    return items


def second_prompts(value: Any, first: list[str], name: str) -> list[str]:
    """The texts for SDXL's second encoder: ``first`` when ``value`` is None or empty (as diffusers)."""
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        return first
    return one_per_prompt(value, first, name, name)
