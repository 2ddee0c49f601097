"""The report's data and page without a browser: links relative to the report, every metric column, text
kept out of the markup, thumbnails, and the ``sdclip report`` command (its browser behaviour is
tests/report/test_report_browser.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdclip.cli import main
from sdclip.errors import SdclipError
from sdclip.report import report_data, write_report
from sdclip.scoring.score_files import ENCODING, ScoreRow, write_rows

ROWS = [
    ScoreRow("imgs/a.png", "a </script><b>cat</b>", 5.0, 1, "", (("clip", 30.0), ("aesthetic", 5.0))),
    ScoreRow("imgs/b.png", "a </script><b>cat</b>", 4.0, 2, "", (("clip", 32.0), ("aesthetic", 4.0))),
    ScoreRow("imgs/c.png", "a dog", None, None, "cannot read", (("clip", None), ("aesthetic", None))),
]


def page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    raw = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(raw)


@pytest.fixture()
def images(tmp_path):
    (tmp_path / "imgs").mkdir()
    rs = np.random.RandomState(0)
    for name in ("a", "b"):
        Image.fromarray(rs.randint(0, 256, (300, 200, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{name}.png")
    return tmp_path


def test_the_page_holds_every_row_and_metric_and_no_markup_from_the_data(images):
    path = write_report(ROWS, images / "out" / "report.html", images_root=images)
    data = page_data(path)
    assert data["metrics"] == ["clip", "aesthetic"] and data["rankBy"] == "aesthetic"
    assert data["prompts"] == ["a </script><b>cat</b>", "a dog"]
    assert data["rows"][0] == ["imgs/a.png", "../imgs/a.png", 0, 1, "", 30.0, 5.0]
    assert data["rows"][2] == ["imgs/c.png", "../imgs/c.png", 1, None, "cannot read", None, None]
    text = path.read_text(encoding="utf-8")
    assert "<b>cat</b>" not in text and text.count("</script>") == 2  # the page's own two script elements
    # nothing fetched from the network (the one URL is the SVG namespace, an identifier)
    assert re.findall(r"https?://[^\s\"']*", text) == ["http://www.w3.org/2000/svg"]
    assert not re.search(r"fetch\(|XMLHttpRequest|@import|<link rel=\"stylesheet", text)


def test_a_single_metric_file_reports_its_score_as_clip(tmp_path):
    data = report_data([ScoreRow("/abs/a.png", "cat", 31.5, 1)], report_dir=tmp_path)
    assert data["metrics"] == ["clip"] and data["rows"][0][5:] == [31.5]


def test_thumbnails_are_written_beside_the_report_and_linked(images):
    path = write_report(ROWS, images / "report.html", images_root=images, thumbnails=64)
    links = [row[1] for row in page_data(path)["rows"]]
    assert links[0].startswith("report_thumbs/") and links[2] is None  # unreadable: the image path itself
    with Image.open(images / links[0]) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 64 and thumb.size == (43, 64)


def test_no_rows_and_wrong_suffix_are_errors(tmp_path):
    with pytest.raises(SdclipError, match=r"report '.*report\.html': no rows to show"):
        write_report([], tmp_path / "report.html")
    with pytest.raises(SdclipError, match=r"report '.*report\.txt': expected an \.html file name"):
        write_report(ROWS, tmp_path / "report.txt")


def test_the_command(images, capsys, monkeypatch):
    scores = images / "scores.csv"
    with scores.open("w", newline="", **ENCODING) as file:
        write_rows(file, ROWS, ".csv")
    monkeypatch.chdir(images.parent)  # the images are found from the score file's folder
    assert main(["report", str(scores), "--out", str(images / "r" / "report.html")]) == 0
    assert "report:" in capsys.readouterr().out
    assert page_data(images / "r" / "report.html")["rows"][0][1] == "../imgs/a.png"
    assert main(["report", str(scores), "--out", str(images / "r.html"), "--images", str(images / "nope")]) == 2
    assert "--images '" in capsys.readouterr().err
