"""Outputs the CLI must not lose or mangle (issue 16 #2, #7, #10, #11, #15).

``sdclip score``: a lock per ``--out``, no output that is an input, no non-empty ``--out`` replaced
without ``--resume``/``--overwrite`` (checked before the model loads), ``--overwrite`` swaps in only on
success, resume by resolved path, non-UTF-8 names and U+2028 round-trip. Every subcommand: an unwritable
output is one line on stderr, exit 2, no traceback, no temporary file left.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


from sdclip.cli import main
from sdclip.cli._common import OutputLock, atomic_write
from sdclip.errors import SdclipError
from sdclip.scoring.clip_scorer import ClipScorer
from sdclip.scoring.score_files import read_resume_rows, read_score_file


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")


def cli(argv: list, capsys) -> tuple[int, str, str]:
    try:
        code = main([os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert "Traceback" not in err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".lock")))


def images(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rs = np.random.RandomState(1)
    paths = [folder / f"img{index}.png" for index in range(count)]
    for path in paths:
        Image.fromarray(rs.randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return paths


# -- #2: no silent loss --------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--batch-size", "2"]])
def test_non_empty_out_is_refused_before_the_model_loads(tmp_path, capsys, extra):
    images(tmp_path)
    out = tmp_path / "scores.csv"
    out.write_text("image,prompt,score,rank,error\nold.png,x,1.000000,1,\n")
    before = out.read_bytes()
    code, _, err = cli(["score", "--images", tmp_path, "--prompt", "x", "--model", tmp_path / "typo", "--out", out,
                        *extra], capsys)
    one_line_error(code, err, f"--out '{out}': exists and is not empty; pass --resume to continue it, "
                   "or --overwrite to replace it")
    assert out.read_bytes() == before and leftovers(tmp_path) == []


def test_overwrite_with_a_bad_model_keeps_the_old_file(tmp_path, capsys):
    images(tmp_path)
    out = tmp_path / "scores.jsonl"
    out.write_text('{"image": "old.png", "prompt": "x", "score": 1.0, "rank": 1, "error": ""}\n')
    before = out.read_bytes()
    code, _, err = cli(["score", "--images", tmp_path, "--prompt", "x", "--model", tmp_path / "typo", "--out", out,
                        "--overwrite", "--offline"], capsys)
    assert code == 2 and "typo" in err and "Traceback" not in err
    assert out.read_bytes() == before and leftovers(tmp_path) == []


def test_overwrite_replaces_on_success(tmp_path, capsys, tiny_clip_folder):
    paths = images(tmp_path)
    out = tmp_path / "scores.csv"
    out.write_text("image,prompt,score,rank,error\nold.png,x,1.000000,1,\n")
    code, _, err = cli(["score", "--images", *paths, "--prompt", "x", "--model", tiny_clip_folder, "--out", out,
                        "--overwrite"], capsys)
    assert code == 0, err
    assert [row.image for row in read_score_file(out)] == [str(p) for p in paths]
    assert leftovers(tmp_path) == []


def test_resume_and_overwrite_are_exclusive(tmp_path, capsys):
    code, _, err = cli(["score", "--images", tmp_path, "--prompt", "x", "--out", tmp_path / "s.csv", "--resume",
                        "--overwrite"], capsys)
    one_line_error(code, err, "argument --overwrite: not allowed with argument --resume")


@pytest.mark.parametrize("spelling", ["same", "dot-dot", "symlink"])
def test_an_output_that_is_the_pairs_file_is_refused(tmp_path, capsys, monkeypatch, spelling):
    images(tmp_path)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,prompt\nimg0.png,a cat\n")
    before = pairs.read_bytes()
    monkeypatch.chdir(tmp_path)
    out = {"same": "pairs.csv", "dot-dot": f"../{tmp_path.name}/pairs.csv", "symlink": "link.csv"}[spelling]
    if spelling == "symlink":
        (tmp_path / "link.csv").symlink_to(pairs)
    code, _, err = cli(["score", "--pairs", pairs, "--model", "nowhere", "--out", out, "--resume"], capsys)
    one_line_error(code, err, f"--out '{out}': is the --pairs file '{pairs}'; choose another output file")
    assert pairs.read_bytes() == before


def test_an_output_that_is_an_image_is_refused(tmp_path, capsys):
    (tmp_path / "odd.csv").write_bytes(b"")  # named as an image in the pairs file
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"image": "odd.csv", "prompt": "x"}) + "\n")
    code, _, err = cli(["score", "--pairs", pairs, "--model", "nowhere", "--out", tmp_path / "odd.csv"], capsys)
    one_line_error(code, err, "is the image")


def test_a_second_run_on_a_locked_out_stops(tmp_path, capsys):
    images(tmp_path)
    out = tmp_path / "scores.csv"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "scores.csv.lock").write_text(f"{holder.pid}\n")
        code, _, err = cli(["score", "--images", tmp_path, "--prompt", "x", "--model", "nowhere", "--out", out],
                           capsys)
    finally:
        holder.kill()
        holder.wait()
    one_line_error(code, err, f"--out '{out}': another sdclip run (pid {holder.pid}) is writing it")
    assert not out.exists()


def test_a_stale_lock_is_taken_over_and_removed(tmp_path, capsys, tiny_clip_folder):
    paths = images(tmp_path)
    out = tmp_path / "scores.csv"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "scores.csv.lock").write_text(gone.stdout)  # a run killed with -9 left it
    code, _, err = cli(["score", "--images", *paths, "--prompt", "x", "--model", tiny_clip_folder, "--out", out],
                       capsys)
    assert code == 0, err
    assert "taking over the stale lock" in err
    assert len(read_score_file(out)) == 2 and leftovers(tmp_path) == []


def test_the_lock_is_exclusive_within_one_process(tmp_path):
    out = tmp_path / "s.csv"
    with OutputLock(out):
        assert (tmp_path / "s.csv.lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / "s.csv.lock").exists()


@pytest.mark.slow
def test_two_concurrent_runs_one_refused_no_row_lost(tmp_path, tiny_clip_folder):
    paths = images(tmp_path / "imgs", 6)
    out = tmp_path / "scores.csv"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sdclip.cli", "score", "--images", *map(str, paths), "--prompt", "x",
               "--model", str(tiny_clip_folder), "--out", str(out), "--batch-size", "1"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    # locked while the first runs; if the first had already finished, its rows are not overwritten either
    assert "another sdclip run" in refused or "exists and is not empty" in refused, refused
    assert len(refused.strip().splitlines()) == 1, refused
    assert sorted(row.image for row in read_score_file(out)) == sorted(map(str, paths))


def test_resume_matches_images_by_resolved_path(tmp_path, capsys, monkeypatch, tiny_clip_folder):
    images(tmp_path / "imgs", 3)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "scores.jsonl"
    assert cli(["score", "--images", "imgs", "--prompt", "x", "--model", tiny_clip_folder, "--out", out],
               capsys)[0] == 0
    scored = []
    original = ClipScorer.iter_scores
    monkeypatch.setattr(ClipScorer, "iter_scores", lambda self, images, *a, **k: scored.append(images) or
                        original(self, images, *a, **k))
    for spelling in (tmp_path / "imgs", "./imgs/../imgs"):
        code, _, err = cli(["score", "--images", spelling, "--prompt", "x", "--model", tiny_clip_folder,
                            "--out", out, "--resume"], capsys)
        assert code == 0, err
        assert "3 pairs already scored, 0 to go" in err and scored == []
    assert [row.image for row in read_resume_rows(out)] == [f"imgs/img{i}.png" for i in range(3)]  # as given
    monkeypatch.chdir(tmp_path / "imgs")  # another working directory: imgs/img0.png names nothing here...
    code, _, err = cli(["score", "--images", tmp_path / "imgs", "--prompt", "x", "--model", tiny_clip_folder,
                        "--out", out, "--resume"], capsys)
    assert code == 0, err  # ...but does from --out's folder, where the first run started
    assert "3 pairs already scored, 0 to go" in err and scored == []
    assert [row.image for row in read_resume_rows(out)] == [f"imgs/img{i}.png" for i in range(3)]


def test_resume_refuses_rows_relative_to_a_folder_it_cannot_find(tmp_path, capsys, monkeypatch, tiny_clip_folder):
    """Rows relative to the first run's folder, which is neither this one nor --out's: refused, not scored twice."""
    images(tmp_path / "imgs", 3)
    (tmp_path / "results").mkdir()
    out = tmp_path / "results" / "scores.jsonl"
    monkeypatch.chdir(tmp_path)
    assert cli(["score", "--images", "imgs", "--prompt", "x", "--model", tiny_clip_folder, "--out", out],
               capsys)[0] == 0
    before = out.read_bytes()
    monkeypatch.chdir(tmp_path / "imgs")  # imgs/img0.png names nothing here, nor beside --out
    code, _, err = cli(["score", "--images", tmp_path / "imgs", "--prompt", "x", "--model", tiny_clip_folder,
                        "--out", out, "--resume"], capsys)
    one_line_error(code, err, f"--out '{out}': its row for 'imgs/img0.png' is relative to the folder the first "
                   "run started in, not this one")
    assert out.read_bytes() == before


# -- #7: unwritable outputs ----------------------------------------------------------------------


def unwritable(tmp_path: Path, kind: str, name: str) -> tuple[str, str]:
    """An output path of ``kind`` and the wording its error has."""
    if kind == "folder":
        (tmp_path / name).mkdir()
        return str(tmp_path / name), "is a folder; expected a file path"
    if kind == "under-a-file":
        (tmp_path / "file").write_text("x")
        return str(tmp_path / "file" / name), "cannot write in folder"
    if kind == "proc":
        return f"/proc/sdclip-test/{name}", "cannot write in folder"
    (tmp_path / name).symlink_to("/dev/full")  # disk full
    return str(tmp_path / name), "exists and is not a regular file"


KINDS = ["folder", "under-a-file", "proc", "dev-full"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command, name", [
    (["score", "--images", "{t}", "--prompt", "x"], "s.csv"),
    (["encode", "a cat"], "e.safetensors"),
])  # fmt: skip
def test_unwritable_out_is_one_line_before_the_model_loads(tmp_path, capsys, kind, command, name):
    images(tmp_path)
    out, message = unwritable(tmp_path, kind, name)
    argv = [part.format(t=tmp_path) for part in command] + ["--model", "nowhere", "--out", out]
    code, _, err = cli(argv, capsys)
    one_line_error(code, err, f"--out '{out}': {message}")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_inspect_json_unwritable(tmp_path, capsys, kind):
    out, message = unwritable(tmp_path, kind, "r.json")
    code, _, err = cli(["inspect", "a cat", "--model", "nowhere", "--json", out], capsys)
    one_line_error(code, err, f"--json '{out}': {message}")


@pytest.mark.parametrize("option", ["inspect", "plot-scores"])
def test_plot_folder_that_is_a_file(tmp_path, capsys, option):
    (tmp_path / "plots").write_text("x")
    scores = tmp_path / "s.csv"
    scores.write_text("image,prompt,score\na.png,cat,1\n")
    if option == "inspect":
        code, _, err = cli(["inspect", "a cat", "--model", "nowhere", "--plot", tmp_path / "plots"], capsys)
        one_line_error(code, err, f"--plot '{tmp_path / 'plots'}': is a file; expected a folder")
    else:
        code, _, err = cli(["plot-scores", scores, "--out", tmp_path / "plots" / "sub"], capsys)
        one_line_error(code, err, f"--out '{tmp_path / 'plots' / 'sub'}': cannot write in folder")


def test_atomic_write_on_a_full_disk_leaves_nothing(tmp_path):
    target = tmp_path / "s.csv"
    target.write_text("old\n")

    def full(file):
        file.write("partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(SdclipError, match=r"^--out '.*s.csv': cannot write \(No space left on device\); "
                       "nothing was changed$"):
        atomic_write(target, full)
    assert target.read_text() == "old\n" and leftovers(tmp_path) == []


def test_atomic_write_interrupted_leaves_nothing(tmp_path):
    def interrupted(file):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "s.csv", interrupted)
    assert list(tmp_path.iterdir()) == []


# -- #10, #11: names and prompts that are not plain UTF-8 ---------------------------------------


@pytest.mark.parametrize("command", [["tokens"], ["encode", "--out", "e.safetensors"],
                                     ["score", "--images", ".", "--prompt"], ["inspect"]])
def test_prompt_with_non_utf8_bytes_is_one_line(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli([*command, b"a \xff cat"], capsys)
    one_line_error(code, err, "holds bytes that are not UTF-8; pass the prompt as UTF-8 text")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_non_utf8_image_names_and_line_separators_round_trip(tmp_path, capsys, tiny_clip_folder, suffix):
    folder = tmp_path / "imgs"
    images(folder, 1)
    odd = os.fsdecode(os.fsencode(str(folder)) + b"/\xff\xfe.png")
    Image.new("RGB", (64, 64), "red").save(os.fsencode(odd))
    out = tmp_path / f"scores{suffix}"
    args = ["score", "--images", folder, "--prompt", "a\u2028red\u0085cat", "--model", tiny_clip_folder,
            "--out", out]
    code, _, err = cli(args, capsys)
    assert code == 0, err
    rows = read_resume_rows(out)
    assert sorted(row.image for row in rows) == sorted([odd, str(folder / "img0.png")])
    assert all(row.prompt == "a\u2028red\u0085cat" and row.score is not None for row in rows)
    assert [row.image for row in read_score_file(out)] == [row.image for row in rows]
    if suffix == ".jsonl":
        for line in out.read_bytes().splitlines():
            json.loads(line.decode("utf-8"))  # valid UTF-8 JSON, the odd name escaped
    code, _, err = cli([*args, "--resume"], capsys)
    assert code == 0 and "2 pairs already scored, 0 to go" in err


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_a_file_cut_inside_a_multibyte_character(tmp_path, capsys, tiny_clip_folder, suffix):
    paths = images(tmp_path / "imgs", 2)
    out = tmp_path / f"scores{suffix}"
    args = ["score", "--images", *paths, "--prompt", "un chat très noir", "--model", tiny_clip_folder,
            "--out", out]
    assert cli(args, capsys)[0] == 0
    data = out.read_bytes()
    cut = data.rindex("è".encode()) + 1  # inside the last row's two-byte "è"
    out.write_bytes(data[:cut])
    code, _, err = cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert "1 pairs already scored, 1 to go" in err
    assert len(read_resume_rows(out)) == 2


# -- #15: EXIF orientation -----------------------------------------------------------------------


def test_exif_transpose_flag_scores_the_upright_image(tmp_path, capsys, tiny_clip_folder):
    rs = np.random.RandomState(3)
    upright = Image.fromarray(rs.randint(0, 256, (64, 48, 3), dtype=np.uint8))
    upright.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers turn it 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.png", exif=exif)
    out = tmp_path / "s.csv"
    code, _, err = cli(["score", "--images", tmp_path / "upright.png", tmp_path / "rotated.png", "--prompt", "x",
                        "--model", tiny_clip_folder, "--out", out, "--exif-transpose"], capsys)
    assert code == 0, err
    scores = {Path(row.image).name: row.score for row in read_score_file(out)}
    assert scores["rotated.png"] == pytest.approx(scores["upright.png"], abs=1e-4)
