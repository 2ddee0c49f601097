"""The options that shape an encoding, checked in one place.

``EncodeSettings`` holds every option besides the text that changes an encoding (and so keys the
conditioner's cache); ``resolve_settings`` checks the user's values and fills in the syntax's own
weighting; the other ``check_*`` functions check the remaining ``encode`` options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import PromptError
from ..prompts.syntaxes import get_syntax
from .weighting import MODES

__all__ = ["EncodeSettings", "check_clip_skip", "check_num_images", "resolve_settings"]


@dataclass(frozen=True)
class EncodeSettings:
    """Everything besides the text that changes an encoding (and so keys the cache)."""

    clip_skip: int | None
    syntax: str = "plain"
    truncate: bool = True
    weighting: str | None = None  # resolved: None (no weights), "a1111", "comfy" or "multiply"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_settings(clip_skip: Any, syntax: Any, truncate: Any, weighting: Any) -> EncodeSettings:
    """Check the options and return them as ``EncodeSettings`` (weighting None: the syntax's own).

    Example:
        >>> resolve_settings(None, "a1111", True, None)
        EncodeSettings(clip_skip=None, syntax='a1111', truncate=True, weighting='a1111')
        >>> resolve_settings(-1, "plain", True, None)
        Traceback (most recent call last):
        ...
        sdclip.errors.PromptError: clip_skip: expected None or an integer >= 0, got -1
    """
    if clip_skip is not None and (not _is_int(clip_skip) or clip_skip < 0):
        raise PromptError(f"clip_skip: expected None or an integer >= 0, got {clip_skip!r}")
    default_weighting = get_syntax(syntax).weighting  # the one check of syntax=, and its own weighting
    if not isinstance(truncate, bool):
        raise PromptError(f"truncate: expected True or False, got {truncate!r}")
    if weighting is not None and weighting not in MODES:
        raise PromptError(f"weighting: expected None or one of {', '.join(map(repr, MODES))}, got {weighting!r}")
    return EncodeSettings(clip_skip, syntax, truncate, weighting or default_weighting)


def check_num_images(value: Any) -> int:
    """``num_images_per_prompt`` must be an integer >= 1 (a bool is refused, though Python counts it an int).

    Example:
        >>> check_num_images(True)
        Traceback (most recent call last):
        ...
        sdclip.errors.PromptError: num_images_per_prompt: expected an integer >= 1, got True
    """
    if not _is_int(value) or value < 1:
        raise PromptError(f"num_images_per_prompt: expected an integer >= 1, got {value!r}")
    return value


def check_clip_skip(clip_skip: int | None, layer_limits: list[int]) -> None:
    """``clip_skip`` (already type-checked) must leave a layer to take in every encoder.

    ``layer_limits`` holds, per encoder, the largest ``clip_skip`` it allows.

    Example:
        >>> check_clip_skip(12, [11])
        Traceback (most recent call last):
        ...
        sdclip.errors.PromptError: clip_skip: 12 skips more layers than the text encoder has; expected at most 11
    """
    if clip_skip is None:
        return
    limit = min(layer_limits)
    if clip_skip > limit:
        raise PromptError(f"clip_skip: {clip_skip} skips more layers than the text encoder has; expected at most {limit}")
