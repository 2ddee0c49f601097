"""Multi-metric score files: one column per metric after the five single-metric columns, read back by
``read_score_file`` and ``read_resume_rows``; a clip-only file stays the single-metric format byte for byte."""

from __future__ import annotations

import io
import json

import pytest

from sdclip.errors import ScoreFileError
from sdclip.scoring.score_files import ENCODING, ScoreRow, read_resume_rows, read_score_file, write_rows

ROWS = [
    ScoreRow("a.png", "a cat", 5.25, 1, "", (("clip", 31.5), ("aesthetic", 5.25))),
    ScoreRow("b,\u00e9.png", "a \"cat\"\nat night", 4.0, 2, "", (("clip", 33.0), ("aesthetic", 4.0))),
    ScoreRow("c.png", "a cat", None, None, "cannot read", (("clip", None), ("aesthetic", None))),
]


def write(path, rows, **options):
    with path.open("w", newline="", **ENCODING) as file:
        write_rows(file, rows, path.suffix, **options)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_multi_metric_rows_round_trip(tmp_path, suffix):
    path = tmp_path / f"scores{suffix}"
    write(path, ROWS)
    assert read_score_file(path) == ROWS
    assert read_resume_rows(path) == ROWS
    assert [row.metric("clip") for row in read_score_file(path)] == [31.5, 33.0, None]


def test_the_csv_layout(tmp_path):
    path = tmp_path / "scores.csv"
    write(path, ROWS[:1] + ROWS[2:])
    assert path.read_text() == ("image,prompt,score,rank,error,clip,aesthetic\n"
                                "a.png,a cat,5.250000,1,,31.500000,5.250000\n"
                                "c.png,a cat,,,cannot read,,\n")


def test_the_jsonl_layout(tmp_path):
    path = tmp_path / "scores.jsonl"
    write(path, ROWS[2:])
    assert json.loads(path.read_text()) == {"image": "c.png", "prompt": "a cat", "score": None, "rank": None,
                                            "error": "cannot read", "clip": None, "aesthetic": None}


def test_a_single_metric_file_is_unchanged():
    buffer = io.StringIO()
    write_rows(buffer, [ScoreRow("a.png", "a cat", 31.5, 1)], ".csv")
    assert buffer.getvalue() == "image,prompt,score,rank,error\na.png,a cat,31.500000,1,\n"
    buffer = io.StringIO()
    write_rows(buffer, [ScoreRow("a.png", "a cat", 31.5, 1)], ".jsonl")
    assert buffer.getvalue() == '{"image": "a.png", "prompt": "a cat", "score": 31.5, "rank": 1, "error": ""}\n'


def test_the_header_follows_the_metrics_argument_when_there_are_no_rows_yet(tmp_path):
    path = tmp_path / "scores.csv"
    write(path, [], metrics=["clip", "pickscore"])
    assert path.read_text() == "image,prompt,score,rank,error,clip,pickscore\n"
    assert read_resume_rows(path) == []


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_drops_a_half_written_row(tmp_path, suffix):
    path = tmp_path / f"scores{suffix}"
    write(path, ROWS[:2])
    path.write_bytes(path.read_bytes()[:-9])  # the run stopped inside the last row
    assert read_resume_rows(path) == ROWS[:1]


def test_a_reserved_metric_name_is_refused(tmp_path):
    with pytest.raises(ScoreFileError, match=r"metrics: 'score' cannot name a metric column \(it is one of image, "
                       r"prompt, score, rank, error\)"):
        write_rows(io.StringIO(), [ScoreRow("a.png", "cat", 1.0, metrics=(("score", 1.0),))], ".csv")


def test_a_metric_column_that_is_not_a_number_is_an_error(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("image,prompt,score,rank,error,aesthetic\na.png,cat,1.0,1,,high\n")
    with pytest.raises(ScoreFileError, match=r"scores\.csv:2: column 'aesthetic' should be a number, got 'high'"):
        read_score_file(path)


def test_resume_refuses_a_row_with_a_missing_metric_cell(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("image,prompt,score,rank,error,clip,aesthetic\na.png,cat,1.0,1,,30.0\n")
    with pytest.raises(ScoreFileError, match=r"row 1 is not an sdclip score row; refusing to resume into it"):
        read_resume_rows(path)
