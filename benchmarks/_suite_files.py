"""GPU suite, section 3: scoring from files on local disk, as ``sdclip score`` does it.

Writes N generated 512x512 images (half JPEG at quality 90, half PNG; colour blobs over a gradient with
mild noise, so they compress like generated images: ~45 KB and ~440 KB) into a temporary folder with
a process per core (forked; Pillow's encoders hold the GIL), measures what the CPU can decode (Pillow,
a thread per core: decode only, and decode + the exact path's resize), then scores every file with
``ClipScorer`` in four configurations and runs the ``sdclip score`` command twice (its defaults, and
the fast options). Each throughput is set against the vision tower's alone (section 2, same dtype and
batch), and the bottleneck is named.
"""

from __future__ import annotations

import csv
import functools
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _harness import synchronize

PROMPT = "a photo of a cat sitting on a windowsill, golden hour"


@functools.cache
def _backdrop(size: int) -> np.ndarray:
    """(size, size, 3) float32: a colour gradient plus seeded noise of sigma 4, shared by every image."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    noise = np.random.RandomState(0).normal(0, 4, (size, size, 3)).astype(np.float32)
    return 0.3 * 255 * np.stack([x, y, 1 - x], -1) + noise


def write_image(folder: Path, index: int, size: int) -> Path:
    """One seeded image: upscaled 8x8 colour blobs over the backdrop (rolled); even index JPEG, odd PNG."""
    rs = np.random.RandomState(index)
    blobs = Image.fromarray(rs.randint(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    mixed = 0.7 * np.asarray(blobs, np.float32) + np.roll(_backdrop(size), 37 * index, axis=(0, 1))
    image = Image.fromarray(mixed.clip(0, 255).astype(np.uint8))
    path = folder / f"img{index:04d}.{'jpg' if index % 2 == 0 else 'png'}"
    image.save(path, quality=90) if path.suffix == ".jpg" else image.save(path)
    return path


def _write_chunk(job: tuple[Path, list[int], int]) -> list[Path]:
    folder, indices, size = job
    return [write_image(folder, index, size) for index in indices]


def write_images(folder: Path, count: int, size: int, workers: int) -> list[Path]:
    """``count`` images in ``folder``, written by ``workers`` forked processes (fork: nothing re-imported)."""
    jobs = [(folder, list(range(start, count, workers)), size) for start in range(min(workers, count))]
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("fork")) as pool:
        return sorted(path for chunk in pool.map(_write_chunk, jobs) for path in chunk)


def decode_rate(paths: list[Path], workers: int, *, resize: int | None = None) -> float:
    """Images/s Pillow decodes (and, with ``resize``, shrinks to that shortest side, bicubic) with a thread pool."""

    def work(path: Path) -> int:
        image = Image.open(path).convert("RGB")
        if resize:
            scale = resize / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        return np.asarray(image).shape[0]

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, paths))
    return len(paths) / (time.perf_counter() - start)


def run(suite) -> None:
    """Section 3; the files stay in ``suite.state["tmp"]`` (the caller removes it) for the profiles."""
    plan = suite.plan
    folder = Path(tempfile.mkdtemp(prefix="sdclip-suite-"))
    suite.state["tmp"] = folder
    suite.case("files", "generate", lambda: _generate(suite, folder))
    suite.case("files", "cpu-decode", lambda: _capacity(suite))
    last = plan.dtypes[-1]
    variants = [("auto", plan.dtypes[0], min(plan.vision_batches), False),  # sdclip score's defaults
                ("fast", plan.dtypes[0], min(plan.vision_batches), False),
                ("fast", last, max(plan.vision_batches), False),
                ("fast", last, max(plan.vision_batches), True)]  # fmt: skip
    for variant in variants:
        name = f"scorer-{variant[0]}-{variant[1]}-batch{variant[2]}" + ("-gpu-decode" if variant[3] else "")
        suite.case("files", name, lambda: _scorer(suite, *variant))
    suite.case("files", "cli-defaults", lambda: _cli(suite, folder, fast=False))
    suite.case("files", "cli-fast", lambda: _cli(suite, folder, fast=True))


def _generate(suite, folder: Path) -> dict:
    plan = suite.plan
    images = folder / "images"
    images.mkdir()
    paths = write_images(images, plan.files, plan.image_size, plan.workers)
    suite.state["files"] = paths
    sizes = {suffix: [p.stat().st_size for p in paths if p.suffix == suffix] for suffix in (".jpg", ".png")}
    mean_kb = {suffix: round(sum(v) / len(v) / 1024, 1) for suffix, v in sizes.items() if v}
    return {"files": len(paths), "mean_kb": mean_kb,
            "summary": f"{len(paths)} files {plan.image_size}x{plan.image_size}, mean KB {mean_kb}"}


def _capacity(suite) -> dict:
    plan, paths = suite.plan, suite.state["files"]
    jpegs, pngs = [p for p in paths if p.suffix == ".jpg"], [p for p in paths if p.suffix == ".png"]
    rates = {"decode_all": decode_rate(paths, plan.workers), "decode_jpeg": decode_rate(jpegs, plan.workers),
             "decode_png": decode_rate(pngs, plan.workers),
             "decode_resize_all": decode_rate(paths, plan.workers, resize=224 if not plan.dry_run else 64)}
    suite.state["cpu_rates"] = rates
    return {**{f"{k}_per_s": round(v, 1) for k, v in rates.items()}, "workers": plan.workers,
            "summary": f"{plan.workers} threads, images/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())}


def _bottleneck(e2e: float, model: float | None, cpu: float | None, workers: int) -> str:
    if model and e2e >= 0.9 * model:
        return "the vision tower: the GPU is the limit"
    if cpu and cpu <= 1.15 * e2e:
        return f"CPU decoding: {workers} threads decode {cpu:.0f} images/s of these files"
    return "the feeding pipeline (per-batch host work, copies), neither the decoders' capacity nor the model; see the profile"


def _scorer(suite, preprocessing: str, dtype: str, batch: int, gpu_decode: bool) -> dict:
    from sdclip import ClipScorer, load_tokenizer

    plan, paths = suite.plan, suite.state["files"]
    scorer = ClipScorer(suite.state["clip"][dtype], load_tokenizer(), batch_size=batch, preprocessing=preprocessing,
                        workers=plan.workers, gpu_decode=gpu_decode)  # fmt: skip
    scorer.score(paths[: 2 * batch], PROMPT)  # warm-up: kernels, worker threads, pinned memory
    synchronize(plan.device)
    start = time.perf_counter()
    scores = scorer.score(paths, PROMPT)
    synchronize(plan.device)
    per_s = len(paths) / (time.perf_counter() - start)
    model = suite.state.get("vision_ips", {}).get((dtype, batch))
    rates = suite.state.get("cpu_rates", {})
    png_share = sum(p.suffix == ".png" for p in paths) / len(paths)
    cpu = {"auto": rates.get("decode_resize_all"), "fast": rates.get("decode_all")}[preprocessing]
    if gpu_decode and scorer.gpu_decode and rates.get("decode_png"):
        cpu = rates["decode_png"] / max(png_share, 1e-9)  # only the PNGs are decoded on the CPU
    result = {"images_per_s": round(per_s, 1), "share_of_model": per_s / model if model else None,
              "gpu_decode_active": scorer.gpu_decode, "bottleneck": _bottleneck(per_s, model, cpu, plan.workers)}
    reference = suite.state.setdefault("file_scores", {})
    key = (preprocessing, dtype, batch)
    if key in reference:  # against the same dtype's CPU-decoded run: what the decoder changes
        result["max_score_diff_vs_cpu_decode"] = (scores - reference[key]).abs().max().item()
    elif not gpu_decode:
        reference[key] = scores
    if gpu_decode or (preprocessing == "fast" and batch == max(plan.vision_batches)):
        suite.ratio(f"files_{preprocessing}_{dtype}_batch{batch}{'_gpu_decode' if gpu_decode else ''}_share_of_model",
                    result["share_of_model"], target="files_share_of_model" if gpu_decode else None)
    share = f", {100 * result['share_of_model']:.0f}% of the model alone" if model else ""
    result["summary"] = (f"{per_s:.0f} images/s{share}; gpu decode {'on' if scorer.gpu_decode else 'off'}; "
                         f"bottleneck: {result['bottleneck']}")
    return result


def _cli(suite, folder: Path, *, fast: bool) -> dict:
    """``sdclip score`` (in this process: ``sdclip.cli.main``), model loaded from disk, on a few files and
    then on all: the difference of the two wall times is the scoring alone (loading and start-up cancel)."""
    from sdclip.cli import main
    from sdclip.testing import save_clip_folder

    plan, paths = suite.plan, suite.state["files"]
    model_folder = folder / "model"
    if not model_folder.exists():
        save_clip_folder(suite.state["clip"][plan.dtypes[0]], model_folder)
    dtype, batch = (plan.dtypes[-1], max(plan.vision_batches)) if fast else (plan.dtypes[0], min(plan.vision_batches))
    options = ["--prompt", PROMPT, "--model", str(model_folder), "--device", plan.device, "--offline"]
    if fast:
        options += ["--dtype", dtype, "--batch-size", str(batch), "--preprocessing", "fast", "--gpu-decode",
                    "--workers", str(plan.workers)]
    elif plan.dry_run:
        options += ["--dtype", dtype, "--batch-size", str(batch)]  # the CUDA defaults, on the CPU
    few = paths[: min(len(paths) // 2, 2 * batch)]
    walls, rows = [], []
    for name, images in (("few", [str(p) for p in few]), ("all", [str(paths[0].parent)])):
        out = folder / f"scores-{'fast' if fast else 'defaults'}-{name}.csv"
        start = time.perf_counter()
        code = main(["score", "--images", *images, "--out", str(out), *options])
        walls.append(time.perf_counter() - start)
        _free_cuda()
        if code != 0:
            raise RuntimeError(f"sdclip score exited with {code} ({name} files)")
        with out.open(newline="") as file:
            rows = list(csv.DictReader(file))
    failed = sum(1 for row in rows if row["error"] or not row["score"])
    # too few files (the dry run) leave the difference in the noise: then there is no figure
    per_s = (len(paths) - len(few)) / (walls[1] - walls[0]) if walls[1] > 1.05 * walls[0] else None
    model = suite.state.get("vision_ips", {}).get((dtype, batch))
    result = {"rows": len(rows), "failed_rows": failed, "few": len(few), "wall_s_few": round(walls[0], 2),
              "wall_s_all": round(walls[1], 2), "images_per_s_with_load": round(len(paths) / walls[1], 1),
              "images_per_s": per_s and round(per_s, 1), "share_of_model": per_s / model if model and per_s else None,
              "options": options}  # fmt: skip
    if len(rows) != len(paths) or failed:
        result["status"] = "check_failed"
    if fast:
        suite.ratio("files_cli_fast_share_of_model", result["share_of_model"], target="files_share_of_model")
    share = f", {100 * per_s / model:.0f}% of the model alone" if model and per_s else ""
    alone = f"{per_s:.0f} images/s{share}" if per_s else "not measurable (all files took no longer than a few)"
    result["summary"] = f"{len(rows)} rows ({failed} failed); {walls[1]:.1f} s wall with loading; scoring alone {alone}"
    return result


def _free_cuda() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
