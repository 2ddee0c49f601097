"""``sdclip score``: outputs, pairs files, bad images, one-line errors, interrupted-then-resumed runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


from sdclip.cli import main
from sdclip.scoring.clip_scorer import ClipScorer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scorer(tiny_clip_folder):
    return ClipScorer.from_pretrained(tiny_clip_folder, device="cpu")


def save_images(folder: Path, count: int, *, seed: int = 0) -> list[Path]:
    rs = np.random.RandomState(seed)
    paths = []
    for index in range(count):
        sub = folder / ("nested" if index % 3 == 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(sub / f"img{index}.png")
        Image.fromarray(rs.randint(0, 256, (64 + 8 * index, 72, 3), dtype=np.uint8)).save(paths[-1])
    return sorted(paths)


def read_out(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        row["score"] = float(row["score"]) if row["score"] else None
        row["rank"] = int(row["rank"]) if row["rank"] else None
    return rows


def expected_ranks(scores: list[float]) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    ranks = [0] * len(scores)
    for position, index in enumerate(order):
        ranks[index] = position + 1
    return ranks


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # rich tables: keep long tmp paths on one line


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# -- outputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_prompt_over_a_folder(tmp_path, tiny_clip_folder, scorer, capsys, suffix):
    paths = save_images(tmp_path / "imgs", 5)
    out = tmp_path / f"scores{suffix}"
    code, stdout, _ = run(["score", "--images", tmp_path / "imgs", "--prompt", "a cat", "--model", tiny_clip_folder,
                           "--out", out, "--batch-size", 2], capsys)
    assert code == 0
    rows = read_out(out)
    assert [row["image"] for row in rows] == [str(p) for p in paths]  # recursive, sorted
    expected = scorer.score(paths, "a cat").tolist()
    assert [row["score"] for row in rows] == pytest.approx(expected, abs=1e-5)
    assert [row["rank"] for row in rows] == expected_ranks(expected)
    assert all(row["error"] == "" and row["prompt"] == "a cat" for row in rows)
    best = paths[int(np.argmax(expected))]
    assert str(best) in stdout and "mean score" in stdout
    assert f"CLIP score (torchmetrics definition, 5 pairs): {max(np.mean(expected), 0):.4f}" in stdout


def test_table_on_stdout_without_out(tmp_path, tiny_clip_folder, capsys):
    paths = save_images(tmp_path / "imgs", 2)
    code, stdout, stderr = run(["score", "--images", *paths, "--prompt", "a cat", "--model", tiny_clip_folder], capsys)
    assert code == 0
    assert "scores" in stdout and "summary" in stdout and paths[0].name in stdout
    assert "sdclip score" in stderr and "2/2" in stderr  # tqdm progress on stderr


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_pairs_file_groups_by_prompt(tmp_path, tiny_clip_folder, scorer, capsys, kind):
    paths = save_images(tmp_path / "imgs", 5)
    pairs = [(f"../imgs/{p.relative_to(tmp_path / 'imgs').as_posix()}", "a cat" if i < 3 else 'a "dog", running')
             for i, p in enumerate(paths)]
    pairs_file = tmp_path / "run" / f"pairs.{kind}"
    pairs_file.parent.mkdir()
    if kind == "csv":
        with pairs_file.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["seed", "image", "prompt"])  # extra columns are fine
            writer.writerows([[i, image, prompt] for i, (image, prompt) in enumerate(pairs)])
    else:
        pairs_file.write_text("".join(json.dumps({"image": i, "prompt": p}) + "\n\n" for i, p in pairs))
    out = tmp_path / "scores.csv"
    code, _, _ = run(["score", "--pairs", pairs_file, "--model", tiny_clip_folder, "--out", out], capsys)
    assert code == 0
    rows = read_out(out)
    assert [row["image"] for row in rows] == [str(pairs_file.parent / image) for image, _ in pairs]
    for prompt, members in (("a cat", slice(0, 3)), ('a "dog", running', slice(3, 5))):
        expected = scorer.score(paths[members], prompt).tolist()
        assert [row["prompt"] for row in rows[members]] == [prompt] * len(expected)
        assert [row["score"] for row in rows[members]] == pytest.approx(expected, abs=1e-5)
        assert [row["rank"] for row in rows[members]] == expected_ranks(expected)


def test_the_same_pair_twice_is_scored_once(tmp_path, tiny_clip_folder, capsys):
    paths = save_images(tmp_path, 1)
    out = tmp_path / "scores.jsonl"
    assert run(["score", "--images", paths[0], paths[0], "--prompt", "x", "--model", tiny_clip_folder, "--out", out],
               capsys)[0] == 0
    assert len(read_out(out)) == 1


# -- bad images -----------------------------------------------------------------------------------


def make_bad_images(folder: Path) -> dict[str, str]:
    """Bad files next to good ones; returns file name -> expected error wording."""
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "truncated.png")
    (folder / "truncated.png").write_bytes((folder / "truncated.png").read_bytes()[:60])
    Image.new("RGB", (300, 300)).save(folder / "bomb.png")
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    return {"empty.png": "file is empty (0 bytes)", "text.png": "not an image file Pillow can read",
            "truncated.png": "truncated or corrupt", "bomb.png": "decompression-bomb limit",
            "dangling.png": "no such file"}


@pytest.mark.parametrize("strict", [False, True])
def test_bad_images_become_error_rows(tmp_path, tiny_clip_folder, capsys, monkeypatch, strict):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # the 300x300 file is a "bomb", 64x72 images are not
    good = save_images(tmp_path, 3)
    bad = make_bad_images(tmp_path)
    out = tmp_path / "scores.csv"
    # a folder scan skips the dangling link (not a file), so it is named explicitly
    args = ["score", "--images", tmp_path, tmp_path / "dangling.png", "--prompt", "a cat",
            "--model", tiny_clip_folder, "--out", out, "--batch-size", 2] + (["--strict"] if strict else [])
    code, stdout, _ = run(args, capsys)
    assert code == (1 if strict else 0)
    rows = {Path(row["image"]).name: row for row in read_out(out)}
    assert set(rows) == {p.name for p in good} | set(bad)
    for name, wording in bad.items():
        assert wording in rows[name]["error"] and rows[name]["score"] is None and rows[name]["rank"] is None
    assert sorted(rows[p.name]["rank"] for p in good) == [1, 2, 3]
    assert "CLIP score (torchmetrics definition, 3 pairs)" in stdout


# -- one-line errors, exit code 2 -----------------------------------------------------------------


def _image(tmp_path: Path) -> Path:
    Image.new("RGB", (8, 8)).save(tmp_path / "one.png")
    return tmp_path / "one.png"


def _pairs(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda t: ["--pairs", _pairs(t, "p.csv", "image,caption\na.png,x\n")],
         "--pairs '{t}/p.csv': no 'prompt' column (found: image, caption); expected a header row with image,prompt"),
        (lambda t: ["--pairs", _pairs(t, "p.csv", "")], "--pairs '{t}/p.csv': no 'image' column (found: no header)"),
        (lambda t: ["--pairs", _pairs(t, "p.csv", "image,prompt\n")], "--pairs '{t}/p.csv': no rows"),
        (lambda t: ["--pairs", _pairs(t, "p.csv", "image,prompt\n,x\n")], "--pairs '{t}/p.csv' line 2: empty image"),
        (lambda t: ["--pairs", _pairs(t, "p.jsonl", '{"image": "a.png"}\n')],
         "--pairs '{t}/p.jsonl' line 1: no string 'prompt'"),
        (lambda t: ["--pairs", _pairs(t, "p.jsonl", "{oops\n")], "--pairs '{t}/p.jsonl' line 1: not valid JSON"),
        (lambda t: ["--pairs", t / "none.csv"], "--pairs '{t}/none.csv': no such file"),
        (lambda t: ["--pairs", _pairs(t, "p.txt", "")], "--pairs '{t}/p.txt': expected a .csv or .jsonl file"),
        (lambda t: ["--images", t, "--prompt", "x"], "--images {t}: no images found"),
        (lambda t: ["--images", t / "nope", "--prompt", "x"], "--images '{t}/nope': no such file or folder"),
        (lambda t: ["--prompt", "x"], "--images: required with --prompt"),
        (lambda t: ["--images", t, "--pairs", _pairs(t, "p.csv", "image,prompt\na,b\n")],
         "--images: use --images with --prompt, or --pairs alone"),
        (lambda t: ["--images", t, "--prompt", "x", "--resume"], "--resume: needs --out"),
        (lambda t: ["--images", t, "--prompt", "x", "--out", t / "s.txt"], "--out '{t}/s.txt': expected a file ending"),
        (lambda t: ["--images", _image(t), "--prompt", "x", "--out", _pairs(t, "s.csv", "a,b\n1,2\n"), "--resume"],
         "--out '{t}/s.csv': not an sdclip score file (its header is not image,prompt,score,rank,error)"),
        (lambda t: ["--images", _image(t), "--prompt", "x", "--out", _pairs(t, "s.jsonl", '{"a": 1}\n'), "--resume"],
         "--out '{t}/s.jsonl': row 1 is not an sdclip score row; refusing to resume into it"),
        (lambda t: ["--images", t, "--prompt", "x", "--bogus"], "sdclip: error: unrecognized arguments: --bogus"),
        (lambda t: ["--images", t, "--prompt", "x", "--batch-size", "0"],
         "argument --batch-size: expected an integer >= 1, got '0'"),
        (lambda t: ["--images", t], "one of the arguments --prompt --pairs --webdataset is required"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, make_args, message):
    try:
        code = main(["score", *map(str, make_args(tmp_path))])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    _, stderr = capsys.readouterr()
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert message.format(t=tmp_path) in stderr
    assert "Traceback" not in stderr


# -- interrupted, then resumed --------------------------------------------------------------------


def interrupt_after(monkeypatch, batches: int) -> None:
    original = ClipScorer.iter_scores

    def interrupted(self, *args, **kwargs):
        for number, batch in enumerate(original(self, *args, **kwargs)):
            if number == batches:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(ClipScorer, "iter_scores", interrupted)


def count_scored(monkeypatch) -> list[int]:
    scored = []
    original = ClipScorer.iter_scores

    def counting(self, images, prompts, **kwargs):
        scored.append(len(images))
        return original(self, images, prompts, **kwargs)

    monkeypatch.setattr(ClipScorer, "iter_scores", counting)
    return scored


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_interrupted_run_resumes_without_duplicates(tmp_path, tiny_clip_folder, capsys, monkeypatch, suffix):
    save_images(tmp_path / "imgs", 7)
    args = ["score", "--images", tmp_path / "imgs", "--prompt", "a cat", "--model", tiny_clip_folder, "--batch-size", 2]
    fresh = tmp_path / f"fresh{suffix}"
    assert run([*args, "--out", fresh], capsys)[0] == 0

    out = tmp_path / f"scores{suffix}"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        code, _, stderr = run([*args, "--out", out], capsys)
    assert code == 130 and "interrupted" in stderr
    partial = read_out(out)
    assert len(partial) == 4 and all(row["rank"] is None for row in partial)  # two batches, ranks not yet known
    with out.open("a") as f:
        f.write('"half-written row' if suffix == ".csv" else '{"image": "half')  # killed mid-write

    with monkeypatch.context() as patch:
        scored = count_scored(patch)
        code, _, stderr = run([*args, "--out", out, "--resume"], capsys)
    assert code == 0 and scored == [3]
    assert "4 pairs already scored, 3 to go" in stderr
    rows = read_out(out)
    assert len({(row["image"], row["prompt"]) for row in rows}) == len(rows) == 7
    by_image = {row["image"]: row for row in rows}
    for row in read_out(fresh):
        assert by_image[row["image"]]["rank"] == row["rank"]
        assert by_image[row["image"]]["score"] == pytest.approx(row["score"], abs=1e-5)


def test_resume_retries_failed_rows_and_appends_nothing_twice(tmp_path, tiny_clip_folder, capsys):
    save_images(tmp_path, 2)
    (tmp_path / "late.png").write_bytes(b"")  # not written yet when the run started
    out = tmp_path / "scores.jsonl"
    args = ["score", "--images", tmp_path, "--prompt", "a cat", "--model", tiny_clip_folder, "--out", out]
    assert run(args, capsys)[0] == 0
    assert [row["error"] != "" for row in read_out(out)] == [False, False, True]
    Image.new("RGB", (70, 70), "red").save(tmp_path / "late.png")
    assert run([*args, "--resume"], capsys)[0] == 0
    rows = read_out(out)
    assert len(rows) == 3 and all(row["error"] == "" for row in rows)
    assert sorted(row["rank"] for row in rows) == [1, 2, 3]
    assert run([*args, "--resume"], capsys)[0] == 0  # nothing left to do: the file stays the same
    assert read_out(out) == rows


# -- the real process -----------------------------------------------------------------------------


@pytest.mark.slow
def test_console_process(tmp_path, tiny_clip_folder):
    paths = save_images(tmp_path, 2)
    command = [sys.executable, "-m", "sdclip.cli", "score", "--prompt", "a cat", "--model", str(tiny_clip_folder)]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([*command, "--images", *map(str, paths), "--out", str(tmp_path / "s.csv")],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert len(read_out(tmp_path / "s.csv")) == 2
    bad = subprocess.run([*command, "--images", str(tmp_path), "--bogus"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "sdclip: error: unrecognized arguments: --bogus (see sdclip --help)"]
