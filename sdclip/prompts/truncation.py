"""The one warning sdclip gives when a prompt is longer than a text encoder's token limit.

Plain Python; the text conditioner and the scorer both warn through :func:`warn_truncated`, so the
wording is written once.
"""

from __future__ import annotations

import sys
import warnings

__all__ = ["TruncationWarning", "caller_stacklevel", "warn_truncated"]


class TruncationWarning(UserWarning):
    """A prompt was longer than the model's token limit and was cut (its end-of-text token kept)."""


def caller_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` that points at the first frame outside sdclip (the user's call).

    Example:
        >>> caller_stacklevel() >= 1
        True
    """
    frame, level = sys._getframe(1), 1  # level 1: the frame that calls warnings.warn
    while frame is not None and frame.f_globals.get("__name__", "").startswith("sdclip."):
        frame, level = frame.f_back, level + 1
    return level


def warn_truncated(text: str, dropped: str, *, limit: int, what: str, hint: str = "") -> None:
    """Warn that ``text`` lost ``dropped`` to the ``limit``-token window, with a ``TruncationWarning``.

    Args:
        text: the prompt as given (shown cut to 60 characters).
        dropped: the decoded text past the limit.
        limit: the encoder's window in tokens (77 for CLIP).
        what: what happened to the prompt ("encoded", "scored").
        hint: how to keep the rest, if there is a way (appended in parentheses).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_truncated("a long prompt", "prompt", limit=77, what="encoded")
        >>> str(caught[0].message)
        "prompt 'a long prompt' is longer than the 77-token limit; encoded without: 'prompt'"
    """
    shown = f"{text[:60]!r}{'...' if len(text) > 60 else ''}"
    message = f"prompt {shown} is longer than the {limit}-token limit; {what} without: {dropped!r}"
    warnings.warn(message + (f" ({hint})" if hint else ""), TruncationWarning, stacklevel=caller_stacklevel())
