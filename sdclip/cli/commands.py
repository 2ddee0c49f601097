"""The CLI's subcommands, one module each; ``COMMANDS`` is the order ``sdclip --help`` lists them."""

from . import demo, embed, encode, inspect_cmd, plot_scores, report, score, tokens, train

COMMANDS = [encode, tokens, score, inspect_cmd, plot_scores, report, train, embed, demo]
