"""Train the demo model that ships as ``sdclip:shapes``, bit for bit, with ``sdclip.training``.

    python scripts/train_demo_model.py                 # writes sdclip/models/_demo/shapes/
    python scripts/train_demo_model.py --check         # retrain in a temporary folder, compare with the shipped file

A small ``CLIPModel`` (the real CLIP tokenizer and 49,408-token vocabulary, tiny towers) is trained from
scratch with ``sdclip.training.train`` on captioned shapes from ``sdclip.datasets.shapes`` (seed 0). Then
the embedding rows of tokens that no caption of the generator can contain are zeroed, so the file
compresses to little, and the weights are stored as float16. Everything is seeded and runs on the CPU
with two threads and deterministic algorithms, so the same versions of torch and transformers on the
same kind of machine write the same bytes (the script prints the file's SHA-256; ``--check`` compares it
with the shipped file). The thread count is part of the recipe: one thread gives other bytes. The run's
figures (time, validation curve, held-out quality) are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# OpenMP threads sleep instead of spinning while they wait: the same numbers, but a busy machine no longer
# slows each step five-fold (measured: 8.3 s -> 1.4 s per step with other work on the two cores). It must be
# set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# glibc's malloc keeps freed memory instead of handing it back and faulting it in again at every step (the
# same numbers; measured: system time halved, 9 % off a step). It reads these when a process starts, so
# main() re-executes the script once with them set.
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296",
                   "MALLOC_TOP_PAD_": "268435456"}  # fmt: skip

SEED = 0
TRAIN_PAIRS = 60_000
VAL_PAIRS = 256
VAL_SEED = 1  # the quality test uses yet another seed (tests/models/test_demo_model.py)
IMAGE_SIZE = 48
THREADS = 2
TEXT = {
    "vocab_size": 49408, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 64,
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1,
}  # fmt: skip
VISION = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 2,
          "patch_size": 8, "image_size": IMAGE_SIZE, "hidden_act": "quick_gelu", "projection_dim": 64}  # fmt: skip
FULL_CAPTION_EVERY = 2  # every 2nd training pair is captioned with every attribute (see pairs())
# each training scene is followed by its twin: the same scene (background, colour, size, place, caption
# template) with its shape's look-alike; group_size=2 keeps the two in one batch (see pairs())
HARD_NEGATIVES = {"circle": "hexagon", "hexagon": "circle", "star": "cross", "cross": "star",
                  "square": "triangle", "triangle": "square"}  # fmt: skip
TRAINING = {"batch_size": 128, "group_size": 2, "max_steps": 2600, "lr": 2e-3, "warmup_steps": 100,
            "weight_decay": 0.1, "eval_every": 400, "seed": SEED, "image_size": IMAGE_SIZE,
            "label_template": "a {}"}  # fmt: skip
# then a second run from the first one's (compacted) weights on fresh pairs, with its own schedule (0 steps: none)
CONTINUE = {"max_steps": 0, "lr": 1e-3, "warmup_steps": 0, "data_seed": 2}
SHIPPED = ROOT / "sdclip" / "models" / "_demo" / "shapes"
MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def pairs(count: int, seed: int, *, full_every: int = 0, twins: bool = False) -> list:
    """``count`` (image, caption) pairs of data set ``seed``; with ``full_every`` = k, every k-th pair's caption
    is the full one (size, colour, shape and position). The generator's templates name the position in only
    two captions of six, and a model trained on them alone confuses left, middle and right in retrieval.

    With ``twins``, each pair is followed by the same scene drawn with its shape's look-alike
    (``HARD_NEGATIVES``: circle and hexagon, star and cross, square and triangle) and the same kind of
    caption, ``2 * count`` pairs in all. Trained with ``group_size=2``, every image then meets, in its own
    batch, a caption and an image that differ from its own in shape alone.

    Each sample is drawn from its own index, so the second half is drawn by a child process while this one
    draws the first (the training's two threads are idle until the data is ready): the same pairs as drawn
    in one process, in about 60 % of the time (12,000: 2.75 s instead of 4.7 s)."""
    import multiprocessing

    if count < 4096:
        return _pairs_between(0, count, seed, full_every, twins)
    half = count // 2
    with multiprocessing.get_context("fork").Pool(1) as pool:  # fork: the child uses no torch threads
        second = pool.apply_async(_pairs_between, (half, count, seed, full_every, twins))
        return _pairs_between(0, half, seed, full_every, twins) + second.get()


def _pairs_between(start: int, stop: int, seed: int, full_every: int, twins: bool) -> list:
    """Samples ``start .. stop - 1`` of ``pairs``."""
    from sdclip.datasets.shapes import full_caption, generate_shapes, shape_sample

    def pair(sample):
        full = full_every and sample.index % full_every == 0
        return sample.image, full_caption(sample.attributes) if full else sample.caption

    out = []
    for sample in generate_shapes(stop - start, seed=seed, start=start, image_size=IMAGE_SIZE):
        out.append(pair(sample))
        if twins:
            changes = {"shape": HARD_NEGATIVES[sample.attributes.shape]}
            out.append(pair(shape_sample(sample.index, seed=seed, image_size=IMAGE_SIZE, changes=changes)))
    return out


def used_token_ids() -> set[int]:
    """Every token id a caption or class prompt of the generator can contain (all attribute values)."""
    from sdclip.datasets.shapes import COLORS, POSITIONS, SHAPES, SIZES, STYLES, TEMPLATES
    from sdclip.models.tokenizer import load_tokenizer

    words = set(" ".join(TEMPLATES).replace("{", " ").replace("}", " ").split())
    words |= set(COLORS) | set(SHAPES) | set(SIZES) | set(POSITIONS) | set(STYLES) | {"on", "the", "in"}
    tokenizer = load_tokenizer()
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    for word in words:
        ids.update(tokenizer(word, add_special_tokens=False).input_ids)
    return ids


def compact(folder: Path) -> None:
    """Zero the embedding rows of tokens the data never uses and store the weights as float16."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    embedding = tensors["text_model.embeddings.token_embedding.weight"]
    keep = torch.zeros(embedding.shape[0], dtype=torch.bool)
    keep[sorted(used_token_ids())] = True
    embedding[~keep] = 0
    save_file({name: t.half().contiguous() for name, t in sorted(tensors.items())}, path, metadata={"format": "pt"})


def train_model(work: Path) -> dict:
    import torch

    from sdclip.datasets.shapes import DEFAULT_COLORS, DEFAULT_SHAPES
    from sdclip.training import train

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    labels = tuple(f"{color} {shape}" for color in DEFAULT_COLORS for shape in DEFAULT_SHAPES)
    wall, cpu = time.perf_counter(), time.process_time()
    val = pairs(VAL_PAIRS, VAL_SEED)
    first = work / "from_scratch" if CONTINUE["max_steps"] else work
    result = train(pairs(TRAIN_PAIRS, SEED, full_every=FULL_CAPTION_EVERY, twins=True), val_data=val, labels=labels,
                   model={"text_config": TEXT, "vision_config": VISION, "projection_dim": TEXT["projection_dim"]},
                   out=first, overwrite=True, **TRAINING)  # fmt: skip
    compact(first)
    steps, samples = result.steps, result.samples
    if CONTINUE["max_steps"]:
        options = {**TRAINING, **{k: v for k, v in CONTINUE.items() if k != "data_seed"}}
        del options["image_size"]  # the model's own
        result = train(pairs(TRAIN_PAIRS, CONTINUE["data_seed"]), val_data=val, labels=labels, model=first,
                       out=work, overwrite=True, **options)  # fmt: skip
        compact(work)
        steps, samples = steps + result.steps, samples + result.samples
    return {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
            "steps": steps, "samples": samples, "val_metrics": result.metrics}  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SHIPPED, help="where the model files go (default: the package)")
    parser.add_argument("--check", action="store_true", help="train in a temporary folder and compare with --out")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the run here (train_log.csv, train_curves.png); default: a temporary folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sdclip-demo-") as tmp:
        work = args.work or Path(tmp) / "run"
        summary = train_model(work)
        digest = sha256(work / "model.safetensors")
        print(json.dumps({**summary, "sha256": digest}, indent=2))
        if args.check:
            shipped = sha256(args.out / "model.safetensors")
            print("identical to the shipped model" if shipped == digest else f"DIFFERENT from {args.out} ({shipped})")
            return 0 if shipped == digest else 1
        args.out.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            shutil.copyfile(work / name, args.out / name)
        print(f"wrote {', '.join(MODEL_FILES)} to {args.out}")
    return 0


if __name__ == "__main__":
    if any(os.environ.get(name) != value for name, value in MALLOC_SETTINGS.items()):
        os.environ.update(MALLOC_SETTINGS)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    sys.exit(main())
