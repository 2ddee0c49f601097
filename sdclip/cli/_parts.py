"""The CLI side of sharded runs: ``--processes N`` (starts accelerate's launcher) and locked, merged part files.

The work itself is ``scoring.parts`` / ``scoring.shards``; this module adds what only a command line has:
the re-launch under ``accelerate launch``, output checks, locks and the atomic final write.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import SdclipError
from ..scoring.shards import Processes, current_processes, existing_parts, launched_world, part_path
from ._common import OutputLock, shown, stderr


def add_processes_option(parser: argparse.ArgumentParser) -> None:
    """``--processes N``: run under ``accelerate launch`` with N processes on this machine."""
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help="start N processes on this machine with accelerate's launcher (one per GPU; "
                        "CPU-only machines work too); each writes its own part next to --out, merged at the end. "
                        "Same as: accelerate launch --multi_gpu --num_processes N -m sdclip ...")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _without_processes(argv: Sequence[str]) -> list[str]:
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--processes":
            skip = True
        elif not item.startswith("--processes="):
            kept.append(item)
    return kept


def launch_command(argv: Sequence[str], processes: int) -> list[str]:
    """The ``accelerate launch`` command line that runs ``sdclip <argv>`` (minus ``--processes``) N times.

    ``--multi_gpu`` on CPU-only machines too: accelerate's ``--cpu`` starts a single process.

    Example:
        >>> launch_command(["score", "--processes", "2", "--prompt", "a"], 2)[-4:]
        ['sdclip', 'score', '--prompt', 'a']
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "sdclip", *_without_processes(argv)]
    return command


def relaunch(args: argparse.Namespace) -> int | None:
    """With ``--processes N`` > 1 outside a launcher: run the same command under accelerate; its exit code.

    None when this process should do the work itself (no ``--processes``, N = 1, or already launched).
    """
    count = getattr(args, "processes", None)
    if count is None or launched_world() > 1:
        return None
    if count < 1:
        raise SdclipError(f"--processes: expected an integer >= 1, got {count}")
    if count == 1:
        return None
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and count > gpus:
        raise SdclipError(f"--processes {count}: this machine has {gpus} GPU(s); expected at most one process per "
                          f"GPU (pass --processes {gpus})")
    argv = getattr(args, "argv", None)
    if argv is None:
        raise SdclipError("--processes: the command line is not known here; run it from the sdclip command")
    stderr().print(f"starting {count} processes with accelerate launch")
    return subprocess.run(launch_command(argv, count), check=False).returncode


def processes_for(args: argparse.Namespace, out: Path | None) -> Processes | None:
    """This process's rank and world when the run is sharded (launched, or part files to resume), else None."""
    if launched_world() == 1 and (out is None or not existing_parts(out)):
        return None
    if out is None:
        raise SdclipError("--out: needed when several processes score (each writes its part next to it)")
    processes = current_processes()
    if processes.device is not None and getattr(args, "device", None) is None:
        args.device = processes.device  # cuda:<local rank>: one GPU per process
    return processes


def run_sharded(
    args: argparse.Namespace,
    out: Path,
    pairs: Sequence[Any],
    processes: Processes,
    *,
    row_batches: Callable[[list], Iterable[list]],
    pair_key: Callable[[Any], Hashable],
    row_key: Callable[[Any], Hashable],
    write: Callable[[Path, list], None],
    resumed: Callable[[Any], Any] | None = None,
    metrics: Sequence[str] = (),
) -> list | None:
    """Score into part files under locks; on the main process merge, rank (``write``) and clean up."""
    from ..scoring.parts import remove_parts, score_in_parts, stale_parts_message

    existing = out.is_file() and out.stat().st_size > 0
    if not (args.resume or args.overwrite):
        if existing:
            raise SdclipError(f"--out '{out}': exists and is not empty; pass --resume to continue it, or "
                              "--overwrite to replace it")
        message = stale_parts_message(out)
        if message:
            raise SdclipError(message)

    def plan(done: int, left: int) -> None:
        if args.resume and processes.is_main:
            stderr().print(f"resuming {shown(str(out))}: {done} pairs already scored, {left} to go "
                           f"on {processes.world} process(es)")

    with contextlib.ExitStack() as locks:
        if processes.is_main:
            locks.enter_context(OutputLock(out))
        locks.enter_context(OutputLock(part_path(out, processes.rank, processes.world), option="--out part"))
        try:
            rows = score_in_parts(out, pairs, pair_key=pair_key, row_key=row_key, row_batches=row_batches,
                                  processes=processes, resume=args.resume, on_plan=plan,
                                  resumed=resumed, metrics=metrics)
        except OSError as error:
            raise SdclipError(f"--out '{out}': cannot write its part file ({error.strerror or error})") from None
        if rows is None:
            return None
        write(out, rows)
        remove_parts(out)
        _remove_stale_part_locks(out)
        return rows


def _remove_stale_part_locks(out: Path) -> None:
    """Lock files that killed processes left on their parts (live processes remove their own)."""
    for lock in out.parent.glob(f"{glob.escape(out.stem)}.part-*-of-*{glob.escape(out.suffix)}.lock"):
        try:
            pid = int(lock.read_text().strip())
            os.kill(pid, 0)
        except PermissionError:  # alive, another user's
            continue
        except (OSError, ValueError):  # no such process (or an unreadable lock): nobody holds it
            lock.unlink(missing_ok=True)
