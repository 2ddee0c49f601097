"""``sdclip tokens``: how prompts tokenize, what falls past the 77-token limit. Works offline."""

from __future__ import annotations

import argparse

from ..prompts.syntaxes import syntax_names
from ._common import prompt_text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokens", help="show each token, its id and position",
                                   description="Show how prompts tokenize; no weights needed.")
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", type=prompt_text)
    parser.add_argument("--model", default=None, metavar="SRC",
                        help="use this model's tokenizer (default: the shipped clip-vit-large-patch14 one)")
    parser.add_argument("--syntax", default="plain", choices=syntax_names(),
                        help="how the prompt is read (weights, BREAK); default plain, as diffusers")
    parser.add_argument("--no-truncate", action="store_true", help="show every chunk of a long prompt")
    parser.add_argument("--max-sequence-length", type=int, default=None, metavar="N",
                        help="SD3 / Flux: T5's token limit (default: the pipeline's, 256 / 512)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from dataclasses import replace

    from ..conditioning.mmdit import DEFAULT_MAX_SEQUENCE_LENGTH
    from ..conditioning.t5 import list_t5_tokens, t5_tokens
    from ..models.loading import tokenizer_for_source
    from ..models.mmdit import t5_tokenizer_for_source
    from ..prompts.tokens import tokenize_prompt
    from ._common import stdout

    tokenizer = tokenizer_for_source(args.model)
    t5 = t5_tokenizer_for_source(args.model) if args.model is not None else None
    console = stdout()
    for prompt in args.prompts:
        tokens = tokenize_prompt(prompt, tokenizer, syntax=args.syntax, truncate=not args.no_truncate)
        if t5 is not None:  # SD3 / Flux: T5's tokens follow, chunk "t5"
            length = args.max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH[t5[1]]
            tokens += [replace(t, chunk="t5") for t in list_t5_tokens(t5_tokens(prompt, t5[0], syntax=args.syntax,
                                                                                max_length=length), t5[0])]
        cut = sum(token.truncated for token in tokens)
        title = f"{prompt!r}: {len(tokens) - cut} tokens" + (f", {cut} past the limit (dropped)" if cut else "")
        table = Table(title=title)
        for column in ("chunk", "position", "token", "id", "weight", ""):
            table.add_column(column)
        for token in tokens:
            table.add_row(str(token.chunk), str(token.position), token.text, str(token.id), f"{token.weight:g}",
                          "[red]truncated[/red]" if token.truncated else "")
        console.print(table)
    return 0
