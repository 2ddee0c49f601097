"""Multi-process CLI tests' machinery: the child environment, torchrun, input data, and a SIGKILL mid-share.

``sigkill_mid_share`` picks the moment to kill without a timing race on the rank's progress: it waits until
the rank has *committed* its first batch (read back from its part file, the same way a resume reads it),
then SIGKILLs that worker. Tests give the rank a share long enough (12 items, big images to decode) that
it cannot finish the rest between that observation and the kill, and assert afterwards that the kill did
land mid-share (at least one row kept, fewer than the share).
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict:
    """The environment of a child ``python -m sdclip`` (this checkout's sdclip first, one thread, offline)."""
    return {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1",
            "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def pairs_file(folder: Path, count: int, *, size: int = 64) -> Path:
    """``count`` images (noise on a flat colour, ``size`` px) and a CSV giving each one of two prompts."""
    rs = np.random.RandomState(1)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rs.randint(0, 256, 3)))
        image.paste(Image.fromarray(rs.randint(0, 256, (48, 48, 3), dtype=np.uint8)), (index % 16, 0))
        image.save(folder / f"img{index:02d}.png", compress_level=1)
        rows.append((f"img{index:02d}.png", "a red square" if index % 2 else "a photo of noise"))
    path = folder / "pairs.csv"
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([("image", "prompt"), *rows])
    return path


def read(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def _worker(launcher: int, rank: int) -> int | None:
    """The pid of the worker with ``RANK=rank`` started (at any depth) by ``launcher``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if f"RANK={rank}".encode() in environ and parent == launcher:
            return int(entry.name)
    return None


def sigkill_mid_share(job: subprocess.Popen, *, rank: int, committed: Callable[[], int], share: int) -> int:
    """SIGKILL ``rank``'s worker of ``job`` once it committed a batch; wait for the job to stop; rows it kept.

    Args:
        job: the launcher (torchrun) of the workers.
        rank: the worker to kill.
        committed: how many rows that rank's part holds now, counted as a resume counts them.
        share: how many items the rank was given (the kill must land before it finishes them).
    """
    deadline = time.monotonic() + 90
    while committed() < 1:  # the rank flushed its first batch: it is mid-share now
        assert job.poll() is None and time.monotonic() < deadline, f"the job ended before rank {rank} wrote a row"
        time.sleep(0.01)
    victim = _worker(job.pid, rank)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    job.communicate(timeout=60)
    assert job.returncode != 0  # the launcher stops the other ranks: the job failed, nothing merged
    kept = committed()
    assert 1 <= kept < share, f"rank {rank} kept {kept} of {share} rows: the kill did not land mid-share"
    return kept


def whole_lines(path: Path) -> int:
    """Lines of ``path`` that end in a newline (a line being written is not one yet); 0 when it is absent."""
    return path.read_bytes().count(b"\n") if path.is_file() else 0
