"""``sdclip plot-scores``: ranked image grids and a score histogram from ``sdclip score``'s CSV / JSONL.

A score file that cannot be read (bad numbers, a rank of 1e400) is one line and exit 2; an image that cannot
be drawn (missing, corrupt, not an image, a decompression bomb) is a grey tile saying why, and a note.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot-scores", help="ranked image grids and a histogram of a score file",
        description="Draw one ranked image grid per prompt (best first, scores in the captions) and a histogram "
        "of all scores, from the CSV or JSONL file `sdclip score` writes.",
    )  # fmt: skip
    parser.add_argument("file", metavar="FILE", help="a .csv or .jsonl score file (image, prompt, score, rank, error)")
    parser.add_argument("--images", default=None, metavar="ROOT",
                        help="folder the image paths are relative to (default: the current folder, then the "
                        "score file's folder)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument("--top", type=int, default=8, metavar="N", help="images per grid (default 8)")
    parser.add_argument("--columns", type=int, default=4, metavar="N", help="images per grid row (default 4)")
    parser.set_defaults(run=run)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "prompt"


def run(args: argparse.Namespace) -> int:
    from rich.table import Table
    from tqdm import tqdm

    from .. import plots
    from ..errors import SdclipError
    from ..scoring.score_files import ranked_groups, read_score_file
    from ._common import output_folder, save_png, shown, stderr, stdout

    if args.top < 1 or args.columns < 1:
        raise SdclipError(f"--top {args.top} / --columns {args.columns}: expected integers >= 1")
    if args.images is not None and not Path(args.images).is_dir():
        raise SdclipError(f"--images '{args.images}': no such folder")
    rows = read_score_file(args.file)
    roots = [Path(args.images)] if args.images else [Path.cwd(), Path(args.file).resolve().parent]
    groups = ranked_groups(rows)
    if not groups:
        raise SdclipError(f"score file '{args.file}': every row has an error; nothing to plot")
    out = output_folder(args.out)
    written = [save_png(plots.plot_score_histogram(rows), out / "score_histogram.png")]
    table = Table(title=f"{shown(args.file)}: {len(rows)} rows, {len(groups)} prompt(s)", title_justify="left")
    for column, justify in [("prompt", "left"), ("images", "right"), ("best", "right"), ("mean", "right"),
                            ("grid", "left")]:  # fmt: skip
        table.add_column(column, justify=justify)
    missing = unreadable = 0
    for number, (prompt, group) in enumerate(tqdm(groups.items(), desc="grids", disable=None), start=1):
        fig = plots.plot_ranked_grid(group, images_root=roots, top=args.top, columns=args.columns)
        missing += sum("(missing)" in axis.get_title() for axis in fig.axes)
        unreadable += sum("(unreadable:" in axis.get_title() for axis in fig.axes)
        path = save_png(fig, out / f"ranked_{number:02d}_{_slug(prompt)}.png")
        written.append(path)
        scores = [row.score for row in group]
        table.add_row(shown(prompt), str(len(group)), f"{scores[0]:.3f}", f"{sum(scores) / len(scores):.3f}", str(path))
    stdout().print(table)
    errors = sum(row.score is None for row in rows)
    if errors:
        stderr().print(f"{errors} row(s) with errors were skipped")
    if missing:
        stderr().print(f"{missing} image(s) not found (drawn grey); pass --images ROOT if paths are relative elsewhere")
    if unreadable:
        stderr().print(f"{unreadable} image(s) could not be read (drawn grey, the reason in the caption)")
    stderr().print(f"wrote {len(written)} PNG(s) to {shown(str(out))}")
    return 0
