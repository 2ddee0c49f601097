"""``sdclip report``: one static HTML page of a score file to look at (grids, table, histograms, scatter, errors).

Images are linked relative to the report (``--thumbnails SIZE`` writes small JPEGs beside it first), so the
report opens from disk, offline, and stays small; move the report with its images (or thumbnails folder).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="an HTML report of a score file: ranked grids, sortable table, histograms, scatter",
        description="Write one self-contained HTML file (no server, no network) from the CSV or JSONL file "
        "`sdclip score` writes: per prompt a ranked grid with every metric under each image, a sortable table "
        "of all rows, a histogram per metric, metric-vs-metric scatter, and the rows that failed.",
    )  # fmt: skip
    parser.add_argument("file", metavar="SCORES", help="a .csv or .jsonl score file")
    parser.add_argument("--images", default=None, metavar="ROOT",
                        help="folder the image paths are relative to (default: the current folder, or the score "
                        "file's folder when the images are found from there)")
    parser.add_argument("--out", required=True, metavar="FILE.html", help="the report to write")
    parser.add_argument("--thumbnails", type=int, default=None, metavar="SIZE",
                        help="write JPEG thumbnails (longest side SIZE px) to <out>_thumbs/ and show those "
                        "(default: link the images themselves)")
    parser.add_argument("--title", default=None, help="page title (default: the score file's name)")
    parser.set_defaults(run=run)


def images_root(file: str, rows: list, given: str | None) -> Path:
    """``--images``, else the current folder, else the score file's folder where the first relative image is."""
    from ..errors import SdclipError

    if given is not None:
        if not Path(given).is_dir():
            raise SdclipError(f"--images '{given}': no such folder")
        return Path(given)
    relative = next((row.image for row in rows if not os.path.isabs(row.image)), None)
    beside = Path(file).resolve().parent
    if relative is not None and not Path(relative).exists() and (beside / relative).exists():
        return beside
    return Path.cwd()


def run(args: argparse.Namespace) -> int:
    from ..errors import SdclipError
    from ..report import write_report
    from ..scoring.score_files import read_score_file
    from ._common import output_path, shown, stdout

    if args.thumbnails is not None and not 16 <= args.thumbnails <= 2048:
        raise SdclipError(f"--thumbnails {args.thumbnails}: expected a size in pixels from 16 to 2048")
    out = output_path(args.out, suffixes=(".html", ".htm"))
    rows = read_score_file(args.file)
    root = images_root(args.file, rows, args.images)
    path = write_report(rows, out, images_root=root, thumbnails=args.thumbnails, title=args.title, source=args.file)
    size = path.stat().st_size
    stdout().print(f"report: {shown(str(path))} ({len(rows)} rows, {size / 1e6:.2f} MB; images linked from "
                   f"{shown(str(root))})")
    return 0
