"""Reading the score files ``sdclip score`` writes (CSV or JSONL), for plots and reports.

A score file has one row per (image, prompt) with the columns ``image, prompt, score, rank, error``:
image paths as given to the scorer, rank 1 = best within its prompt, and ``error`` set (score empty)
when an image could not be scored. Plain Python: no torch, no matplotlib.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ScoreFileError

REQUIRED_COLUMNS = ("image", "prompt", "score")


@dataclass(frozen=True)
class ScoreRow:
    """One row of a score file.

    Attributes:
        image: the image path as the scorer was given it.
        prompt: the prompt it was scored against.
        score: the CLIP score, None for a row with an error.
        rank: 1 = best within its prompt; None when the file has no rank or the row an error.
        error: why the image could not be scored ("" when it was).
    """

    image: str
    prompt: str
    score: float | None
    rank: int | None = None
    error: str = ""


def _number(value: object, kind: type, *, where: str, column: str) -> float | int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        number = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise ScoreFileError(f"{where}: column '{column}' should be a number, got {value!r}") from None
    if isinstance(number, float) and math.isnan(number):
        return None
    return number


def _records(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    """(columns, [(where, record)]) of a CSV or JSONL file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            return columns, [(f"{path}:{n}", row) for n, row in enumerate(reader, start=2)]
    if suffix in (".jsonl", ".ndjson"):
        records, columns = [], {}
        with path.open(encoding="utf-8") as handle:
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
            (``rank`` and ``error`` are read when present).

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
    rows = []
    for where, record in records:
        error = str(record.get("error") or "")
        score = _number(record.get("score"), float, where=where, column="score")
        if score is None and not error:
            raise ScoreFileError(f"{where}: no score and no error")
        rank = _number(record.get("rank"), int, where=where, column="rank")
        rows.append(ScoreRow(str(record["image"]), str(record["prompt"]), score, rank, error))
    return rows


def ranked_groups(rows: list[ScoreRow]) -> dict[str, list[ScoreRow]]:
    """Scored rows grouped by prompt (in order of first appearance), best first.

    Rows are ordered by the file's rank when every row of the group has one, else by score.

    Example:
        >>> rows = [ScoreRow("a.png", "cat", 20.0), ScoreRow("b.png", "cat", 30.0)]
        >>> [row.image for row in ranked_groups(rows)["cat"]]
        ['b.png', 'a.png']
    """
    groups: dict[str, list[ScoreRow]] = {}
    for row in rows:
        if row.score is not None:
            groups.setdefault(row.prompt, []).append(row)
    for prompt, group in groups.items():
        if all(row.rank is not None for row in group):
            group.sort(key=lambda row: (row.rank, -row.score))
        else:
            group.sort(key=lambda row: -row.score)
    return groups
