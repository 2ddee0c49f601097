"""``sdclip encode``: prompts to a .safetensors file of diffusers-ready tensors."""

from __future__ import annotations

import argparse

from ..models.sources import DEFAULT_MODEL
from ..prompts.syntaxes import syntax_names
from ._common import add_model_options, atomic_write, output_path, prompt_text, stdout


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("encode", help="encode prompts to prompt_embeds / pooled_prompt_embeds",
                                   description="Encode prompts into the tensors a diffusers pipeline takes.")
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", type=prompt_text)
    parser.add_argument("--negative", default=None, metavar="TEXT", type=prompt_text, help="negative prompt, shared by all prompts")
    parser.add_argument("--clip-skip", type=int, default=None, metavar="N",
                        help="diffusers' clip_skip: 1 = penultimate layer (A1111's 'Clip skip 2')")
    parser.add_argument("--syntax", default="plain", choices=syntax_names(),
                        help="prompt syntax: plain (default), a1111 '(cat:1.2)', comfy, compel 'cat++'")
    parser.add_argument("--weighting", default=None, metavar="MODE",
                        help="a1111, comfy or multiply (default: the syntax's own)")
    parser.add_argument("--no-truncate", dest="truncate", action="store_false",
                        help="encode long prompts in 77-token chunks instead of cutting them")
    parser.add_argument("--max-sequence-length", type=int, default=None, metavar="N",
                        help="SD3 / Flux: T5's tokens (default: the pipeline's, 256 / 512)")
    parser.add_argument("--t5-tokenizer", default=None, metavar="FOLDER",
                        help="SD3.5 single file: the folder of T5's tokenizer (a pipeline's tokenizer_3/)")
    parser.add_argument("--out", required=True, metavar="FILE.safetensors")
    add_model_options(parser, default=DEFAULT_MODEL)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table
    from safetensors.torch import save

    from ..conditioning.conditioner import TextConditioner
    from ..inspection.api import check_options

    check_options(args.syntax, args.weighting)  # before minutes of model loading
    out = output_path(args.out, suffixes=(".safetensors",))
    cond = TextConditioner.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle,
        local_files_only=True if args.offline else None, t5_tokenizer=args.t5_tokenizer,
    )
    mmdit = cond.family is not None
    result = cond.encode(args.prompts, args.negative, clip_skip=args.clip_skip, syntax=args.syntax,
                         truncate=args.truncate, weighting=args.weighting,
                         **({"max_sequence_length": args.max_sequence_length} if mmdit else {}))  # fmt: skip
    names = ["prompt_embeds", "pooled_prompt_embeds"]
    if args.negative is not None:
        names += ["negative_prompt_embeds", "negative_pooled_prompt_embeds"]
    if mmdit:  # SD3 / Flux: every tensor the pipeline takes (and Flux's text_ids)
        names = [*result.pipeline_kwargs(), *(["text_ids"] if result.text_ids is not None else [])]
    tensors = {name: getattr(result, name).contiguous().cpu() for name in names}
    data = save(tensors, metadata={"model": str(args.model), "prompts": "\n".join(args.prompts)})
    atomic_write(out, lambda file: file.write(data), binary=True)
    table = Table(title=f"wrote {out}")
    for column in ("tensor", "shape", "dtype"):
        table.add_column(column)
    for name, tensor in tensors.items():
        table.add_row(name, str(tuple(tensor.shape)), str(tensor.dtype).removeprefix("torch."))
    stdout().print(table)
    return 0
