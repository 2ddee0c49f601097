"""The report in a real browser (headless Chromium over the DevTools protocol, tests/report/cdp.py): it
loads from disk with no console errors, clicking a metric's header sorts the table by that metric (checked
against the order computed here from the rows), ``#sort=`` sorts on load, and a screenshot has the window's
size. Skipped with the reason when no Chromium is installed (CI installs Debian's ``chromium``)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from sdclip.report import write_report
from sdclip.scoring.ranking import rank_rows
from sdclip.scoring.score_files import ScoreRow

from cdp import Browser, find_chromium

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium); "
                       "the report's browser test needs a real browser"),
]
METRICS = ("clip", "aesthetic", "pickscore")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    rs = np.random.RandomState(7)
    rows = []
    for p, prompt in enumerate(["a cat", "a <script>alert(1)</script> dog", "an astronaut"]):
        for i in range(6):
            name = f"images/{p}-{i}.png"
            (folder / "images").mkdir(exist_ok=True)
            Image.fromarray(rs.randint(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / name)
            values = (("clip", float(rs.normal(30, 3))), ("aesthetic", float(rs.normal(5, 1))),
                      ("pickscore", float(rs.normal(21, 1))))
            rows.append(ScoreRow(name, prompt, values[2][1], None, "", values))
    rows.append(ScoreRow("images/gone.png", "a cat", None, None, "image 'images/gone.png': no such file",
                         tuple((m, None) for m in METRICS)))
    rows = rank_rows(rows)
    path = write_report(rows, folder / "out" / "report.html", images_root=folder)
    return path, rows


@pytest.fixture(scope="module")
def browser():
    browser = Browser(CHROMIUM, width=1200, height=1600)
    yield browser
    browser.close()


def table_column(browser, metric):
    index = browser.evaluate(f"Array.from(document.querySelectorAll('#rows thead th')).findIndex("
                             f"th => th.dataset.key === '{metric}')")
    return browser.evaluate(f"Array.from(document.querySelectorAll('#rows tbody tr')).map("
                            f"tr => tr.cells[{index}].textContent)")


def test_loads_without_console_errors_and_sorts_by_a_metric(report, browser):
    path, rows = report
    browser.open(path.as_uri())
    assert browser.errors() == []
    assert browser.evaluate("document.querySelectorAll('#rows tbody tr').length") == len(rows)
    assert browser.evaluate("document.querySelectorAll('#errors tr').length") == 1
    assert browser.evaluate("document.querySelectorAll('#histograms svg').length") == len(METRICS)
    assert browser.evaluate("document.querySelectorAll('#scatter-svg circle').length") == len(rows) - 1
    assert browser.evaluate("document.title") == "sdclip scores"
    assert browser.evaluate("document.querySelector('.prompt').textContent").startswith("a cat")
    first_image = ("new Promise(done => { const i = document.querySelector('#grids img'); "
                   "if (i.complete) done(i.naturalWidth); i.onload = () => done(i.naturalWidth); "
                   "i.onerror = () => done(-1); })")
    assert browser.evaluate(first_image) == 56  # linked relative to the report, and found

    scored = [row for row in rows if not row.error]
    browser.evaluate("document.querySelector('#rows th[data-key=aesthetic]').click()")
    expected = sorted(scored, key=lambda row: -row.metric("aesthetic"))
    assert table_column(browser, "aesthetic")[: len(scored)] == [f"{row.metric('aesthetic'):.4f}" for row in expected]
    assert table_column(browser, "aesthetic")[-1] == ""  # the failed row goes last
    browser.evaluate("document.querySelector('#rows th[data-key=aesthetic]').click()")  # again: ascending
    assert table_column(browser, "aesthetic")[: len(scored)] == [f"{row.metric('aesthetic'):.4f}"
                                                                 for row in reversed(expected)]
    browser.evaluate("document.getElementById('rank-by').value = 'clip'; "
                     "document.getElementById('rank-by').dispatchEvent(new Event('change'))")
    best = max((row for row in scored if row.prompt == "a cat"), key=lambda row: row.metric("clip"))
    assert browser.evaluate("document.querySelector('#grids .card img').getAttribute('src')") == "../" + best.image
    assert browser.errors() == []


def test_the_url_can_ask_for_a_sort(report, browser):
    path, rows = report
    browser.open("about:blank", ready="true")  # a fresh load, not a fragment change
    browser.open(path.as_uri() + "#sort=clip:asc")
    assert table_column(browser, "clip")[:-1] == [f"{v:.4f}" for v in sorted(r.metric("clip") for r in rows if not r.error)]
    browser.evaluate("location.hash = 'sort=pickscore:desc'")  # a link to a sort works on an open page too
    expected = [f"{v:.4f}" for v in sorted((r.metric("pickscore") for r in rows if not r.error), reverse=True)]
    deadline = 50
    while table_column(browser, "pickscore")[:-1] != expected and deadline:
        deadline -= 1
    assert table_column(browser, "pickscore")[:-1] == expected
    assert browser.errors() == []


def test_screenshot(report, browser, tmp_path):
    browser.open(report[0].as_uri())
    png = browser.screenshot()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (1200, 1600)
    assert len(png) > 20_000  # a drawn page, not a blank one (a blank 1200x1600 PNG is a few kB)
    (tmp_path / "report.png").write_bytes(png)
