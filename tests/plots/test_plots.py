"""sdclip.plots, sdclip.scoring.score_files and ``sdclip plot-scores``: figures are drawn, saved, and of the right size.

Score files are written here in the format ``sdclip score`` writes (``image, prompt, score, rank, error``).
"""

from __future__ import annotations

import csv
import json

import matplotlib
import pytest
from PIL import Image

from sdclip import plots
from sdclip.cli import main
from sdclip.inspection.api import EmbeddingReport, SimilarityMatrix, TokenStats
from sdclip.errors import ScoreFileError
from sdclip.scoring.score_files import ScoreRow, ranked_groups, read_score_file

matplotlib.use("Agg")

COLUMNS = ["image", "prompt", "score", "rank", "error"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "grey": (128, 128, 128)}


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def figure_pixels(fig, dpi: int = 100) -> tuple[int, int]:
    width, height = fig.get_size_inches()
    return round(width * dpi), round(height * dpi)


# -- inspection plots ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, labels", [
    ("tokens", ["<|startoftext|>", "a</w>", "cat</w>", "<|endoftext|>"]),
    ("prompts", ["a cat", "a dog", "a very long prompt about a lighthouse at dusk in oil paint"]),
])  # fmt: skip
def test_plot_similarity(tmp_path, kind, labels):
    n = len(labels)
    values = [[1.0 if i == j else 0.5 + 0.1 * (i + j) for j in range(n)] for i in range(n)]
    fig = plots.plot_similarity(SimilarityMatrix(labels, values, kind, title="a cat"))
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert shown == [label.removesuffix("</w>") for label in labels] or kind == "prompts"
    assert len(shown) == n and [t.get_text() for t in ax.get_yticklabels()] == shown
    assert len(ax.texts) == n * n  # annotated: small matrices get their values written in
    assert ax.get_images()[0].get_array().shape == (n, n)
    path = plots.save_figure(fig, tmp_path / "sub" / f"{kind}.png")
    assert path.stat().st_size > 10_000
    assert png_size(path) == figure_pixels(fig)


def test_plot_similarity_large_matrix_not_annotated():
    labels = [f"t{i}" for i in range(40)]
    fig = plots.plot_similarity(SimilarityMatrix(labels, [[1.0] * 40 for _ in labels], "tokens"))
    assert len(fig.axes[0].texts) == 0 and len(fig.axes[0].get_xticklabels()) == 40


def test_plot_token_report(tmp_path):
    tokens = [
        TokenStats("<|startoftext|>", 49406, 0, 0, 1.0, False, 0, 28.0, 0.1, 1.0),
        TokenStats("a</w>", 320, 0, 1, 1.0, False, 1, 27.0, 0.5, 0.9),
        TokenStats("cat</w>", 2368, 0, 2, 1.5, False, 2, 30.0, 0.7, 0.6),
        TokenStats("<|endoftext|>", 49407, 0, 3, 1.0, False, 3, 29.0, 1.0, 0.7),
        TokenStats("dropped</w>", 9, 0, 77, 1.0, True),
    ]
    fig = plots.plot_token_report(EmbeddingReport("a (cat:1.5)", tokens, "pooled", 768, 1))
    norm_ax, change_ax, weight_ax = fig.axes
    assert [p.get_height() for p in norm_ax.patches] == [28.0, 27.0, 30.0, 29.0]
    assert [p.get_height() for p in change_ax.patches] == pytest.approx([0.0, 0.1, 0.4, 0.3])
    assert [p.get_height() for p in weight_ax.patches] == [1.0, 1.0, 1.5, 1.0]
    assert [t.get_text() for t in weight_ax.get_xticklabels()] == ["<|startoftext|>", "a", "cat", "<|endoftext|>"]
    assert "(1 truncated tokens not shown)" in norm_ax.get_title().replace("\n", " ")
    path = plots.save_figure(fig, tmp_path / "bars.png")
    assert path.stat().st_size > 10_000 and png_size(path) == figure_pixels(fig)


# -- score files ---------------------------------------------------------------------------------


def write_run(folder, fmt: str = "csv", *, rows=None, columns=COLUMNS):
    """Images in ``folder/images`` and a score file over them, as ``sdclip score`` writes."""
    images = folder / "images"
    images.mkdir(exist_ok=True)
    if rows is None:
        rows = []
        for prompt, scores in {"a red square": [31.0, 25.5, 28.25], "a blue square": [22.0, 30.5]}.items():
            ranks = sorted(range(len(scores)), key=lambda i: -scores[i])
            for i, score in enumerate(scores):
                colour = list(COLOURS)[i]
                Image.new("RGB", (48, 40), COLOURS[colour]).save(images / f"{colour}.png")
                rows.append({"image": f"images/{colour}.png", "prompt": prompt, "score": score,
                             "rank": ranks.index(i) + 1, "error": ""})  # fmt: skip
        rows.append({"image": "images/broken.png", "prompt": "a red square", "score": "", "rank": "",
                     "error": "cannot identify image file"})  # fmt: skip
    path = folder / f"scores.{fmt}"
    if fmt == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps({k: v for k, v in row.items() if k in columns}) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_read_score_file(tmp_path, fmt):
    rows = read_score_file(write_run(tmp_path, fmt))
    assert rows[0] == ScoreRow("images/red.png", "a red square", 31.0, 1, "")
    assert rows[-1] == ScoreRow("images/broken.png", "a red square", None, None, "cannot identify image file")
    groups = ranked_groups(rows)
    assert list(groups) == ["a red square", "a blue square"]
    assert [(r.rank, r.score) for r in groups["a red square"]] == [(1, 31.0), (2, 28.25), (3, 25.5)]


def test_ranked_groups_without_ranks_sort_by_score():
    rows = [ScoreRow("a", "p", 1.0), ScoreRow("b", "p", 3.0), ScoreRow("c", "p", 2.0), ScoreRow("d", "p", None, error="x")]
    assert [r.image for r in ranked_groups(rows)["p"]] == ["b", "c", "a"]


@pytest.mark.parametrize("content, name, message", [
    (None, "missing.csv", r"score file '.*missing.csv': no such file"),
    ("image,prompt\na.png,cat\n", "s.csv", r"missing column\(s\) score; found image, prompt \(expected image, prompt"),
    ("image,prompt,score\n", "s.csv", "has a header but no rows"),
    ("image,prompt,score\na.png,cat,high\n", "s.csv", r"s.csv:2: column 'score' should be a number, got 'high'"),
    ("image,prompt,score,rank,error\na.png,cat,,,\n", "s.csv", r"s.csv:2: no score and no error"),
    ('{"image": "a.png"\n', "s.jsonl", r"s.jsonl:1: not a JSON object"),
    ("[1, 2]\n", "s.jsonl", r"s.jsonl:1: expected a JSON object per line, got list"),
    ("x", "s.txt", r"expected a .csv or .jsonl file"),
])  # fmt: skip
def test_score_file_errors(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ScoreFileError, match=message):
        read_score_file(path)


# -- scorer plots --------------------------------------------------------------------------------


def test_plot_ranked_grid(tmp_path):
    write_run(tmp_path)
    group = ranked_groups(read_score_file(tmp_path / "scores.csv"))["a red square"]
    fig = plots.plot_ranked_grid(group, images_root=tmp_path, columns=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["#1  31.000\nred.png", "#2  28.250\nblue.png", "#3  25.500\ngreen.png"]
    assert len(fig.axes) == 4  # a 2 x 2 grid, the last cell hidden
    red = visible[0].get_images()[0].get_array()
    assert tuple(red[0, 0][:3]) == COLOURS["red"]  # the image itself is drawn, not a placeholder
    assert fig._suptitle.get_text() == "a red square"
    path = plots.save_figure(fig, tmp_path / "grid.png")
    assert path.stat().st_size > 5_000 and png_size(path) == figure_pixels(fig)
    top1 = plots.plot_ranked_grid(group, images_root=tmp_path, top=1)
    assert len(top1.axes) == 1


def test_plot_ranked_grid_missing_image():
    fig = plots.plot_ranked_grid([ScoreRow("gone/x.png", "a cat", 12.5, 1)])
    assert fig.axes[0].get_title() == "#1  12.500\nx.png (missing)"


def test_plot_score_histogram(tmp_path):
    write_run(tmp_path)
    rows = read_score_file(tmp_path / "scores.csv")
    fig = plots.plot_score_histogram(rows, bins=5)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == 5  # five scored rows, the error row skipped
    assert ax.get_title() == "5 scores, 2 prompt(s), mean 27.450 (1 row(s) with errors skipped)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a red square", "a blue square", "mean of all"]
    path = plots.save_figure(fig, tmp_path / "hist.png")
    assert path.stat().st_size > 10_000 and png_size(path) == (700, 420)


def test_plot_score_histogram_needs_scores():
    with pytest.raises(Exception, match="every row has an error"):
        plots.plot_score_histogram([ScoreRow("a", "p", None, error="bad")])


# -- CLI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_cli_plot_scores(tmp_path, capsys, monkeypatch, fmt):
    path = write_run(tmp_path, fmt)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["plot-scores", str(path), "--out", str(out), "--top", "2"]) == 0
    captured = capsys.readouterr()
    written = sorted(p.name for p in out.iterdir())
    assert written == ["ranked_01_a_red_square.png", "ranked_02_a_blue_square.png", "score_histogram.png"]
    for name in written:
        assert (out / name).stat().st_size > 5_000
    assert png_size(out / "score_histogram.png") == (700, 420)
    assert png_size(out / "ranked_01_a_red_square.png")[0] == 520  # two 2.6-inch columns at 100 dpi
    assert "a red square" in captured.out and "31.000" in captured.out
    assert "1 row(s) with errors were skipped" in captured.err
    assert "not found" not in captured.err


def test_cli_plot_scores_images_root_and_missing_images(tmp_path, capsys, monkeypatch):
    path = write_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # relative paths fall back to the score file's folder
    assert main(["plot-scores", str(path), "--out", str(tmp_path / "a")]) == 0
    assert "not found" not in capsys.readouterr().err
    # an --images folder without the images: grey tiles and a note, not a failure
    assert main(["plot-scores", str(path), "--images", str(elsewhere), "--out", str(tmp_path / "b")]) == 0
    assert "5 image(s) not found (drawn grey)" in capsys.readouterr().err


@pytest.mark.parametrize("setup, argv, message", [
    (None, ["nope.csv"], "sdclip plot-scores: error: score file 'nope.csv': no such file"),
    ("image,prompt\na.png,cat\n", ["s.csv"], "sdclip plot-scores: error: score file 's.csv': missing column(s) score"),
    ("image,prompt,score,error\na.png,cat,,bad\n", ["s.csv"], "sdclip plot-scores: error: score file 's.csv': every row"),
    ("image,prompt,score\na.png,cat,1\n", ["s.csv", "--images", "nowhere"],
     "sdclip plot-scores: error: --images 'nowhere': no such folder"),
    ("image,prompt,score\na.png,cat,1\n", ["s.csv", "--top", "0"], "sdclip plot-scores: error: --top 0"),
])  # fmt: skip
def test_cli_plot_scores_errors(tmp_path, capsys, monkeypatch, setup, argv, message):
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        (tmp_path / "s.csv").write_text(setup)
    assert main(["plot-scores", *argv, "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message)
    assert not (tmp_path / "out").exists()


# -- hostile score files and images (issue 16 #12) ------------------------------------------------


def test_unreadable_images_are_captioned_grey_tiles(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (48, 40), COLOURS["red"]).save(folder / "good.png")
    Image.new("RGB", (48, 40), COLOURS["red"]).save(folder / "corrupt.png")
    (folder / "corrupt.png").write_bytes((folder / "corrupt.png").read_bytes()[:50])
    (folder / "text.png").write_text("not an image")
    Image.new("RGB", (300, 300)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # the 300x300 file is a "bomb"
    rows = [{"image": f"images/{name}", "prompt": "p", "score": 30 - i, "rank": i + 1, "error": ""}
            for i, name in enumerate(["good.png", "corrupt.png", "text.png", "bomb.png"])]
    path = write_run(tmp_path, rows=rows)
    monkeypatch.chdir(tmp_path)
    assert main(["plot-scores", str(path), "--out", "out"]) == 0
    err = capsys.readouterr().err
    assert "3 image(s) could not be read (drawn grey, the reason in the caption)" in err and "Traceback" not in err
    fig = plots.plot_ranked_grid(ranked_groups(read_score_file(path))["p"], images_root=tmp_path)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "#1  30.000\ngood.png"
    assert titles[1].startswith("#2  29.000\ncorrupt.png (unreadable: ")
    assert titles[2] == "#3  28.000\ntext.png (unreadable: not an image)"
    assert titles[3] == "#4  27.000\nbomb.png (unreadable: over the decompression-bomb limit)"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)  # between 1x and 2x: PIL only warns; still not drawn
    fig = plots.plot_ranked_grid(ranked_groups(read_score_file(path))["p"], images_root=tmp_path)
    assert fig.axes[3].get_title() == titles[3]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ranked_01_p.png", "score_histogram.png"]


@pytest.mark.parametrize("content, message", [
    (b"image,prompt,score,rank\na.png,cat,1,1e400\n", "s.csv:2: column 'rank' should be a finite number"),
    (b"image,prompt,score\na.png,cat,1e400\n", "s.csv:2: column 'score' should be a finite number"),
])  # fmt: skip
def test_cli_plot_scores_bad_numbers_one_line(tmp_path, capsys, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.csv").write_bytes(content)
    assert main(["plot-scores", "s.csv", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_plot_scores_non_utf8_bytes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (48, 40), COLOURS["blue"]).save(b"\xff.png")
    (tmp_path / "s.csv").write_bytes(b"image,prompt,score\n\xff.png,caf\xe9 \xff,1.5\n")
    assert main(["plot-scores", "s.csv", "--out", "out"]) == 0
    captured = capsys.readouterr()
    assert "caf\ufffd \ufffd" in captured.out and "not found" not in captured.err
    assert len(list((tmp_path / "out").iterdir())) == 2
