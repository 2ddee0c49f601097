"""sdclip.scoring.score_files and sdclip.scoring.ranking: what is written reads back the same, whatever the names.

References are independent: Python's csv and json modules read the files, and ranks are recomputed here.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from sdclip.errors import ScoreFileError
from sdclip.scoring import Ranking
from sdclip.scoring.ranking import clip_score, rank_rows, summarize
from sdclip.scoring.score_files import COLUMNS, ENCODING, ScoreRow, read_resume_rows, read_score_file, write_rows

ODD = [
    ScoreRow("plain.png", "a cat", 31.25, 1),
    ScoreRow("\udcff\udcfe.png", "a cat", 20.5, 2),  # a file name that is not UTF-8
    ScoreRow("sep.png", "line\u2028separator and next\u0085line", 12.0, 1),
    ScoreRow("quote, \"comma\".png", "multi\nline\rprompt", 10.0, 1),
    ScoreRow("bad.png", "a cat", None, None, "not an image file Pillow can read"),
]


def test_the_columns_are_the_documented_ones():
    assert COLUMNS == ("image", "prompt", "score", "rank", "error")
    assert "Ranking" in dir(__import__("sdclip")) and __import__("sdclip").Ranking is Ranking


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_rows_round_trip(tmp_path, suffix):
    path = tmp_path / f"s{suffix}"
    with path.open("w", newline="", **ENCODING) as file:
        write_rows(file, ODD, suffix)
    assert read_resume_rows(path) == ODD
    assert read_score_file(path) == ODD
    raw = path.read_bytes()
    assert b"\xff\xfe.png" in raw if suffix == ".csv" else b"\\udcff\\udcfe.png" in raw
    if suffix == ".jsonl":  # valid UTF-8, valid JSON, one object per "\n"
        items = [json.loads(line) for line in raw.decode("utf-8").split("\n") if line]
        assert [item["prompt"] for item in items] == [row.prompt for row in ODD]
    else:
        text = raw.decode("utf-8", "surrogateescape")
        assert [tuple(r) for r in csv.reader(io.StringIO(text, newline=""))][0] == COLUMNS


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_drops_a_row_cut_inside_a_multibyte_character(tmp_path, suffix):
    rows = [ScoreRow("a.png", "chat noir", 1.0, 1), ScoreRow("b.png", "un chat très noir", 2.0, 1)]
    path = tmp_path / f"s{suffix}"
    with path.open("w", newline="", **ENCODING) as file:
        write_rows(file, rows, suffix)
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex("è".encode()) + 1])
    assert read_resume_rows(path) == rows[:1]


def test_resume_refuses_a_foreign_file(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ScoreFileError, match=r"^--out '.*s.csv': not an sdclip score file"):
        read_resume_rows(path, name="--out")


@pytest.mark.parametrize("content, message", [
    ("image,prompt,score,rank\na.png,cat,1e400,\n", "s.csv:2: column 'score' should be a finite number, got '1e400'"),
    ("image,prompt,score,rank\na.png,cat,1,1e400\n", "s.csv:2: column 'rank' should be a finite number, got '1e400'"),
    ("image,prompt,score,rank\na.png,cat,1,1.5\n", "s.csv:2: column 'rank' should be an integer >= 1, got '1.5'"),
    ("image,prompt,score,rank\na.png,cat,1,0\n", "s.csv:2: column 'rank' should be an integer >= 1, got '0'"),
])  # fmt: skip
def test_read_score_file_numbers(tmp_path, content, message):
    (tmp_path / "s.csv").write_text(content)
    with pytest.raises(ScoreFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_score_file(tmp_path / "s.csv")


def test_read_score_file_takes_non_utf8_bytes(tmp_path):
    (tmp_path / "s.csv").write_bytes(b"image,prompt,score\n\xff.png,caf\xe9,1.5\n")
    assert read_score_file(tmp_path / "s.csv") == [ScoreRow("\udcff.png", "caf\udce9", 1.5)]


def test_rank_rows_summarize_and_clip_score_against_a_recomputation():
    rows = [ScoreRow("a", "cat", 20.0), ScoreRow("b", "cat", 30.0), ScoreRow("c", "dog", -5.0),
            ScoreRow("d", "cat", 30.0), ScoreRow("e", "cat", None, error="x")]
    ranked = rank_rows(rows)
    assert [row.rank for row in ranked] == [3, 1, 1, 2, None]  # ties keep input order
    summaries = {s.prompt: s for s in summarize(ranked)}
    assert (summaries["cat"].images, summaries["cat"].failed, summaries["cat"].best_image) == (4, 1, "b")
    assert summaries["cat"].mean_score == pytest.approx((20 + 30 + 30) / 3)
    assert clip_score(rows) == (pytest.approx(max((20 + 30 - 5 + 30) / 4, 0.0)), 4)
    assert clip_score([ScoreRow("c", "dog", -5.0)]) == (0.0, 1)  # the mean is clamped, as torchmetrics does
    assert clip_score([ScoreRow("e", "cat", None, error="x")]) is None
