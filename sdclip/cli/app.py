"""The ``sdclip`` command: a thin layer over the public API.

Each subcommand lives in ``sdclip/cli/<name>.py`` with ``add_parser(subparsers)``; this module
parses, dispatches, and turns every ``SdclipError`` into one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import COMMANDS
from ..errors import SdclipError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2), like every other sdclip error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="sdclip", description="CLIP for Stable Diffusion work.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 fine, 1 some bad items with --strict, 2 bad input).

    Example:
        >>> main(["tokens", "a cat"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)  # bad flags: one line on stderr, exit 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --processes re-launches
    try:
        return int(args.run(args) or 0)
    except SdclipError as error:
        print(f"sdclip {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sdclip {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
