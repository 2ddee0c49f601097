"""Item 2: ``sdclip score`` must never lose or double rows, nor touch its inputs.

Decisions (stated here, to be documented in the README's "Guarantees"):

* **Locking.** A run holds ``<out>.lock`` (created exclusively) for its whole life. A second run on the
  same ``--out`` while the first holds it exits 2 with one line that says the file is locked; the lock
  file is gone when a run ends.
* **An output that is an input** (``--out`` naming the ``--pairs`` file, however spelled) is refused
  with exit 2 before anything is written.
* **Existing results are never wiped by accident.** A non-empty ``--out`` without ``--resume`` or the
  new ``--overwrite`` is refused (exit 2, one line naming both flags). With either flag, a run that fails
  before scoring (a typo in ``--model``) leaves the file byte for byte as it was; rewriting happens
  through ``<out>.tmp`` and an atomic replace.
* **Resume is keyed by the resolved path** of each image (absolute, symlinks followed), so the same
  file given as a relative or absolute path, or from another working directory, is scored once.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from ._support import (
    assert_no_tmp, assert_one_line_error, child_env, cli_command, read_rows, run_cli, save_images,
)


def _score_args(model, *rest) -> list:
    return ["score", "--model", model, "--device", "cpu", "--batch-size", "2", *rest]


def _resolved(rows: list[dict], base: Path) -> list[Path]:
    return [(base / row["image"]).resolve() for row in rows]


# -- two runs, one output --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(
    tmp_path, clip_model_folder, capsys, monkeypatch
):
    """Issue: two concurrent runs to the same --out both exit 0 and one run's rows are lost.

    Deterministic overlap: run A (in this process) starts run B (a child process) after its first batch
    and waits for B to end before going on. B uses --resume, so only the lock can stop it.
    """
    from sdclip import ClipScorer

    first = save_images(tmp_path / "a", 4, prefix="a")
    second = save_images(tmp_path / "b", 3, prefix="b", seed=1)
    out = tmp_path / "scores.csv"
    other: list[subprocess.CompletedProcess] = []
    original = ClipScorer.iter_scores

    def with_a_rival(self, *args, **kwargs):
        for number, batch in enumerate(original(self, *args, **kwargs)):
            if number == 1 and not other:
                command = cli_command(*map(str, _score_args(clip_model_folder, "--images", tmp_path / "b",
                                                            "--prompt", "a cat", "--out", out, "--resume")))
                other.append(subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=180))
            yield batch

    monkeypatch.setattr(ClipScorer, "iter_scores", with_a_rival)
    result = run_cli(_score_args(clip_model_folder, "--images", tmp_path / "a", "--prompt", "a cat", "--out", out),
                     capsys)
    assert result.code == 0, result.err
    rival = other[0]
    rows = read_rows(out)
    images = sorted(Path(row["image"]).name for row in rows)
    if rival.returncode == 0:  # then no row of either run may be missing
        assert images == sorted(p.name for p in first + second), (
            f"both runs exited 0 but the file holds {images}: a run's rows were lost")
    assert rival.returncode == 2 and "Traceback" not in rival.stderr, rival.stderr
    assert len(rival.stderr.strip().splitlines()) == 1 and "lock" in rival.stderr.lower(), rival.stderr
    assert images == sorted(p.name for p in first)
    assert_no_tmp(tmp_path)


# -- an output that is an input ---------------------------------------------------------------------


def _pairs_file(folder: Path, kind: str, images: list[Path]) -> Path:
    path = folder / f"pairs.{kind}"
    if kind == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "prompt"])
            writer.writerows([[image.name, "a cat"] for image in images])
    else:
        import json

        path.write_text("".join(json.dumps({"image": image.name, "prompt": "a cat"}) + "\n" for image in images))
    return path


@pytest.mark.parametrize(("spelling", "kind", "flags"), [
    ("same", "csv", []), ("same", "jsonl", []), ("dotdot", "csv", ["--overwrite"]),
    ("relative", "jsonl", ["--overwrite"]), ("same", "csv", ["--resume"]), ("relative", "jsonl", ["--resume"]),
])
def test_out_naming_the_pairs_file_is_refused(tmp_path, clip_model_folder, capsys, monkeypatch, kind, spelling,
                                               flags):
    """Issue: --out equal to the --pairs file overwrites the input. Refused whatever the flags, with one
    line naming both options (not merely as "a non-empty --out")."""
    images = save_images(tmp_path, 2)
    pairs = _pairs_file(tmp_path, kind, images)
    before = pairs.read_bytes()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    out = {"same": pairs, "dotdot": tmp_path / "sub" / ".." / pairs.name, "relative": Path(pairs.name)}[spelling]
    result = run_cli(_score_args(clip_model_folder, "--pairs", pairs, "--out", out, *flags), capsys)
    assert_one_line_error(result, "--out", "--pairs")
    assert pairs.read_bytes() == before, "the pairs file was changed"
    assert_no_tmp(tmp_path)


# -- existing results ---------------------------------------------------------------------------------


@pytest.fixture
def earlier_results(tmp_path, clip_model_folder, capsys) -> tuple[Path, bytes, list]:
    """A score file from an earlier run (one scored row and one error row), and the run's arguments."""
    images = save_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "earlier.csv"
    args = ["--images", tmp_path / "imgs", "--prompt", "a cat", "--out", out]
    assert run_cli(_score_args(clip_model_folder, *args), capsys).code == 0
    assert len(read_rows(out)) == 3
    return out, out.read_bytes(), args


def test_a_non_empty_out_without_resume_or_overwrite_is_refused(earlier_results, clip_model_folder, capsys):
    """Issue: without --resume an existing --out is emptied. Decision: refused unless --overwrite."""
    out, before, args = earlier_results
    result = run_cli(_score_args(clip_model_folder, *args), capsys)
    assert_one_line_error(result, "--resume", "--overwrite")
    assert out.read_bytes() == before


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]], ids=["no-flag", "overwrite", "resume"])
def test_a_typo_in_model_leaves_earlier_results_untouched(earlier_results, capsys, flags):
    """Issue: the --out is emptied before the model loads, so a typo in --model wipes earlier results."""
    out, before, args = earlier_results
    result = run_cli(_score_args("/no/such/model", *args, *flags), capsys)
    if flags == ["--resume"]:  # "resuming ...: 2 pairs already scored" may come first: a note, not an error
        assert result.code == 2 and "Traceback" not in result.err, result.err
        assert "model '/no/such/model'" in result.err.strip().splitlines()[-1]
    elif flags:  # with a flag that allows writing, the model is what fails
        assert_one_line_error(result, "model '/no/such/model'")
    else:
        assert_one_line_error(result)
    assert out.read_bytes() == before, "the earlier results were changed by a run that failed"
    assert_no_tmp(out.parent)


def test_overwrite_replaces_earlier_results(earlier_results, clip_model_folder, capsys):
    out, _, args = earlier_results
    result = run_cli(_score_args(clip_model_folder, *args, "--overwrite"), capsys)
    assert result.code == 0, result.err
    assert len(read_rows(out)) == 3
    assert_no_tmp(out.parent)


# -- resume keyed by the resolved path -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_with_relative_then_absolute_image_paths_scores_nothing_twice(
    tmp_path, clip_model_folder, capsys, monkeypatch, suffix
):
    """Issue: --resume with the same images by another path spelling scores them all again."""
    images = save_images(tmp_path / "imgs", 3)
    out = tmp_path / f"scores{suffix}"
    monkeypatch.chdir(tmp_path)
    assert run_cli(_score_args(clip_model_folder, "--images", "imgs", "--prompt", "a cat", "--out", out.name),
                   capsys).code == 0
    result = run_cli(_score_args(clip_model_folder, "--images", tmp_path / "imgs", "--prompt", "a cat",
                                 "--out", out, "--resume"), capsys)
    assert result.code == 0, result.err
    resolved = _resolved(read_rows(out), tmp_path)
    assert sorted(resolved) == sorted(p.resolve() for p in images), f"rows: {resolved}"


def test_resume_of_a_pairs_file_from_another_working_directory_scores_nothing_twice(
    tmp_path, clip_model_folder, capsys, monkeypatch
):
    """The same pairs file (relative image paths) given from two working directories: one row per pair."""
    images = save_images(tmp_path / "run", 3)
    pairs = _pairs_file(tmp_path / "run", "csv", images)
    out = tmp_path / "scores.csv"
    monkeypatch.chdir(tmp_path)
    assert run_cli(_score_args(clip_model_folder, "--pairs", "run/pairs.csv", "--out", "scores.csv"),
                   capsys).code == 0
    monkeypatch.chdir(tmp_path / "run")
    result = run_cli(_score_args(clip_model_folder, "--pairs", pairs.name, "--out", "../scores.csv", "--resume"),
                     capsys)
    assert result.code == 0, result.err
    resolved = _resolved(read_rows(out), tmp_path)
    assert sorted(resolved) == sorted(p.resolve() for p in images), f"rows: {resolved}"


def test_pairs_files_may_name_images_with_dotdot_and_absolute_paths(tmp_path, clip_model_folder, capsys):
    """Decision: image paths in a pairs file may be relative to the file (``..`` allowed) or absolute."""
    images = save_images(tmp_path / "imgs", 2)
    (tmp_path / "run").mkdir()
    pairs = tmp_path / "run" / "pairs.csv"
    pairs.write_text(f"image,prompt\n../imgs/{images[0].name},a cat\n{images[1]},a cat\n")
    out = tmp_path / "scores.csv"
    result = run_cli(_score_args(clip_model_folder, "--pairs", pairs, "--out", out), capsys)
    assert result.code == 0, result.err
    rows = read_rows(out)
    assert [row["error"] for row in rows] == ["", ""]
    assert sorted(_resolved(rows, tmp_path)) == sorted(p.resolve() for p in images)
