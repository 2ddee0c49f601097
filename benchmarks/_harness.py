"""Shared timing helpers for the benchmark scripts: warm-up, repeats, median, peak memory, machine name."""

from __future__ import annotations

import os
import platform
import random
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager


WORDS = ("portrait landscape castle forest dragon neon city rain cat dog astronaut ocean sunset "
         "painting photo cinematic lighting detailed intricate golden hour mountain river snow robot "
         "flower garden night stars watercolor oil sketch fantasy medieval futuristic").split()  # fmt: skip


NEGATIVE = "lowres, blurry, bad anatomy, watermark, jpeg artifacts"  # the shared negative of the workloads


def make_prompt(rng: random.Random) -> str:
    """A prompt of 3 to 8 comma-separated phrases of 2 to 4 words, like a generation request's."""
    return ", ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))) for _ in range(rng.randint(3, 8)))


def realistic_requests(rng: random.Random, n_requests: int) -> list[str]:
    """``n_requests`` generation requests' prompts, a quarter of them repeats of others, shuffled."""
    unique = [make_prompt(rng) for _ in range(n_requests * 3 // 4)]
    requests = unique + [rng.choice(unique) for _ in range(n_requests - len(unique))]
    rng.shuffle(requests)
    return requests


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


def interleaved_medians(
    runs: dict[str, Callable[[], object]], *, device: str, warmup: int = 1, repeats: int = 3
) -> dict[str, float]:
    """Median wall time of each of ``runs``, timed in turns (a, b, a, b, ...) after ``warmup`` rounds,
    so that a change in machine load hits every contender alike."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def compare_batch(
    ours: Callable[[], object], theirs: Callable[[], object], *, batch: int, device: str, repeats: int
) -> float:
    """Time sdclip (``ours``) and diffusers (``theirs``) encoding one batch in turns, measure one more
    call of each for peak memory, print the (a) line and return the speed ratio (theirs / ours time)."""
    medians = interleaved_medians({"sdclip": ours, "diffusers": theirs}, device=device, repeats=repeats)
    with peak_memory(device) as ours_mem:
        ours()
    with peak_memory(device) as theirs_mem:
        theirs()
    ours_s, theirs_s = medians["sdclip"], medians["diffusers"]
    print(f"(a) batch {batch:>2}: sdclip {batch / ours_s:8.2f} prompts/s (peak +{ours_mem['peak_mib']:.0f} MiB), "
          f"diffusers {batch / theirs_s:8.2f} prompts/s (peak +{theirs_mem['peak_mib']:.0f} MiB)")
    return theirs_s / ours_s


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


def encoder_benchmark_args(doc: str):  # noqa: ANN201
    """The options of the two-encoder conditioning benchmarks (SDXL, SD3), parsed; ``args.torch_dtype`` added."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--quick", action="store_true", help="one timed run, 16 requests (minutes on a CPU)")
    parser.add_argument("--tiny", action="store_true", help="tiny test encoders instead of the real shapes (smoke run)")
    args = parser.parse_args()
    args.torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    return args


POOLED_NAMES = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


def worst_difference(ours, theirs) -> float:  # noqa: ANN001
    """Largest |sdclip - diffusers| over the four tensors ``encode_prompt`` returns (SDXL / SD3 order)."""
    return max((getattr(ours, name) - tensor).abs().max().item() for name, tensor in zip(POOLED_NAMES, theirs, strict=True))


def compare_with_diffusers(conditioner: Callable, diffusers_call: Callable, *, device: str, quick: bool,
                           rng: random.Random) -> None:
    """The two-encoder conditioning benchmarks' workloads (SDXL, SD3), sdclip against the pipeline's own
    ``encode_prompt`` (``diffusers_call(prompts, negative=None, n=1)``; ``conditioner(cache_size)`` makes a
    fresh ``TextConditioner``): check that the two agree, then (a) batches of 1 and 8, (b) realistic requests
    (x 4 images, shared negative, 25% repeats) timed request by request interleaved, so both sides see the
    same machine load; prints the RATIO lines."""
    repeats = 1 if quick else 3
    ours, theirs = conditioner(0).encode(["a cat"], NEGATIVE), diffusers_call(["a cat"], NEGATIVE)
    print(f"max abs difference sdclip vs diffusers on 'a cat': {worst_difference(ours, theirs):.2e}")
    ratios = {}
    for batch in (1, 8):
        prompts = [make_prompt(rng) for _ in range(batch)]
        uncached = conditioner(0)
        ratios[f"batch{batch}"] = compare_batch(
            lambda: uncached.encode(prompts), lambda: diffusers_call(prompts), batch=batch, device=device,
            repeats=repeats,
        )

    n_requests = 16 if quick else 64
    requests = realistic_requests(rng, n_requests)

    def timed(run: Callable[[], object]) -> float:
        start = time.perf_counter()
        run()
        synchronize(device)
        return time.perf_counter() - start

    def workload() -> tuple[float, float, float]:
        """(sdclip seconds, diffusers seconds, MiB in sdclip's cache at the end)."""
        cond = conditioner(256)  # a fresh cache each run: the first request pays like everyone else
        ours = theirs = 0.0
        for prompt in requests:
            ours += timed(lambda: cond.encode(prompt, NEGATIVE, num_images_per_prompt=4))
            theirs += timed(lambda: diffusers_call(prompt, NEGATIVE, 4))
        cached = sum(t.nbytes for entry in cond._cache._items.values() for t in entry if hasattr(t, "nbytes"))
        return ours, theirs, cached / 2**20

    runs = [workload() for _ in range(repeats)]
    ours_s = statistics.median(run[0] for run in runs)
    theirs_s = statistics.median(run[1] for run in runs)
    ratios["realistic"] = theirs_s / ours_s
    print(f"(b) {n_requests} requests x 4 images, shared negative, 25% repeats: "
          f"sdclip {n_requests / ours_s:.2f} requests/s (cache holds {runs[0][2]:.0f} MiB at the end), "
          f"diffusers {n_requests / theirs_s:.2f} requests/s")
    for name, value in ratios.items():
        print(f"RATIO {name} {value:.2f}")
