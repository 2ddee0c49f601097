"""Shared timing helpers for the benchmark scripts: warm-up, repeats, median, peak memory, machine name."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager


def machine_name(device: str) -> str:
    """The CPU model (from /proc/cpuinfo) or the GPU name, with the core count."""
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def median_seconds(run: Callable[[], object], *, device: str, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of ``run()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: str):
    """Yields a dict whose ``"peak_mib"`` is the peak memory growth during the block: GPU memory
    allocated on CUDA, resident set size sampled every 2 ms on the CPU."""
    import torch

    result = {"peak_mib": 0.0}
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result["peak_mib"] = max(0, max(peak[0], _rss_bytes()) - base) / 2**20
