"""Options and output helpers that several subcommands share."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ..errors import SdclipError

if TYPE_CHECKING:
    from ..models.options import LoadOptions


def add_model_options(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """``--model``, ``--device``, ``--dtype``, ``--allow-pickle``, ``--offline``."""
    parser.add_argument("--model", default=default, metavar="SRC",
                        help="hub id, model folder, pipeline folder or .safetensors checkpoint"
                        + (f" (default: {default})" if default else ""))
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                        help="default: fp16 on cuda, fp32 on cpu")
    parser.add_argument("--allow-pickle", action="store_true", help="accept .ckpt/.pt/.bin checkpoints")
    parser.add_argument("--offline", action="store_true", help="never touch the network (like HF_HUB_OFFLINE=1)")


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The flags ``add_model_options`` defines, as the ``LoadOptions`` every loader takes."""
    from ..models.options import LoadOptions

    return LoadOptions(device=args.device, dtype=args.dtype, local_files_only=True if args.offline else None,
                       allow_pickle=args.allow_pickle)


def output_path(value: str, *, suffixes: tuple[str, ...], option: str = "--out") -> Path:
    """``value`` as an output path with one of ``suffixes``; its folder is created."""
    path = Path(value)
    if path.suffix.lower() not in suffixes:
        raise SdclipError(f"{option} '{value}': expected a file ending in {' or '.join(suffixes)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def stdout() -> Console:
    """A rich console on stdout (tables)."""
    return Console(file=sys.stdout, soft_wrap=True)


def stderr() -> Console:
    """A rich console on stderr (notes, progress)."""
    return Console(file=sys.stderr, soft_wrap=True)
