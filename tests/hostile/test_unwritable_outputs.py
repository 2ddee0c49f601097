"""Item 7: an output that cannot be written is one line on stderr and exit code 2, never a traceback,
and no ``*.tmp`` file is left behind. For ``score``, ``encode``, ``inspect --json``, ``inspect --plot`` and
``plot-scores --out``.

These tests may run as root, whom file permissions do not stop, so "unwritable" is made in ways that
bite for root too:

* a path whose parent is a regular FILE (ENOTDIR / EEXIST);
* an output file that is a directory, or an output folder that is a file;
* a folder with the immutable flag (``chattr +i``; skipped where unavailable);
* a path under ``/sys``, where nobody may create files (EPERM, even for root);
* a read-only file system: an empty ``tmpfs`` mounted read-only in a private mount namespace of a
  child process (``unshare -m``; skipped where mounting is not allowed);
* a full disk: a child process with ``RLIMIT_FSIZE`` set, where writes past the limit fail with EFBIG
  just as they fail with ENOSPC on a full disk (``/dev/full`` cannot stand in: sdclip writes through a
  temporary file that it renames, which would replace a symlink to ``/dev/full``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._support import (
    assert_no_tmp, assert_one_line_error, run_cli, run_cli_cases_in_child, save_images,
)

# output name -> (whether --out is a file or a folder, the name it gets)
OUTPUTS = {
    "score": ("file", "scores.csv"),
    "encode": ("file", "embeds.safetensors"),
    "inspect-json": ("file", "inspect.json"),
    "inspect-plot": ("dir", "plots"),
    "plot-scores": ("dir", "plots"),
}


@pytest.fixture
def inputs(tmp_path, clip_model_folder, pipeline_folder) -> dict[str, Path]:
    image = save_images(tmp_path / "inputs", 1)[0]
    scores = tmp_path / "inputs" / "scores.csv"
    scores.write_text(f"image,prompt,score,rank,error\n{image},a cat,25.0,1,\n")
    return {"image": image, "scores": scores, "clip": clip_model_folder, "pipe": pipeline_folder}


def argv(output: str, target: Path, inputs: dict[str, Path]) -> list:
    model = ["--device", "cpu"]
    return {
        "score": ["score", "--images", inputs["image"], "--prompt", "a cat", "--model", inputs["clip"], *model,
                  "--out", target],
        "encode": ["encode", "a cat", "--model", inputs["pipe"], *model, "--out", target],
        "inspect-json": ["inspect", "a cat", "--model", inputs["pipe"], *model, "--json", target],
        "inspect-plot": ["inspect", "a cat", "--model", inputs["pipe"], *model, "--plot", target],
        "plot-scores": ["plot-scores", inputs["scores"], "--out", target],
    }[output]


def check(result, target: Path, *folders: Path) -> None:
    line = assert_one_line_error(result)
    names = {target.name, target.parent.name}
    assert any(name in line for name in names), f"the error names neither {sorted(names)}: {line!r}"
    assert_no_tmp(*folders)


# -- in this process ---------------------------------------------------------------------------------


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_an_output_under_a_regular_file(tmp_path, inputs, capsys, output):
    (tmp_path / "afile").write_text("I am a file")
    target = tmp_path / "afile" / OUTPUTS[output][1]
    check(run_cli(argv(output, target, inputs), capsys), target, tmp_path)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_an_output_of_the_wrong_kind(tmp_path, inputs, capsys, output):
    """A file output that is a folder, or a folder output that is a file."""
    kind, name = OUTPUTS[output]
    target = tmp_path / "out" / name
    target.parent.mkdir()
    if kind == "file":
        target.mkdir()
    else:
        target.write_text("I am a file")
    check(run_cli(argv(output, target, inputs), capsys), target, tmp_path)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_an_output_in_an_immutable_folder(immutable_dir, inputs, capsys, output):
    target = immutable_dir / OUTPUTS[output][1]
    check(run_cli(argv(output, target, inputs), capsys), target, immutable_dir)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_an_output_where_nobody_may_create_files(inputs, capsys, output):
    folder = Path("/sys/sdclip-hostile")
    if not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    try:
        folder.mkdir()
    except OSError:
        pass
    else:
        folder.rmdir()
        pytest.skip("/sys is writable here")
    target = folder / OUTPUTS[output][1]
    check(run_cli(argv(output, target, inputs), capsys), target)


# -- in a child process ------------------------------------------------------------------------------


@pytest.mark.slow
def test_outputs_on_a_read_only_file_system(tmp_path, inputs, read_only_mount_wrap):
    """Every output on a read-only file system (one child process, one import of torch, five runs)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    targets = {output: folder / OUTPUTS[output][1] for output in OUTPUTS}
    results = run_cli_cases_in_child([argv(output, targets[output], inputs) for output in OUTPUTS],
                                     wrap=read_only_mount_wrap(folder))
    failures = []
    for output, result in zip(OUTPUTS, results):
        try:
            check(result, targets[output], folder)
        except AssertionError as error:
            failures.append(f"{output}: {error}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_outputs_on_a_full_disk(tmp_path, inputs):
    """Every output when the disk fills up mid-write (RLIMIT_FSIZE of 64 bytes in a child process)."""
    targets = {output: tmp_path / "full" / output / OUTPUTS[output][1] for output in OUTPUTS}
    for target in targets.values():
        target.parent.mkdir(parents=True)
    results = run_cli_cases_in_child([argv(output, targets[output], inputs) for output in OUTPUTS], fsize=64)
    failures = []
    for output, result in zip(OUTPUTS, results):
        try:
            check(result, targets[output], targets[output].parent)
        except AssertionError as error:
            failures.append(f"{output}: {error}")
    assert not failures, "\n\n".join(failures)
