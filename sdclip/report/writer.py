"""Writing the report: rows (or a score file) -> one HTML file, optionally with JPEG thumbnails beside it."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import SdclipError
from ..scoring.score_files import ScoreRow, read_score_file
from .data import image_link, report_data
from .html import render_report


def _thumbnail(source: Path, target: Path, size: int) -> bool:
    """Write a JPEG thumbnail (longest side ``size``) of ``source``; False when it cannot be read."""
    from PIL import Image

    try:
        info = os.stat(source)
        if not stat.S_ISREG(info.st_mode):
            return False
        if target.is_file():
            return True  # named by path, size and mtime: an existing one is current
        with Image.open(source) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, much faster
            image = image.convert("RGB")
            image.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
            partial = target.with_suffix(".part")
            image.save(partial, "JPEG", quality=80)
            os.replace(partial, target)
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _thumbnails(images: list[str], *, root: Path, folder: Path, size: int, workers: int) -> dict[str, Path]:
    """image (as in the rows) -> its thumbnail, for those that could be read."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = {}
    for image in dict.fromkeys(images):
        path = Path(image) if os.path.isabs(image) else root / image
        try:
            info = path.stat()
        except OSError:
            continue
        key = hashlib.sha1(f"{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}|{size}".encode(
            "utf-8", "surrogateescape")).hexdigest()[:20]
        jobs[image] = (path, folder / f"{key}.jpg")
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes and resizes without the GIL
        done = pool.map(lambda job: _thumbnail(job[0], job[1], size), jobs.values())
        return {image: job[1] for (image, job), ok in zip(jobs.items(), done) if ok}


def write_report(
    rows: Sequence[ScoreRow] | str | os.PathLike, out: str | os.PathLike, *,
    images_root: str | os.PathLike | None = None, thumbnails: int | None = None, title: str | None = None,
    source: str | None = None, workers: int | None = None,
) -> Path:
    """Write the HTML report of ``rows`` (or of a score file) to ``out``; returns its path.

    Args:
        rows: ``ScoreRow``s, or the path of a ``.csv`` / ``.jsonl`` score file.
        out: the ``.html`` file to write (atomically: a temporary file, then renamed).
        images_root: what relative image paths in the rows are relative to (default: the working folder).
        thumbnails: write JPEG thumbnails of this longest side into ``<out stem>_thumbs/`` beside the report
            and show those (default None: link the images themselves, scaled by the browser).
        title: the page title (default: the score file's name).
        source: the score file's name for the title, when ``rows`` are rows.
        workers: thumbnail threads (default: one per core).

    Raises:
        SdclipError: ``out`` is not an ``.html`` file, or there are no rows.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> path = write_report([ScoreRow("a.png", "a cat", 31.5, 1)], folder / "report.html", images_root=folder)
        >>> "report-data" in path.read_text(encoding="utf-8")
        True
    """
    if not isinstance(rows, (str, os.PathLike)):
        rows = list(rows)
    else:
        source = source or os.fspath(rows)
        rows = read_score_file(rows)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise SdclipError(f"report '{out}': expected an .html file name")
    if not rows:
        raise SdclipError(f"report '{out}': no rows to show")
    root = Path(images_root) if images_root is not None else Path.cwd()
    report_dir = out.resolve().parent
    link = None
    if thumbnails:
        made = _thumbnails([row.image for row in rows], root=root, folder=report_dir / f"{out.stem}_thumbs",
                           size=int(thumbnails), workers=workers or min(32, os.cpu_count() or 1))

        def link(image: str) -> str:
            target = made.get(image)
            return image_link(str(target) if target else image, images_root=root, report_dir=report_dir)

    data = report_data(rows, report_dir=report_dir, images_root=root, link=link)
    page = render_report(data, title=title or (f"sdclip scores: {Path(source).name}" if source else "sdclip scores"))
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.write(page)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return out
