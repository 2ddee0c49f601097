"""Helpers the hostile tests share: run the CLI in-process or in a child process, and check the
"one line on stderr, exit code 2, never a traceback" contract.

The CLI runs in-process through ``sdclip.cli.main(argv)`` (fast: the model loads in this process) as
``tests/test_cli.py`` and ``tests/test_cli_score.py`` do. A child process is used only where the test
needs one: concurrent runs, a real ``argv`` of bytes, a resource limit (``RLIMIT_FSIZE`` for a full
disk), a private mount namespace (a read-only file system), or a hang the test must be able to kill.
Child processes run ``python -m sdclip.cli`` (``sdclip/cli.py`` has an ``if __name__ == "__main__"``
block) with ``PYTHONPATH`` set to this checkout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class CliResult:
    """What one CLI run gave: exit code (None when it raised instead of returning), stdout, stderr."""

    code: int | None
    out: str
    err: str


def run_cli(args: list, capsys) -> CliResult:
    """``sdclip.cli.main(args)`` in this process. An exception escaping ``main`` is what a user would
    see as a traceback: it is caught and put on ``err`` (with the word ``Traceback``), code None."""
    from sdclip.cli import main

    try:
        code = main([os.fspath(a) if isinstance(a, os.PathLike) else a for a in args])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    except Exception:  # noqa: BLE001 - the contract says this must not happen; report it
        out, err = capsys.readouterr()
        return CliResult(None, out, err + traceback.format_exc())
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


_PROGRESS_BAR = re.compile(r"^\s*[^:]*:?\s*\d+%\|.*\|")  # tqdm: "sdclip score:  50%|#####     | 1/2 [...]"


def stderr_lines(err: str) -> list[str]:
    """The lines of ``err`` a user reads as messages: tqdm progress bars (stderr by design, redrawn with
    carriage returns) are left out, so a run that fails mid-way still counts as one line."""
    return [line for line in re.split(r"[\r\n]+", err) if line.strip() and not _PROGRESS_BAR.match(line)]


def assert_one_line_error(result: CliResult, *fragments: str) -> str:
    """Exit code 2, exactly one line on stderr (progress bars aside), no traceback; the line holds every
    fragment. Returns it."""
    assert "Traceback" not in result.err, f"a traceback instead of one line:\n{result.err}"
    assert result.code == 2, f"exit code {result.code}, expected 2; stderr:\n{result.err}"
    lines = stderr_lines(result.err)
    assert len(lines) == 1, f"{len(lines)} lines on stderr, expected one:\n{result.err}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in the error line: {lines[0]!r}"
    return lines[0]


def assert_no_traceback(result: CliResult) -> None:
    assert "Traceback" not in result.err, f"a traceback:\n{result.err}"
    assert result.code is not None


def assert_no_tmp(*folders: Path) -> None:
    """No temporary file (``*.tmp``, or ``.tmp*`` as safetensors names its own) nor ``*.lock`` left behind in
    ``folders`` (recursively)."""
    left = [p for folder in folders if folder.exists() for p in folder.rglob("*")
            if p.suffix in (".tmp", ".lock") or p.name.startswith(".tmp")]
    assert not left, f"left behind: {[str(p) for p in left]}"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout on PYTHONPATH, offline, one torch thread."""
    env = {
        "PYTHONPATH": str(ROOT),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
        "COLUMNS": "200",
    }
    for key in ("MPLCONFIGDIR", "HF_HOME", "XDG_CACHE_HOME", "LANG", "LC_ALL"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra)
    return env


def cli_command(*args) -> list:
    """The argv of ``sdclip`` as a child process (``python -m sdclip.cli``)."""
    return [sys.executable, "-m", "sdclip.cli", *args]


def run_cli_process(args: list, *, env: dict | None = None, timeout: float = 120, cwd=None) -> CliResult:
    """``python -m sdclip.cli args`` in a child process; ``args`` may hold bytes (a raw argv)."""
    result = subprocess.run(cli_command(*args), capture_output=True, env=env or child_env(), timeout=timeout,
                            cwd=cwd)
    return CliResult(result.returncode, result.stdout.decode("utf-8", "replace"),
                     result.stderr.decode("utf-8", "replace"))


# A child that runs several ``main(argv)`` calls in one process (one import of torch for all of them),
# each with its own captured stdout/stderr, and prints the results as JSON. With ``fsize`` it first sets
# RLIMIT_FSIZE: a write past that many bytes fails with EFBIG, which is how a full disk looks to sdclip
# (CPython ignores SIGXFSZ, so the process is not killed). Heavy imports happen before the limit.
_CHILD = r"""
import io, json, os, sys, traceback
cases, fsize = json.loads(sys.stdin.read())
import torch, transformers, safetensors.torch, PIL.Image, rich, tqdm
import matplotlib
matplotlib.use("Agg")
import matplotlib.figure, matplotlib.font_manager
from sdclip.cli import main
torch.set_num_threads(1)
if fsize is not None:
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
results = []
real_out, real_err = sys.stdout, sys.stderr
for argv in cases:
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:
        sys.stderr.write(traceback.format_exc())
        code = None
    results.append({"code": code, "out": sys.stdout.getvalue(), "err": sys.stderr.getvalue()})
sys.stdout, sys.stderr = real_out, real_err
print("\n@@RESULTS@@" + json.dumps(results))
"""


def run_cli_cases_in_child(
    cases: list[list], *, fsize: int | None = None, wrap: list[str] | None = None, timeout: float = 240,
    env: dict | None = None,
) -> list[CliResult]:
    """Run each argv of ``cases`` through ``main`` in one child process; ``wrap`` prefixes the command
    (``unshare -m ...``)."""
    command = [*(wrap or []), sys.executable, "-c", _CHILD]
    payload = json.dumps([[[os.fspath(a) for a in case] for case in cases], fsize])
    done = subprocess.run(command, input=payload, capture_output=True, text=True, env=env or child_env(),
                          timeout=timeout)
    marker = done.stdout.rfind("@@RESULTS@@")
    assert marker >= 0, f"the child process failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return [CliResult(r["code"], r["out"], r["err"]) for r in json.loads(done.stdout[marker + len("@@RESULTS@@"):])]


def strict_json(text: str):
    """``json.loads`` that refuses ``NaN``/``Infinity`` (not JSON, though Python writes them)."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def save_images(folder: Path, count: int, *, size: int = 40, seed: int = 0, prefix: str = "img") -> list[Path]:
    """``count`` small random PNGs in ``folder``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rs = np.random.RandomState(seed)
    paths = []
    for index in range(count):
        path = folder / f"{prefix}{index:03d}.png"
        Image.fromarray(rs.randint(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def read_rows(path: Path) -> list[dict]:
    """The rows of a score file ``sdclip score`` wrote (bytes that are not UTF-8 kept as surrogates)."""
    import csv

    text = path.read_bytes().decode("utf-8", "surrogateescape")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.split("\n") if line.strip()]
    import io

    return list(csv.DictReader(io.StringIO(text, newline="")))
