"""The command line: ``sdclip SUBCOMMAND``, one module per subcommand, no business logic.

Example:
    >>> from sdclip.cli import main
    >>> main(["tokens", "a photo of a cat"])  # doctest: +SKIP
    0
"""

from .app import main

__all__ = ["main"]
