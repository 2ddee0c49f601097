"""Score files (CSV or JSONL): the one place that writes and reads what ``sdclip score`` outputs.

A score file has one row per (image, prompt) with the columns ``COLUMNS`` (``image, prompt, score, rank,
error``): image paths as given to the scorer, rank 1 = best within its prompt, and ``error`` set (score
empty) when an image could not be scored. Plain Python: no torch, no matplotlib.

Names that are not UTF-8 (a file called ``b"\\xff.png"`` arrives as ``"\\udcff.png"``) round-trip: CSV
is written and read with ``errors="surrogateescape"`` (the file holds the name's own bytes), JSONL
escapes lone surrogates as ``\\udcff``. JSONL is split on ``"\\n"`` only, so U+2028 and U+0085 inside
strings are content, not line breaks.

Several metrics (``sdclip score --metric clip,aesthetic,pickscore --rank-by pickscore``): the file has the
same five columns first, then one column per metric, named by the metric (``image, prompt, score, rank,
error, clip, aesthetic, pickscore``). ``score`` repeats the value of the metric the file is ranked by, so
every reader of single-metric files (ranking, summaries, ``plot-scores``) keeps working; a metric column is
empty (CSV) or ``null`` (JSONL) where the image failed. ``ScoreRow.metrics`` holds the metric columns as
``(name, value)`` pairs. A file written with only the ``clip`` metric has no metric columns: byte for byte
the single-metric format above. Metric names are not one of ``COLUMNS``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import ScoreFileError
from .ranking import ranked_groups

COLUMNS = ("image", "prompt", "score", "rank", "error")
"""The columns of a score file, in order (the CSV header)."""
REQUIRED_COLUMNS = ("image", "prompt", "score")
SUFFIXES = (".csv", ".jsonl")
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
"""How score files are opened (text mode, ``newline=""``): non-UTF-8 names keep their bytes."""
_SURROGATE = re.compile("[\ud800-\udfff]")

__all__ = ["COLUMNS", "ScoreRow", "format_row", "header", "metric_columns", "ranked_groups", "read_resume_rows",
           "read_score_file", "write_rows"]


@dataclass(frozen=True)
class ScoreRow:
    """One row of a score file.

    Attributes:
        image: the image path as the scorer was given it.
        prompt: the prompt it was scored against.
        score: the CLIP score, None for a row with an error.
        rank: 1 = best within its prompt; None when the file has no rank or the row an error.
        error: why the image could not be scored ("" when it was).
        metrics: ``(metric, value)`` pairs of a multi-metric file, in column order (value None where the
            image failed); empty for a single-metric file, whose ``score`` is the CLIP score.
    """

    image: str
    prompt: str
    score: float | None
    rank: int | None = None
    error: str = ""
    metrics: tuple[tuple[str, float | None], ...] = field(default=(), repr=False)

    def metric(self, name: str) -> float | None:
        """The value of metric ``name`` (None when the row has no such column or the image failed).

        Example:
            >>> ScoreRow("a.png", "cat", 5.9, metrics=(("clip", 30.1), ("aesthetic", 5.9))).metric("clip")
            30.1
        """
        return dict(self.metrics).get(name)


def metric_columns(names: Iterable[str], *, where: str = "metrics") -> tuple[str, ...]:
    """Checked metric column names: non-empty, distinct, none of ``COLUMNS``.

    Example:
        >>> metric_columns(["clip", "aesthetic"])
        ('clip', 'aesthetic')
        >>> metric_columns(["rank"])
        Traceback (most recent call last):
        ...
        sdclip.errors.ScoreFileError: metrics: 'rank' cannot name a metric column (it is one of image, prompt, score, rank, error)
    """
    names = tuple(names)
    for name in names:
        if not isinstance(name, str) or not name.strip() or name in COLUMNS:
            raise ScoreFileError(f"{where}: {name!r} cannot name a metric column (it is "
                                 f"{'one of ' + ', '.join(COLUMNS) if name in COLUMNS else 'not a name'})")
    if len(set(names)) != len(names):
        raise ScoreFileError(f"{where}: metric columns repeat a name ({', '.join(names)})")
    return names


def _number(value: object, kind: type, *, where: str, column: str) -> float | int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ScoreFileError(f"{where}: column '{column}' should be a number, got {value!r}") from None
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise ScoreFileError(f"{where}: column '{column}' should be a finite number, got {value!r}")
    if kind is int:
        if number != int(number) or number < 1:
            raise ScoreFileError(f"{where}: column '{column}' should be an integer >= 1, got {value!r}")
        return int(number)
    return number


def _records(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    """(columns, [(where, record)]) of a CSV or JSONL file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", **ENCODING) as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            return columns, [(f"{path}:{n}", row) for n, row in enumerate(reader, start=2)]
    if suffix in (".jsonl", ".ndjson"):
        records, columns = [], {}
        with path.open(newline="\n", **ENCODING) as handle:  # "\n" only: U+2028 is not a line break
            for n, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ScoreFileError(f"{path}:{n}: not a JSON object ({error.msg})") from None
                if not isinstance(record, dict):
                    raise ScoreFileError(f"{path}:{n}: expected a JSON object per line, got {type(record).__name__}")
                columns.update(dict.fromkeys(record))
                records.append((f"{path}:{n}", record))
        return list(columns), records
    raise ScoreFileError(f"score file '{path}': expected a .csv or .jsonl file as `sdclip score` writes")


def read_score_file(path: str | os.PathLike) -> list[ScoreRow]:
    """Read a CSV or JSONL score file into rows.

    Args:
        path: a ``.csv`` or ``.jsonl`` file with at least the columns ``image``, ``prompt``, ``score``
            (``rank`` and ``error`` are read when present; any other column is a metric).

    Returns:
        The rows in file order.

    Raises:
        ScoreFileError: the file is missing, of another type, empty, lacks a column, or has a score
            that is not a number.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "scores.csv"
        >>> _ = path.write_text("image,prompt,score,rank,error\\na.png,a cat,31.5,1,\\n")
        >>> read_score_file(path)
        [ScoreRow(image='a.png', prompt='a cat', score=31.5, rank=1, error='')]
    """
    path = Path(path)
    if not path.is_file():
        raise ScoreFileError(f"score file '{path}': no such file")
    columns, records = _records(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise ScoreFileError(
            f"score file '{path}': missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'} "
            "(expected image, prompt, score, rank, error as `sdclip score` writes)"
        )
    if not records:
        raise ScoreFileError(f"score file '{path}': has a header but no rows")
    extra = metric_columns([column for column in columns if column not in COLUMNS], where=f"score file '{path}'")
    rows = []
    for where, record in records:
        error = str(record.get("error") or "")
        score = _number(record.get("score"), float, where=where, column="score")
        if score is None and not error:
            raise ScoreFileError(f"{where}: no score and no error")
        rank = _number(record.get("rank"), int, where=where, column="rank")
        metrics = tuple((name, _number(record.get(name), float, where=where, column=name)) for name in extra)
        rows.append(ScoreRow(str(record["image"]), str(record["prompt"]), score, rank, error, metrics))
    return rows


# -- writing --------------------------------------------------------------------------------------


def header(suffix: str, metrics: Iterable[str] = ()) -> str:
    """What a score file starts with: the CSV header line (then one column per metric), nothing for JSONL.

    Example:
        >>> header(".csv")
        'image,prompt,score,rank,error\\n'
        >>> header(".csv", ["clip", "aesthetic"])
        'image,prompt,score,rank,error,clip,aesthetic\\n'
    """
    if suffix.lower() != ".csv":
        return ""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(COLUMNS + metric_columns(metrics))
    return buffer.getvalue()


def _rounded(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)


def format_row(row: ScoreRow, suffix: str, metrics: Iterable[str] | None = None) -> str:
    """One row as a CSV or JSONL line, with its newline; scores are written with 6 decimals.

    ``metrics`` are the file's metric columns (default: the row's own), written after ``error``.

    Example:
        >>> format_row(ScoreRow("a.png", "a cat", 31.5, 1), ".jsonl")
        '{"image": "a.png", "prompt": "a cat", "score": 31.5, "rank": 1, "error": ""}\\n'
        >>> format_row(ScoreRow("\\udcff.png", "a cat", None, error="bad"), ".csv") == '\\udcff.png,a cat,,,bad\\n'
        True
    """
    score = None if row.score is None else round(row.score, 6)
    names = [name for name, _ in row.metrics] if metrics is None else list(metrics)
    values = dict(row.metrics)
    extra = [_rounded(values.get(name)) for name in names]
    if suffix.lower() == ".jsonl":
        item = {"image": row.image, "prompt": row.prompt, "score": score, "rank": row.rank, "error": row.error}
        item.update(zip(names, extra))
        text = json.dumps(item, ensure_ascii=False)
        return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text) + "\n"
    buffer = io.StringIO()
    fields = [row.image, row.prompt, "" if score is None else f"{score:.6f}", "" if row.rank is None else str(row.rank),
              row.error] + ["" if value is None else f"{value:.6f}" for value in extra]
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue()


def write_rows(file: IO[str], rows: Iterable[ScoreRow], suffix: str, *, with_header: bool = True,
               metrics: Iterable[str] | None = None) -> None:
    """Write ``rows`` (after the header, for CSV) to an open text file (``open(..., newline="", **ENCODING)``).

    ``metrics`` are the metric columns (default: the first row's; none for a single-metric file).

    Example:
        >>> import io
        >>> buffer = io.StringIO()
        >>> write_rows(buffer, [ScoreRow("a.png", "a cat", 31.5, 1)], ".csv")
        >>> buffer.getvalue()
        'image,prompt,score,rank,error\\na.png,a cat,31.500000,1,\\n'
    """
    rows = list(rows)
    names = metric_columns([name for name, _ in rows[0].metrics] if metrics is None and rows else metrics or ())
    if with_header:
        file.write(header(suffix, names))
    file.writelines(format_row(row, suffix, names) for row in rows)


# -- reading back for --resume --------------------------------------------------------------------


def read_resume_rows(path: str | os.PathLike, *, name: str = "score file") -> list[ScoreRow]:
    """The whole rows of a score file being resumed; a half-written last line (even one cut inside a
    multi-byte character) is dropped, as the run that wrote it stopped there.

    Args:
        path: a ``.csv`` or ``.jsonl`` file that ``sdclip score`` wrote.
        name: how errors name the file (``--out`` from the CLI).

    Raises:
        ScoreFileError: the file is not an ``sdclip score`` output (so resuming will not overwrite it).

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.jsonl"
        >>> _ = path.write_bytes(b'{"image": "a.png", "prompt": "cat", "score": 1.0, "rank": 1, "error": ""}\\n{"ima')
        >>> read_resume_rows(path)
        [ScoreRow(image='a.png', prompt='cat', score=1.0, rank=1, error='')]
    """
    path = Path(path)
    suffix = path.suffix.lower()
    data = path.read_bytes()
    text = data[: data.rfind(b"\n") + 1].decode(**ENCODING)  # the run stopped mid-line: that row is incomplete
    extra: tuple[str, ...] = ()
    if suffix == ".csv":
        records = _csv_records(text)
        if records:
            found = _csv_fields(records[0])
            if found is None or tuple(found[: len(COLUMNS)]) != COLUMNS:
                raise ScoreFileError(f"{name} '{path}': not an sdclip score file (its header is not "
                                     f"{','.join(COLUMNS)}); refusing to resume into it")
            extra = metric_columns(found[len(COLUMNS) :], where=f"{name} '{path}'")
        records = records[1:]
    else:
        records = [line for line in text.split("\n") if line.strip()]
    rows = []
    for number, record in enumerate(records, start=1):
        row = _parse(record, suffix, extra)
        if row is None:
            raise ScoreFileError(f"{name} '{path}': row {number} is not an sdclip score row; refusing to resume into it")
        rows.append(row)
    return rows


def _csv_records(text: str) -> list[str]:
    """CSV text split into records on "\\n" (a quoted prompt may hold newlines; an unclosed last one is dropped)."""
    records, current = [], ""
    for line in text.split("\n")[:-1]:
        current += line + "\n"
        if current.count('"') % 2 == 0:
            records.append(current)
            current = ""
    return records


def _csv_fields(record: str) -> list[str] | None:
    try:
        return next(csv.reader(io.StringIO(record, newline="")))
    except (StopIteration, csv.Error):
        return None


def _parse(record: str, suffix: str, extra: tuple[str, ...] = ()) -> ScoreRow | None:
    """A row read back from a score file, or None when the record is not a whole row."""
    try:
        if suffix == ".jsonl":
            item = json.loads(record)
            fields = [item["image"], item["prompt"], item["score"], item.get("rank"), item.get("error") or ""]
            if not isinstance(fields[0], str) or not isinstance(fields[1], str):
                return None
            names = [key for key in item if key not in COLUMNS]
            values = [item[key] for key in names]
            if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in values):
                return None
            metrics = tuple((key, None if v is None else float(v)) for key, v in zip(names, values))
        else:
            fields = _csv_fields(record)  # type: ignore[assignment]
            if fields is None or len(fields) != len(COLUMNS) + len(extra):
                return None
            metrics = tuple((key, float(v) if v else None) for key, v in zip(extra, fields[len(COLUMNS) :]))
            fields = [fields[0], fields[1], float(fields[2]) if fields[2] else None,
                      int(fields[3]) if fields[3] else None, fields[4]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return ScoreRow(fields[0], fields[1], fields[2], fields[3], str(fields[4]), metrics)
