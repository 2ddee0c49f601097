"""``sdclip score`` across processes: torchrun / accelerate launch on the CPU (gloo), a SIGKILL then --resume,
and 2 simulated machines x 2 processes. The reference is a single-process run of the same command."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from sdclip.cli import main

from _launch import env, free_port, pairs_file, read, sigkill_mid_share, torchrun, whole_lines  # tests/cli: on sys.path

pytestmark = pytest.mark.slow  # each process imports torch and transformers: seconds per start


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


def kill_then_resume(tiny_clip_folder, inputs: list[str], out: Path, *, share: int, total: int) -> None:
    """torchrun's rank 1 of 2 is SIGKILLed after its first flushed batch; one process resumes the rest."""
    command = ["-m", "sdclip", "score", "--model", str(tiny_clip_folder), *inputs, "--out", str(out)]
    job = subprocess.Popen(torchrun("--standalone", "--nproc_per_node", "2", *command, "--batch-size", "1",
                                    "--workers", "1"),
                           env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parts = [out.with_name(f"{out.stem}.part-{rank:05d}-of-00002{out.suffix}") for rank in (0, 1)]
    written = sigkill_mid_share(job, rank=1, committed=lambda: max(whole_lines(parts[1]) - 1, 0), share=share)
    assert not out.exists()
    assert written == len(read(parts[1]))  # the CSV reader agrees with the line count: no half row
    already = len(read(parts[0])) + written
    resumed = subprocess.run([sys.executable, *command, "--batch-size", "1", "--resume"],
                             env=env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # every committed row is kept, nothing else is: no pair scored twice, none skipped
    said = " ".join(resumed.stderr.split())
    assert f"{already} pairs already scored, {total - already} to go on 1 process(es)" in said
    assert not list(out.parent.glob(f"{out.stem}.part-*"))


def test_sigkill_mid_run_then_resume_on_one_process_gives_the_same_output(tiny_clip_folder, tmp_path):
    """Image files: rank 1's 12 big images take long enough that the kill lands mid-share."""
    pairs = pairs_file(tmp_path / "data", 24, size=900)
    kill_then_resume(tiny_clip_folder, ["--pairs", str(pairs)], tmp_path / "run.csv", share=12, total=24)
    assert_same_rows(tmp_path / "run.csv", single(tiny_clip_folder, pairs, tmp_path / "one.csv"))


def test_sigkill_mid_run_then_resume_on_webdataset_shards(tiny_clip_folder, tmp_path):
    """The same on 2 tar shards (rank 1's share is the second tar, streamed and decoded ahead in chunks)."""
    tars = [str(tar) for tar in webdataset(pairs_file(tmp_path / "data", 24, size=900), 2)]
    kill_then_resume(tiny_clip_folder, ["--webdataset", *tars], tmp_path / "run.csv", share=12, total=24)
    reference = tmp_path / "one.csv"
    assert main(["score", "--model", str(tiny_clip_folder), "--webdataset", *tars, "--out", str(reference),
                 "--device", "cpu", "--batch-size", "2"]) == 0
    rows = read(tmp_path / "run.csv")
    assert len({row["image"] for row in rows}) == len(rows) == 24 and all(row["image"].startswith(tuple(tars))
                                                                          for row in rows)
    assert_same_rows(tmp_path / "run.csv", reference)


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
