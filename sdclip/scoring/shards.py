"""Which share of a job this process does: rank and world size from the launcher, contiguous shards, part names.

The launcher (``accelerate launch``, ``torchrun``, SLURM through either) starts the processes and sets
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; ``current_processes`` reads them through accelerate's
``PartialState`` (gloo on CPU-only machines, nccl on GPUs) and gives each process its device. Work is
split by input position, never by arrival order: process ``r`` of ``w`` takes the contiguous slice
``shard_range(n, r, w)`` of the sorted inputs, so a rerun, a resume and a single-process run all agree on
who does what. There is no padding: accelerate's ``apply_padding`` would score the last items twice.

Each process writes its own part file next to the output (``part_path``: ``scores.part-00003-of-00008.csv``); the main process merges them
(``parts.merge_parts``) once every process has passed the final barrier.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path



@dataclass(frozen=True)
class Processes:
    """This process's place in a launched job.

    Attributes:
        rank: 0 .. world - 1 (the global process index across machines).
        world: how many processes share the job (1 when not launched).
        device: the device this process should use (``cuda:<local rank>`` on GPUs), or None when not launched.

    Example:
        >>> single = Processes()
        >>> single.rank, single.world, single.is_main
        (0, 1, True)
        >>> single.barrier()  # nothing to wait for
    """

    rank: int = 0
    world: int = 1
    device: str | None = None
    _barrier: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        """True on the process that merges the parts (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process of the job gets here (no-op for one process)."""
        if self._barrier is not None and self.world > 1:
            self._barrier()


def launched_world() -> int:
    """The world size the launcher set in the environment (``WORLD_SIZE``), 1 when not launched.

    Example:
        >>> import os
        >>> launched_world() if "WORLD_SIZE" not in os.environ else 1
        1
    """
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def current_processes() -> Processes:
    """Rank, world size and device of this process, from the launcher's environment through accelerate.

    One process (no ``WORLD_SIZE`` > 1 in the environment) needs no process group: ``Processes()``.
    Under a launcher, accelerate's ``PartialState`` joins the group (``cpu=True`` where there is no
    CUDA: otherwise every process would think it is rank 0 of 1).

    Example:
        >>> current_processes().world if launched_world() == 1 else 1
        1
    """
    if launched_world() == 1:
        return Processes()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    device = str(state.device) if state.device.type == "cuda" else "cpu"
    return Processes(state.process_index, state.num_processes, device, state.wait_for_everyone)


def shard_range(total: int, rank: int, world: int) -> range:
    """The contiguous slice of ``total`` sorted items process ``rank`` of ``world`` takes (sizes differ by <= 1).

    Every item is in exactly one shard; a shard may be empty when there are fewer items than processes.

    Example:
        >>> [list(shard_range(5, r, 2)) for r in range(2)]
        [[0, 1], [2, 3, 4]]
        >>> [len(shard_range(2, r, 4)) for r in range(4)]
        [0, 1, 0, 1]
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world {world}: expected 0 <= rank < world")
    return range(total * rank // world, total * (rank + 1) // world)


def part_path(out: str | os.PathLike, rank: int, world: int) -> Path:
    """Where process ``rank`` of ``world`` writes its part of ``out`` (same format, so it reads as ``out`` does).

    Example:
        >>> part_path("runs/scores.csv", 3, 8).name
        'scores.part-00003-of-00008.csv'
    """
    out = Path(out)
    return out.with_name(f"{out.stem}.part-{rank:05d}-of-{world:05d}{out.suffix}")


def existing_parts(out: str | os.PathLike) -> list[Path]:
    """The part files of ``out`` on disk, of any world size, sorted by (world, rank).

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
        >>> for rank in (1, 0):
        ...     _ = part_path(out, rank, 2).write_text("")
        >>> [path.name for path in existing_parts(out)]
        ['s.part-00000-of-00002.csv', 's.part-00001-of-00002.csv']
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    pattern = re.compile(re.escape(out.stem) + r"\.part-(\d{5})-of-(\d{5})" + re.escape(out.suffix))
    found = []
    for path in out.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(2)), int(match.group(1)), path))
    return [path for _, _, path in sorted(found)]
