"""``sdclip inspect``: what the text encoder makes of a prompt, as tables and (optionally) plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..models.sources import DEFAULT_MODEL
from ._common import add_model_options, atomic_write, output_folder, output_path, prompt_text, save_png


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="per-token norms, weights, neighbours; compare prompts; plots",
        description="Show how a prompt is tokenized and encoded: per-token hidden-state norm, cosine to the pooled "
        "embedding and to the empty prompt, nearest vocabulary tokens; compare it with other prompts.",
    )  # fmt: skip
    parser.add_argument("prompt", metavar="PROMPT", type=prompt_text)
    parser.add_argument("--compare", action="append", default=[], metavar="PROMPT2", type=prompt_text,
                        help="compare with this prompt (repeat for several; a similarity matrix covers all)")
    parser.add_argument("--syntax", default="plain", metavar="SYNTAX",
                        help="prompt syntax: plain (default), a1111 or comfy")
    parser.add_argument("--no-truncate", dest="truncate", action="store_false",
                        help="split long prompts into 77-token chunks instead of cutting them")
    parser.add_argument("--weighting", default=None, metavar="MODE", help="a1111, comfy or multiply")
    parser.add_argument("--clip-skip", type=int, default=None, metavar="N", help="diffusers' clip_skip")
    parser.add_argument("--k", type=int, default=5, metavar="K", help="nearest vocabulary tokens per token (default 5)")
    parser.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots into this folder")
    parser.add_argument("--json", default=None, metavar="FILE.json", help="write every number shown as JSON")
    add_model_options(parser, default=DEFAULT_MODEL)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inspection import api as inspection
    from ..conditioning.conditioner import TextConditioner
    from ..errors import PromptError
    from ._common import stderr, stdout

    inspection.check_options(args.syntax, args.weighting)  # before minutes of model loading
    if args.k < 0:
        raise PromptError(f"--k {args.k}: expected an integer >= 0")
    json_path = output_path(args.json, suffixes=(".json",), option="--json") if args.json else None
    plot_folder = output_folder(args.plot, option="--plot") if args.plot else None
    cond = TextConditioner.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle,
        local_files_only=True if args.offline else None,
    )  # fmt: skip
    options = {"syntax": args.syntax, "truncate": args.truncate, "weighting": args.weighting}
    console = stdout()
    report = inspection.embedding_report(cond, args.prompt, k=args.k, clip_skip=args.clip_skip, **options)
    console.print(report)
    comparisons = [inspection.compare(cond, args.prompt, other, **options) for other in args.compare]
    for comparison in comparisons:
        console.print(comparison)
    matrix = None
    if args.compare:
        matrix = inspection.similarity_matrix(cond, [args.prompt, *args.compare], **options)
        if len(args.compare) > 1:
            console.print(matrix)
    if json_path is not None:
        payload = {
            "model": str(args.model),
            "report": report.to_dict(),
            "comparisons": [c.to_dict() for c in comparisons],
            "similarity": matrix.to_dict() if matrix else None,
        }
        atomic_write(json_path, lambda file: file.write(json_text(payload)), option="--json", encoding="utf-8")
        stderr().print(f"wrote {json_path}")
    if plot_folder is not None:
        for path in _write_plots(cond, args, report, matrix, options):
            stderr().print(f"wrote {path}")
    return 0


def json_text(payload: Any) -> str:
    """``payload`` as strict JSON: NaN and infinities become ``null`` (``json.dumps`` would write the
    invalid ``NaN`` / ``Infinity``), and ``allow_nan=False`` guarantees none is left.

    Example:
        >>> print(json_text({"cosine": float("nan"), "norm": float("inf"), "id": 7}))
        {
         "cosine": null,
         "norm": null,
         "id": 7
        }
    """
    import math

    def finite(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value

    return json.dumps(finite(payload), indent=1, ensure_ascii=False, allow_nan=False)


def _write_plots(cond: Any, args: argparse.Namespace, report: Any, matrix: Any, options: dict) -> list[Path]:
    from ..inspection import api as inspection
    from .. import plots

    folder = Path(args.plot)
    written = [
        save_png(plots.plot_similarity(inspection.token_similarity(cond, args.prompt, **options)),
                 folder / "token_similarity.png", option="--plot"),
        save_png(plots.plot_token_report(report), folder / "token_report.png", option="--plot"),
    ]  # fmt: skip
    if matrix is not None:
        written.append(save_png(plots.plot_similarity(matrix), folder / "prompt_similarity.png", option="--plot"))
    return written
