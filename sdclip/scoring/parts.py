"""Score files written in parts, one per process, merged in input order: the sharded engine of ``sdclip score``.

Each process of a launched job (``shards.current_processes``) takes a contiguous share of the pairs that
are still to score, appends its rows to its own part file (``scores.part-00003-of-00008.csv``) batch by batch,
flushed, and once every process has passed the last barrier the main process merges the parts by input
position. Rows are opaque here: they are written and read back only through ``score_files``
(``write_rows`` / ``read_resume_rows``), so whatever columns a row carries flow through unchanged.

Resume: every process reads the rows already in ``--out`` and in every part file on disk (of any earlier
process count), counts a pair done when it has a row without an error, and the pairs left are re-shard
over the processes of *this* run, whatever their number. A killed process therefore loses at most the
batch it had not flushed. A pair scored twice (a retried error row) is merged once: the row without an
error wins.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import ScoreFileError
from .score_files import ENCODING, ScoreRow, read_resume_rows, write_rows
from .shards import Processes, existing_parts, part_path, shard_range

Pair = TypeVar("Pair")

__all__ = ["done_keys", "merge_parts", "remove_parts", "score_in_parts", "stale_parts_message"]


def _rows(path: Path, *, name: str) -> list[ScoreRow]:
    if not path.is_file() or path.stat().st_size == 0:
        return []
    return read_resume_rows(path, name=name)


def _sources(out: Path, *, with_out: bool) -> list[tuple[Path, str]]:
    sources = [(out, "--out")] if with_out else []
    return sources + [(path, "part file") for path in existing_parts(out)]


def _kept(row: ScoreRow) -> ScoreRow | None:
    """The default ``resumed``: a row counts as done when it has no error."""
    return None if row.error else row


def done_keys(out: str | os.PathLike, row_key: Callable[[ScoreRow], Hashable], *, with_out: bool = True,
              resumed: Callable[[ScoreRow], ScoreRow | None] | None = None) -> set:
    """Keys of the pairs already scored in ``out`` and in all its part files.

    ``resumed(row)`` gives a row as this run would write it, or None when it must be scored again
    (default: rows without an error are done).

    Example:
        >>> import pathlib, tempfile
        >>> from sdclip.scoring.shards import part_path
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
        >>> _ = part_path(out, 1, 2).write_text("image,prompt,score,rank,error\\na.png,cat,1.0,,\\nb.png,cat,,,bad\\n")
        >>> done_keys(out, lambda row: (row.image, row.prompt))
        {('a.png', 'cat')}
    """
    out = Path(out)
    resumed = resumed or _kept
    return {row_key(row) for path, name in _sources(out, with_out=with_out)
            for row in _rows(path, name=name) if resumed(row) is not None}


def stale_parts_message(out: str | os.PathLike) -> str | None:
    """The one-line refusal when part files of an unfinished run lie next to ``out`` (None when there are none).

    Example:
        >>> import pathlib, tempfile
        >>> stale_parts_message(pathlib.Path(tempfile.mkdtemp()) / "s.csv") is None
        True
    """
    parts = existing_parts(out)
    if not parts:
        return None
    names = ", ".join(path.name for path in parts[:3]) + (", ..." if len(parts) > 3 else "")
    return (f"--out '{out}': part files of an unfinished run are next to it ({names}); pass --resume to "
            "finish it (with any number of processes), or --overwrite to start again")


def _rewrite(path: Path, rows: Sequence[ScoreRow], suffix: str, metrics: Sequence[str]) -> None:
    """Put ``rows`` (with the header) in ``path`` atomically: a half-written last line is gone."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", newline="", **ENCODING) as file:
            write_rows(file, rows, suffix, metrics=tuple(metrics))
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def score_in_parts(
    out: str | os.PathLike,
    pairs: Sequence[Pair],
    *,
    pair_key: Callable[[Pair], Hashable],
    row_key: Callable[[ScoreRow], Hashable],
    row_batches: Callable[[list[Pair]], Iterable[list[ScoreRow]]],
    processes: Processes,
    resume: bool = False,
    on_plan: Callable[[int, int], None] | None = None,
    resumed: Callable[[ScoreRow], ScoreRow | None] | None = None,
    metrics: Sequence[str] = (),
) -> list[ScoreRow] | None:
    """Score this process's share of ``pairs`` into its part file; on the main process, merge and return all rows.

    Args:
        out: the final score file (``.csv`` / ``.jsonl``); parts are written next to it.
        pairs: every input pair, in input order (the same list on every process).
        pair_key / row_key: what makes an input pair and a written row the same pair.
        row_batches: scores a list of pairs, yielding the rows of each batch in order (loads the model).
        processes: this process's rank and world size (``shards.current_processes()``).
        resume: count the rows already in ``out`` and in every part file as done.
        on_plan: called with (pairs already done, pairs left to score) before any scoring.
        resumed: a row read back as this run writes it, or None to score it again (default: error rows).
        metrics: the file's metric columns (the header of a multi-metric part).

    Returns:
        On the main process, the merged rows in input order (unranked); None elsewhere.

    Raises:
        ScoreFileError: a part or ``out`` is not a score file, or the merge finds pairs missing.

    Example:
        >>> import pathlib, tempfile
        >>> from sdclip.scoring.score_files import ScoreRow
        >>> from sdclip.scoring.shards import Processes
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
        >>> score = lambda todo: [[ScoreRow(image, prompt, float(len(image))) for image, prompt in todo]]
        >>> rows = score_in_parts(out, [("a.png", "cat"), ("bb.png", "cat")], pair_key=tuple,
        ...                       row_key=lambda row: (row.image, row.prompt), row_batches=score,
        ...                       processes=Processes())
        >>> [(row.image, row.score) for row in rows]
        [('a.png', 5.0), ('bb.png', 6.0)]
    """
    out = Path(out)
    suffix = out.suffix.lower()
    done = done_keys(out, row_key, resumed=resumed) if resume else set()
    left = [pair for pair in pairs if pair_key(pair) not in done]
    if on_plan is not None:
        on_plan(len(pairs) - len(left), len(left))
    mine = [left[i] for i in shard_range(len(left), processes.rank, processes.world)]
    if not resume and processes.is_main:  # a fresh run: parts of an earlier run must not be merged
        ours = {part_path(out, rank, processes.world) for rank in range(processes.world)}
        for path in existing_parts(out):
            if path not in ours:  # each process empties its own below
                path.unlink(missing_ok=True)
    processes.barrier()  # every process has read the parts before any rewrites its own
    part = part_path(out, processes.rank, processes.world)
    _rewrite(part, _rows(part, name="part file") if resume else [], suffix, metrics)
    with part.open("a", newline="", **ENCODING) as file:
        for rows in row_batches(mine) if mine else ():
            write_rows(file, rows, suffix, with_header=False, metrics=tuple(metrics) or None)
            file.flush()  # a killed process loses at most the batch it was scoring
    processes.barrier()  # every part is complete
    if not processes.is_main:
        return None
    return merge_parts(out, pairs, pair_key=pair_key, row_key=row_key, with_out=resume, resumed=resumed)


def merge_parts(
    out: str | os.PathLike,
    pairs: Sequence[Pair],
    *,
    pair_key: Callable[[Pair], Hashable],
    row_key: Callable[[ScoreRow], Hashable],
    with_out: bool = False,
    resumed: Callable[[ScoreRow], ScoreRow | None] | None = None,
) -> list[ScoreRow]:
    """One row per input pair, in input order, from every part file of ``out`` (and ``out`` itself with ``with_out``).

    A pair with several rows (an error row, then its retry) keeps the first done one (``resumed``, as
    ``done_keys``), as ``resumed`` gives it back.

    Raises:
        ScoreFileError: a pair has no row in any part (a process stopped early: resume the run).

    Example:
        >>> import pathlib, tempfile
        >>> from sdclip.scoring.shards import part_path
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
        >>> _ = part_path(out, 0, 2).write_text("image,prompt,score,rank,error\\nb.png,cat,2.0,,\\n")
        >>> _ = part_path(out, 1, 2).write_text("image,prompt,score,rank,error\\na.png,cat,1.0,,\\n")
        >>> rows = merge_parts(out, [("a.png", "cat"), ("b.png", "cat")], pair_key=tuple,
        ...                    row_key=lambda row: (row.image, row.prompt))
        >>> [row.image for row in rows]
        ['a.png', 'b.png']
    """
    out = Path(out)
    resumed = resumed or _kept
    best: dict[Hashable, ScoreRow] = {}
    final: set[Hashable] = set()
    for path, name in _sources(out, with_out=with_out):
        for row in _rows(path, name=name):
            key = row_key(row)
            if key in final:
                continue
            kept = resumed(row)
            if kept is not None:
                best[key] = kept
                final.add(key)
            elif key not in best:
                best[key] = row
    merged, missing = [], []
    for pair in pairs:
        row = best.get(pair_key(pair))
        if row is None:
            missing.append(pair)
        else:
            merged.append(row)
    if missing:
        raise ScoreFileError(f"--out '{out}': {len(missing)} of {len(pairs)} pairs have no row in the part files "
                             f"(first: {missing[0]!r}); a process stopped early: run the same command with --resume")
    return merged


def remove_parts(out: str | os.PathLike) -> None:
    """Delete the part files of ``out`` (after the merged file is in place).

    Example:
        >>> import pathlib, tempfile
        >>> from sdclip.scoring.shards import existing_parts, part_path
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
        >>> _ = part_path(out, 0, 1).write_text("")
        >>> remove_parts(out); existing_parts(out)
        []
    """
    for path in existing_parts(out):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
