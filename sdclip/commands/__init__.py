"""The CLI's subcommands, one module each; ``COMMANDS`` is the order ``sdclip --help`` lists them."""

from . import encode, score, tokens

COMMANDS = [encode, tokens, score]
