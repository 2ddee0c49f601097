"""The several-metric cases of ``benchmarks/score.py`` (``--case multi`` / ``--case report``).

* ``multi``: ``clip + aesthetic`` on one clip-vit-large-patch14 (random weights, real shapes) through
  ``MultiScorer`` vs ``ClipScorer`` alone on the scoring benchmark's workload (N prompts x 4 512x512 PIL
  images), interleaved repeat by repeat, median; ``RATIO multi_vs_single`` is multi time / single time
  (the issue asks <= 1.1: the aesthetic head rides on the same vision pass).
* ``report``: a 10,000-row, 3-metric score file over 10,000 512x512 JPEG files (made once in ``--work``):
  ``write_report`` with linked images, and with 128 px thumbnails written from scratch; seconds and HTML size.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def multi_vs_single(scorer, images, prompts, *, repeats: int) -> float:
    from sdclip.scoring.aesthetic import AestheticScorer
    from sdclip.scoring.multi import MultiScorer

    generator = torch.Generator().manual_seed(0)
    widths = (scorer.feature_dim, 1024, 128, 64, 16, 1)  # LAION's head on the backbone's width
    head = [(torch.randn(o, i, generator=generator) * 0.03, torch.zeros(o)) for i, o in zip(widths[:-1], widths[1:])]
    multi = MultiScorer({"clip": scorer, "aesthetic": AestheticScorer.on(scorer, head)})
    runs = {"clip alone": lambda: scorer.score(images, prompts), "clip+aesthetic": lambda: multi.score(images, prompts)}
    scorer.score(images[:4], prompts[:4])  # warm-up: one batch each
    multi.score(images[:4], prompts[:4])
    times: dict[str, list[float]] = {name: [] for name in runs}
    results = {}
    for repeat in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - start)
            print(f"  repeat {repeat + 1}/{repeats} {name}: {times[name][-1]:.2f} s", flush=True)
    difference = (results["clip+aesthetic"]["clip"] - results["clip alone"]).abs().max().item()
    print(f"check: clip column of the multi run vs clip alone, max |difference| {difference:.2e}")
    for name, ts in times.items():
        print(f"{name:<16} median {statistics.median(ts):.2f} s  ({len(images) / statistics.median(ts):.2f} images/s)")
    pairs = [m / c for m, c in zip(times["clip+aesthetic"], times["clip alone"])]
    print("per-repeat ratios (multi / single, neighbours in time): " + ", ".join(f"{r:.2f}" for r in pairs)
          + f"; median {statistics.median(pairs):.3f}")
    ratio = statistics.median(times["clip+aesthetic"]) / statistics.median(times["clip alone"])
    print(f"RATIO multi_vs_single {ratio:.3f}")
    return ratio


def _files(work: Path, count: int) -> list[str]:
    """``count`` 512x512 JPEG files (q90) in ``work/images``, made once (a seeded smooth scene each)."""
    from PIL import Image

    folder = work / "images"
    names = [f"images/{index // 1000:02d}/{index:05d}.jpg" for index in range(count)]
    if all((work / name).is_file() for name in names[-5:]) and (work / names[0]).is_file():
        return names
    rs = np.random.RandomState(0)
    y, x = np.mgrid[0:512, 0:512] / 512
    for index, name in enumerate(names):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        if not (work / name).is_file():
            base = Image.fromarray(rs.randint(0, 256, (8, 8, 3), dtype=np.uint8)).resize((512, 512), Image.BILINEAR)
            mixed = 0.8 * np.asarray(base, dtype=np.float32) + 0.2 * 255 * np.stack([x, y, 1 - x], -1)
            Image.fromarray(mixed.astype(np.uint8)).save(work / name, quality=90)
    print(f"made {count} files in {folder}")
    return names


def report_case(work: Path, *, rows: int = 10_000, repeats: int = 2) -> None:
    from sdclip.report import write_report
    from sdclip.scoring.ranking import rank_rows
    from sdclip.scoring.score_files import ScoreRow

    work.mkdir(parents=True, exist_ok=True)
    names = _files(work, rows)
    rs = np.random.RandomState(1)
    data = [ScoreRow(name, f"prompt number {index % 100}", a, None, "",
                     (("clip", c), ("aesthetic", a), ("pickscore", p)))
            for index, (name, c, a, p) in enumerate(zip(names, rs.normal(30, 3, rows), rs.normal(5.5, 1, rows),
                                                        rs.normal(21, 0.7, rows)))]
    data = rank_rows(data)
    out = work / "report" / "report.html"
    for label, thumbnails in (("linked images", None), ("128 px thumbnails, from scratch", 128)):
        times = []
        for _ in range(repeats):
            shutil.rmtree(work / "report", ignore_errors=True)
            start = time.perf_counter()
            write_report(data, out, images_root=work, thumbnails=thumbnails)
            times.append(time.perf_counter() - start)
        thumbs = work / "report" / "report_thumbs"
        made = len(list(thumbs.iterdir())) if thumbs.is_dir() else 0
        print(f"report, {rows} rows, {label}: median {statistics.median(times):.2f} s over {repeats} "
              f"(each {', '.join(f'{t:.2f}' for t in times)}), HTML {out.stat().st_size / 1e6:.2f} MB"
              + (f", {made} thumbnails" if thumbnails else ""))
    print(f"cores {os.cpu_count()}" + (f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""))
