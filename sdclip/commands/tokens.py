"""``sdclip tokens``: how prompts tokenize, what falls past the 77-token limit. Works offline."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokens", help="show each token, its id and position",
                                   description="Show how prompts tokenize; no weights needed.")
    parser.add_argument("prompts", nargs="+", metavar="PROMPT")
    parser.add_argument("--model", default=None, metavar="SRC",
                        help="use this model's tokenizer (default: the shipped clip-vit-large-patch14 one)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..loading import tokenizer_for_source
    from ..prompt_tokens import plain_prompt_tokens
    from ._common import stdout

    tokenizer = tokenizer_for_source(args.model)
    console = stdout()
    for prompt in args.prompts:
        tokens = plain_prompt_tokens(prompt, tokenizer)
        cut = sum(token.truncated for token in tokens)
        title = f"{prompt!r}: {len(tokens) - cut} tokens" + (f", {cut} past the limit (dropped)" if cut else "")
        table = Table(title=title)
        for column in ("position", "token", "id", ""):
            table.add_column(column)
        for token in tokens:
            table.add_row(str(token.position), token.text, str(token.id),
                          "[red]truncated[/red]" if token.truncated else "")
        console.print(table)
    return 0
