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
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="with --syntax a1111: show which text [from:to:when] and [a|b] give at each of N steps")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

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
    texts = []
    for prompt in args.prompts:
        if args.steps is None:
            texts.append(prompt)
            continue
        from ..inspection.schedules import schedule

        scheduled = schedule(prompt, steps=args.steps, syntax=args.syntax)
        console.print(scheduled)
        texts += dict.fromkeys(text for *_, text in scheduled.entries)  # the tokens of each distinct text
    for prompt in texts:
        tokens = tokenize_prompt(prompt, tokenizer, syntax=args.syntax, truncate=not args.no_truncate)
        if t5 is not None:  # SD3 / Flux: T5's tokens follow, chunk "t5" (compel's .and() windows: "t5.1" ...)
            length = args.max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH[t5[1]]
            listed = list_t5_tokens(t5_tokens(prompt, t5[0], syntax=args.syntax, max_length=length), t5[0])
            tokens += [replace(t, chunk=f"t5.{t.chunk}" if t.chunk else "t5") for t in listed]
        cut = sum(token.truncated for token in tokens)
        title = f"{prompt!r}: {len(tokens) - cut} tokens" + (f", {cut} past the limit (dropped)" if cut else "")
        table = Table(title=Text(title))  # Text: brackets and :name: in a prompt are not markup or emoji
        for column in ("chunk", "position", "token", "id", "weight", ""):
            table.add_column(column)
        for token in tokens:
            table.add_row(str(token.chunk), str(token.position), token.text, str(token.id), f"{token.weight:g}",
                          "[red]truncated[/red]" if token.truncated else "")
        console.print(table)
    return 0
