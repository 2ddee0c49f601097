"""Benchmark: scale-out of ``sdclip score`` and re-scoring from ``sdclip embed`` folders.

Workloads, on a random model in ViT-B/16's shapes (text: 12 x 512, vision: 12 x 768, 224 px in 16 px
patches; no download), with PNG files on disk:

* ``processes``: the same ``sdclip score`` command as 1 process x 2 threads (``OMP_NUM_THREADS=2``)
  and as 2 processes x 1 thread (``torchrun --nproc_per_node 2``, gloo on the CPU). Each run's wall time
  includes process start-up (import, model load); a run over 2 images measures that start-up, and
  images/s are given both raw and with it subtracted. Scaling efficiency = (2x1 images/s) / (1x2 images/s).
* ``embed_rescore``: P prompts against the same N images. Peer: scoring directly
  (``ClipScorer.similarity(files, prompts)``: the vision tower runs over every image, each prompt once);
  sdclip, once embedded: ``load_embeddings`` + one text pass + one matrix product (``cosine_scores``).
  The one-off ``sdclip embed`` time is printed too. On a CPU the direct path is ~1 ViT-B/16 pass per image
  (1,000 images: tens of minutes on 2 cores); ``--direct-sample M`` runs the vision tower on M distinct
  images only: the 1,000 files are those M and byte copies of them in turn, direct scoring is measured on
  the M and extrapolated linearly (text pass once + per-image vision time x N), the embedding folder of all
  N files is built from the M files' rows (a copy's row is its original's), and re-scoring is measured on
  all N rows. Scores from the folder are checked against the direct scores (float16 tolerance).

Usage:
    python benchmarks/scale.py                  # 32 images for processes; 64 prompts x 1000 images
    python benchmarks/scale.py --quick          # 16 images; 64 prompts x 200 images
    python benchmarks/scale.py --skip-processes --direct-sample 64 --repeats 1
        # embed_rescore only at 1000 images, a few minutes: the vision tower runs on 64 distinct images (direct
        # scoring measured on them, extrapolated linearly to 1000); re-scoring runs on all 1000 rows

The last lines are ``RATIO processes <efficiency>`` and ``RATIO embed_rescore <direct s / rescore s>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._harness import machine_name  # noqa: E402

B16_TEXT = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
            "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
            "projection_dim": 512, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}
B16_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "patch_size": 16, "image_size": 224, "hidden_act": "quick_gelu", "projection_dim": 512}


def make_images(folder: Path, count: int) -> list[Path]:
    rs = np.random.RandomState(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        paths.append(folder / f"{index:05d}.png")
        if not paths[-1].exists():
            small = rs.randint(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(small).resize((256, 256), Image.BICUBIC).save(paths[-1], compress_level=1)
    return paths


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def processes(model: Path, work: Path, count: int, repeats: int) -> float:
    images = make_images(work / "images", count)
    base = {**os.environ, "PYTHONPATH": str(ROOT)}
    configs = {"1x2": ([sys.executable, "-m", "sdclip"], {**base, "OMP_NUM_THREADS": "2"}),
               "2x1": ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "sdclip"], {**base, "OMP_NUM_THREADS": "1"})}
    times: dict[str, list[float]] = {name: [] for name in configs}
    startup: dict[str, list[float]] = {name: [] for name in configs}
    for repeat in range(repeats + 1):  # the first round warms the file cache
        for name, (launcher, env) in configs.items():
            for subset, sink in ((images, times), (images[:2], startup)):
                out = work / f"{name}.csv"
                out.unlink(missing_ok=True)
                seconds = timed([*launcher, "score", "--model", str(model), "--images", *map(str, subset),
                                 "--prompt", "a photo", "--out", str(out), "--batch-size", "4"], env)
                if repeat:
                    sink[name].append(seconds)
    rates = {}
    for name in configs:
        total, start = statistics.median(times[name]), statistics.median(startup[name])
        rates[name] = count / max(total - start, 1e-9)
        print(f"processes {name}: {total:.1f} s for {count} images ({count / total:.2f} img/s with start-up), "
              f"start-up {start:.1f} s, {rates[name]:.2f} img/s without it")
    return rates["2x1"] / rates["1x2"]


def copies(folder: Path, distinct: list[Path], count: int) -> list[Path]:
    """``count`` image files in ``folder``: the ``distinct`` ones, then byte copies of them in turn."""
    paths = list(distinct[:count])
    for index in range(len(paths), count):
        paths.append(folder / f"{index:05d}.png")
        if not paths[-1].exists():
            shutil.copyfile(distinct[index % len(distinct)], paths[-1])
    return paths


def tiled_folder(sample: Path, out: Path, images: list[Path], model: Path) -> None:
    """The embedding folder of ``images`` (copies of the sample's files in turn) from the sample's rows.

    File k has the bytes of sample file k % M, so its row is that file's row: the folder is what
    ``sdclip embed`` writes for all of them, without running the vision tower on each copy again.
    """
    from sdclip.scoring.embed_parts import embed_in_parts
    from sdclip.scoring.embeddings import load_embeddings
    from sdclip.scoring.shards import Processes

    rows = load_embeddings(sample).image.astype(np.float32)
    items = [(str(path), None) for path in images]

    def batches(todo):
        for start in range(0, len(todo), 4096):
            chunk = todo[start : start + 4096]
            yield chunk, rows[[(start + k) % len(rows) for k in range(len(chunk))]], None, [""] * len(chunk)

    embed_in_parts(out, items, item_key=tuple, batches=batches, dim=rows.shape[1], processes=Processes(),
                   manifest={"model": str(model)})


def embed_rescore(model: Path, work: Path, count: int, prompts: int, repeats: int, sample: int | None) -> float:
    """Direct scoring vs re-scoring from stored embeddings; with ``sample`` M < N, direct is measured on M
    distinct images and extrapolated to N (the vision tower runs once per image: linear in N), while the
    re-scoring is measured on all N rows (files beyond the M distinct ones are byte copies of them)."""
    import torch

    from sdclip.scoring.clip_scorer import ClipScorer
    from sdclip.scoring.embeddings import cosine_scores, load_embeddings

    torch.set_num_threads(2)
    sample = min(sample or count, count)
    distinct = make_images(work / "images", sample)
    images = copies(work / "images", distinct, count)
    texts = [f"a photo of thing number {k}, highly detailed" for k in range(prompts)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    embedded = work / ("emb" if sample == count else "emb-sample")
    embed_seconds = timed([sys.executable, "-m", "sdclip", "embed", "--model", str(model), "--images",
                           *map(str, distinct), "--out", str(embedded), "--overwrite", "--batch-size", "8"], env)
    if sample < count:
        shutil.rmtree(work / "emb", ignore_errors=True)
        tiled_folder(embedded, work / "emb", images, model)
    scorer = ClipScorer.from_pretrained(model, device="cpu", batch_size=8, cache_size=0)
    scorer.similarity(images[:8], texts[:8])  # warm-up on a few (the full workload is minutes on a CPU)
    direct, text_pass, rescored = [], [], []
    for repeat in range(repeats):
        start = time.perf_counter()
        reference = scorer.similarity(distinct, texts).numpy()
        direct.append(time.perf_counter() - start)
        start = time.perf_counter()
        scorer.text_features(texts)
        text_pass.append(time.perf_counter() - start)
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        stored = load_embeddings(work / "emb")
        scores = cosine_scores(stored.image, scorer.text_features(texts).float().numpy(), pairs=False)
        if repeat:
            rescored.append(time.perf_counter() - start)
    assert stored.images == list(map(str, images)) and scores.shape == (count, prompts)
    error = float(np.abs(scores - reference[np.arange(count) % sample]).max())
    measured, text, r = statistics.median(direct), statistics.median(text_pass), statistics.median(rescored)
    d = text + (measured - text) * count / sample  # the text pass once, the vision tower per image
    how = "measured" if sample == count else (f"extrapolated from {measured:.2f} s measured on {sample} distinct "
                                              f"images (text pass {text:.2f} s, then {(measured - text) / sample:.3f}"
                                              " s per image)")
    print(f"embed_rescore: {prompts} prompts x {count} images: direct {d:.2f} s ({how}), from embeddings {r:.3f} s "
          f"measured on {count} rows (max |score difference| {error:.3f}, float16 rows); one-off sdclip embed of "
          f"{sample} images {embed_seconds:.1f} s")
    return d / r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=None, help="images of embed_rescore (default 1000, quick 200)")
    parser.add_argument("--skip-processes", action="store_true", help="only the embed_rescore workload")
    parser.add_argument("--direct-sample", type=int, default=None, metavar="M",
                        help="embed_rescore: run the vision tower on M distinct images only (direct scoring "
                        "measured on them and extrapolated to --images; the other files are copies of them, "
                        "re-scored for real). Default: every image, measured")
    options = parser.parse_args()
    from sdclip.testing import random_clip_model, save_clip_folder

    work = Path(tempfile.mkdtemp(prefix="sdclip-scale-"))
    model = save_clip_folder(random_clip_model(B16_TEXT, B16_VISION), work / "b16")
    print(f"machine: {machine_name('cpu')}; model: random ViT-B/16 shapes, fp32 on the CPU")
    efficiency = None if options.skip_processes else processes(model, work / "p", 16 if options.quick else 32,
                                                               options.repeats)
    ratio = embed_rescore(model, work / "e", options.images or (200 if options.quick else 1000), 64, options.repeats,
                          options.direct_sample)
    if efficiency is not None:
        print(f"RATIO processes {efficiency:.2f}")
    print(f"RATIO embed_rescore {ratio:.1f}")


if __name__ == "__main__":
    main()
