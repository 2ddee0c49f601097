"""``sdclip train``: contrastive training / fine-tuning of a CLIP model (``sdclip.training.train``).

Parse, call ``train``, print a summary: the data readers, the loop and the output folder live in
``sdclip.training``. Under ``accelerate launch`` (or ``torchrun``) every process runs this same command.
"""

from __future__ import annotations

import argparse

from ._common import whole_number


_positive_int = whole_number(1)


_count = whole_number(0)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train or fine-tune a CLIP model contrastively on (image, caption) pairs",
        description="Train a CLIP model with CLIP's own objective (symmetric InfoNCE, learnable temperature) and "
        "write it as an HF CLIPModel folder that every sdclip command loads. Runs on accelerate: "
        "`accelerate launch -m sdclip train ...` for several GPUs or processes.",
    )  # fmt: skip
    parser.add_argument("--data", required=True, nargs="+", metavar="PATH",
                        help="folder of images with same-name .txt captions, .csv/.tsv/.jsonl (image, caption[, "
                        "label]), WebDataset .tar shards or a folder of them; several are concatenated")
    parser.add_argument("--model", required=True, metavar="SRC",
                        help="where to start: hub id, CLIP folder, .safetensors checkpoint, or a CLIPConfig .json "
                        "(text_config / vision_config / projection_dim) to train from scratch")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: the model, train_log.csv, train_curves.png, checkpoints/")
    parser.add_argument("--val-data", nargs="+", metavar="PATH", help="validation pairs (default: --val-fraction)")
    parser.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                        help="share of --data held out for evaluation (seeded; default 0)")
    parser.add_argument("--epochs", type=_positive_int, default=1, metavar="N")
    parser.add_argument("--max-steps", type=_positive_int, default=None, metavar="N", help="stop after N steps")
    parser.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                        help="pairs per process (the contrastive batch is N x processes; default 32)")
    parser.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (default 5e-4)")
    parser.add_argument("--weight-decay", type=float, default=0.2, metavar="WD", help="default 0.2")
    parser.add_argument("--warmup-steps", type=_count, default=0, metavar="N")
    parser.add_argument("--seed", type=_count, default=0, metavar="N")
    parser.add_argument("--image-size", type=_positive_int, default=None, metavar="PX",
                        help="vision input size of a model trained from a config (default: the config's)")
    lock = parser.add_mutually_exclusive_group()
    lock.add_argument("--lock-image", action="store_const", dest="lock", const="image",
                      help="freeze the vision tower and its projection (LiT)")
    lock.add_argument("--lock-text", action="store_const", dest="lock", const="text",
                      help="freeze the text tower and its projection")
    lock.add_argument("--keep-text-encoder", action="store_const", dest="lock", const="text_encoder",
                      help="freeze only the text encoder, so the SD conditioning stays bit-identical")
    parser.add_argument("--eval-every", type=_count, default=None, metavar="N",
                        help="evaluate every N steps (default: each epoch's end; 0: never)")
    parser.add_argument("--labels", nargs="+", default=(), metavar="LABEL",
                        help="class names for zero-shot accuracy (a pair's class: the label its caption contains)")
    parser.add_argument("--label-template", default="a photo of a {}.", metavar="TEXT")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--grad-accum", type=_positive_int, default=1, metavar="N", help="micro-batches per step")
    parser.add_argument("--group-size", type=_positive_int, default=1, metavar="N",
                        help="keep each N consecutive pairs in one batch (hard negatives made side by side)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--save-every", type=_count, default=0, metavar="N", help="checkpoint every N steps")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    again.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    parser.add_argument("--workers", type=_count, default=0, metavar="N", help="image decoding processes")
    parser.add_argument("--no-plot", action="store_true", help="do not draw train_curves.png")
    parser.set_defaults(run=run, lock="none")


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..training import train
    from ._common import output_folder, shown, stdout

    out = output_folder(args.out)
    result = train(
        args.data if len(args.data) > 1 else args.data[0], model=args.model, out=out,
        val_data=(args.val_data if len(args.val_data) > 1 else args.val_data[0]) if args.val_data else None,
        overwrite=args.overwrite, resume=args.resume, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        seed=args.seed, image_size=args.image_size, lock=args.lock, val_fraction=args.val_fraction,
        eval_every=args.eval_every, labels=tuple(args.labels), label_template=args.label_template,
        mixed_precision=args.mixed_precision, grad_accum=args.grad_accum, group_size=args.group_size,
        gradient_checkpointing=args.gradient_checkpointing, save_every=args.save_every, num_workers=args.workers,
        plot=not args.no_plot,
    )  # fmt: skip
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    table = Table(title=f"trained: {shown(str(result.out))}", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [("steps", result.steps), ("pairs seen", result.samples), ("train / val pairs",
            f"{result.train_pairs} / {result.val_pairs}"), ("bad images skipped", result.bad_images),
            ("bad validation images", result.val_bad_images)]  # fmt: skip
    rows += [(f"skipped: {reason}", count) for reason, count in result.skipped.items()]
    rows += [(name, f"{value:.3f}") for name, value in result.metrics.items() if name != "val_pairs"]
    for name, value in rows:
        table.add_row(name, str(value))
    stdout().print(table)
    return 0
