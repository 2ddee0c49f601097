"""``sdclip score`` across processes: torchrun / accelerate launch on the CPU (gloo), a SIGKILL then --resume,
and 2 simulated machines x 2 processes. The reference is a single-process run of the same command."""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdclip.cli import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # each process imports torch and transformers: seconds per start


def env() -> dict:
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


def assert_same_rows(got: Path, want: Path) -> None:
    got_rows, want_rows = read(got), read(want)
    assert [(r["image"], r["prompt"], r["rank"], r["error"]) for r in got_rows] == \
        [(r["image"], r["prompt"], r["rank"], r["error"]) for r in want_rows]
    assert np.allclose([float(r["score"]) for r in got_rows], [float(r["score"]) for r in want_rows], atol=1e-5)


def single(tiny_clip_folder, pairs: Path, out: Path) -> Path:
    assert main(["score", "--model", str(tiny_clip_folder), "--pairs", str(pairs), "--out", str(out),
                 "--device", "cpu", "--batch-size", "2"]) == 0
    return out


def test_processes_shortcut_merges_to_the_single_process_output(tiny_clip_folder, tmp_path):
    """``--processes 2`` runs ``accelerate launch --multi_gpu --num_processes 2 -m sdclip`` (gloo on the CPU)."""
    pairs = pairs_file(tmp_path / "data", 9)
    out = tmp_path / "two.csv"
    done = subprocess.run([sys.executable, "-m", "sdclip", "score", "--model", str(tiny_clip_folder), "--pairs",
                           str(pairs), "--out", str(out), "--batch-size", "2", "--processes", "2"],
                          env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "starting 2 processes with accelerate launch" in done.stderr
    assert_same_rows(out, single(tiny_clip_folder, pairs, tmp_path / "one.csv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "one.csv", "two.csv"]  # parts cleaned up


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


def test_sigkill_mid_run_then_resume_on_one_process_gives_the_same_output(tiny_clip_folder, tmp_path):
    """torchrun's rank 1 is killed after its first flushed batch; the job stops; one process resumes the rest."""
    pairs = pairs_file(tmp_path / "data", 24, size=900)  # big images, 12 per rank: the kill lands mid-share
    out = tmp_path / "run.csv"
    job = subprocess.Popen(torchrun("--standalone", "--nproc_per_node", "2", "-m", "sdclip", "score", "--model",
                                    str(tiny_clip_folder), "--pairs", str(pairs), "--out", str(out),
                                    "--batch-size", "1", "--workers", "1"),
                           env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    part = tmp_path / "run.part-00001-of-00002.csv"
    deadline = time.monotonic() + 90
    while not (part.is_file() and len(part.read_text().splitlines()) >= 2):  # rank 1 flushed its first batch
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before rank 1 wrote a row"
        time.sleep(0.01)
    victim = _worker(job.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    job.communicate(timeout=60)
    assert job.returncode != 0 and not out.exists()
    written = len(read(part))
    assert 1 <= written < 12  # killed mid-share (rank 1 has 12 pairs)
    already = len(read(tmp_path / "run.part-00000-of-00002.csv")) + written
    resumed = subprocess.run([sys.executable, "-m", "sdclip", "score", "--model", str(tiny_clip_folder), "--pairs",
                              str(pairs), "--out", str(out), "--batch-size", "1", "--resume"],
                             env=env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{already} pairs already scored, {24 - already} to go on 1 process(es)" in " ".join(resumed.stderr.split())
    assert_same_rows(out, single(tiny_clip_folder, pairs, tmp_path / "one.csv"))
    assert not list(tmp_path.glob("run.part-*"))


def webdataset(pairs: Path, shards: int) -> list[Path]:
    """The pairs' images and prompts as img2dataset-style tar shards ({key}.png + {key}.txt)."""
    rows = read(pairs)
    paths = []
    for shard in range(shards):
        paths.append(pairs.parent / f"{shard:05d}.tar")
        with tarfile.open(paths[-1], "w") as tar:
            for row in rows[shard::shards]:
                tar.add(pairs.parent / row["image"], arcname=row["image"])
                caption = row["prompt"].encode()
                info = tarfile.TarInfo(row["image"][:-4] + ".txt")
                info.size = len(caption)
                tar.addfile(info, io.BytesIO(caption))
    return paths


def test_two_machines_of_two_processes_on_webdataset_shards(tiny_clip_folder, tmp_path):
    """2 launchers (node ranks 0 and 1, a local rendezvous) x 2 processes stream the tars' samples."""
    pairs = pairs_file(tmp_path / "data", 10)
    tars = webdataset(pairs, 2)
    out = tmp_path / "four.csv"
    port = str(free_port())
    machines = [subprocess.Popen(torchrun("--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "2",
                                          "--master_addr", "127.0.0.1", "--master_port", port, "-m", "sdclip",
                                          "score", "--model", str(tiny_clip_folder), "--webdataset", *map(str, tars),
                                          "--out", str(out), "--batch-size", "2"),
                                 env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for node in (0, 1)]
    errors = [machine.communicate(timeout=180)[1] for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    reference = {row["image"]: row for row in read(single(tiny_clip_folder, pairs, tmp_path / "one.csv"))}
    got = read(out)
    assert [row["image"] for row in got] == [f"{tar}/{row['image']}" for tar in tars
                                             for row in read(pairs)[int(tar.stem) :: 2]]  # shard, then member order
    for row in got:
        want = reference[str(pairs.parent / row["image"].rsplit("/", 1)[1])]
        assert (row["prompt"], row["rank"], row["error"]) == (want["prompt"], want["rank"], want["error"])
        assert abs(float(row["score"]) - float(want["score"])) < 1e-5
