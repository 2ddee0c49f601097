"""The CLI's subcommands, one module each; ``COMMANDS`` is the order ``sdclip --help`` lists them."""

from . import encode, tokens

COMMANDS = [encode, tokens]
