"""``sdclip embed``: image (and prompt) embeddings as float16 ``.npy`` shards plus Parquet metadata.

The folder layout is ``scoring.embeddings``'s (clip-retrieval's: ``img_emb/``, ``text_emb/``,
``metadata/``), the per-process parts, resume and merge are ``scoring.embed_parts``. Runs under
``accelerate launch`` / ``torchrun`` / ``--processes N`` like ``sdclip score``; ``sdclip score --embeddings
DIR`` then scores prompts against the stored rows without the vision tower, and
``sdclip.scoring.embeddings.load_embeddings(DIR)`` loads them in Python.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from ..errors import SdclipError
from ..models.sources import DEFAULT_MODEL
from ..scoring.embeddings import MANIFEST
from ._common import OutputLock, add_model_options, output_folder, shown, stderr, stdout, whole_number
from ._parts import add_processes_option, relaunch


_positive_int = whole_number(1)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed", help="write CLIP image (and prompt) embeddings: float16 .npy shards + Parquet metadata",
        description="Embed images (and their prompts, with --pairs) into DIR as clip-retrieval does: "
        "img_emb/*.npy, text_emb/*.npy (float16, L2-normalised), metadata/*.parquet (image_path, prompt, shard, "
        "row, error). Resumable; runs on several processes like `sdclip score`.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", nargs="+", metavar="PATH", help="image files and folders (searched recursively)")
    what.add_argument("--webdataset", nargs="+", metavar="TAR", help="WebDataset shards (or folders of them): "
                      "images and their captions, streamed from the tars")
    what.add_argument("--pairs", metavar="FILE", help="CSV image,prompt or JSONL {\"image\", \"prompt\"}: "
                      "embeds the prompts too")
    parser.add_argument("--out", metavar="DIR", required=True, help="the output folder")
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                        help="images per model call (default: 64 on cuda, 4 on cpu)")
    parser.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                        help="image decoding threads per process (default: one per core, at most 32)")
    parser.add_argument("--shard-size", type=_positive_int, default=100_000, metavar="N",
                        help="rows per .npy shard (default 100000)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="keep the rows an interrupted run wrote, embed the rest")
    again.add_argument("--overwrite", action="store_true", help="write a finished folder again")
    add_processes_option(parser)
    add_model_options(parser, default=DEFAULT_MODEL)
    parser.set_defaults(run=run)


def _items(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    from ..scoring.images import find_images
    from .score import read_pairs

    if args.webdataset:
        from ..scoring.webdataset import read_webdataset, tar_paths

        return list(dict.fromkeys(read_webdataset(tar_paths(args.webdataset))))
    if args.pairs is not None:
        return list(dict.fromkeys(read_pairs(args.pairs)))
    return [(str(path), None) for path in dict.fromkeys(find_images(args.images))]


def _key(item: tuple[str, str | None]) -> tuple[str, str | None]:
    return os.path.normcase(os.path.realpath(item[0])), item[1]


def run(args: argparse.Namespace) -> int:
    from ..scoring.embed_parts import embed_in_parts, parts_folder
    from ..scoring.shards import Processes, current_processes, launched_world

    launched = relaunch(args)
    if launched is not None:
        return launched
    folder = output_folder(args.out)
    finished = (folder / MANIFEST).is_file()
    if finished and args.resume:  # a requeued job that had finished: nothing to do
        stdout().print(f"{shown(str(folder))} is complete; nothing to resume")
        return 0
    if finished and not args.overwrite:
        raise SdclipError(f"--out '{folder}': holds finished embeddings ({MANIFEST}); pass --overwrite to write "
                          "them again, or another --out")
    if parts_folder(folder).is_dir() and any(parts_folder(folder).iterdir()) and not (args.resume or args.overwrite):
        raise SdclipError(f"--out '{folder}': parts of an unfinished run are in {parts_folder(folder).name}/; pass "
                          "--resume to finish it (with any number of processes), or --overwrite to start again")
    items = _items(args)
    processes = current_processes() if launched_world() > 1 else Processes()
    if processes.device is not None and args.device is None:
        args.device = processes.device
    scorer = _load(args)

    def plan(done: int, left: int) -> None:
        if args.resume and processes.is_main:
            stderr().print(f"resuming {shown(str(folder))}: {done} images already embedded, {left} to go "
                           f"on {processes.world} process(es)")

    def batches(todo):  # noqa: ANN001, ANN202
        from tqdm import tqdm

        with tqdm(total=len(todo), unit="img", desc="sdclip embed", file=sys.stderr) as progress:
            for batch in _embedded(scorer, todo):
                progress.update(len(batch[0]))
                yield batch

    with OutputLock(folder) if processes.is_main else contextlib.nullcontext():
        manifest = embed_in_parts(folder, items, item_key=_key, batches=batches, dim=scorer.feature_dim,
                                  processes=processes, manifest={"model": str(args.model)}, resume=args.resume,
                                  shard_size=args.shard_size, on_plan=plan)
    if manifest is not None:
        stdout().print(f"{manifest['rows']} rows of {manifest['dim']} float16 in {manifest['shards']} shard(s) "
                       f"in {shown(str(folder))}")
    return 0


def _load(args: argparse.Namespace):  # noqa: ANN202
    from ..scoring.clip_scorer import ClipScorer

    return ClipScorer.from_pretrained(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                                      workers=args.workers, allow_pickle=args.allow_pickle,
                                      local_files_only=True if args.offline else None)


def _embedded(scorer, todo: list):  # noqa: ANN001, ANN202
    """``embed_batches`` over files, or over WebDataset samples decoded chunk by chunk from their tars."""
    import numpy as np

    from ..scoring.embeddings import embed_batches
    from ..scoring.webdataset import decoded_chunks, is_tar_ref

    if not (todo and is_tar_ref(todo[0][0])):
        yield from embed_batches(scorer, todo)
        return
    for offset, images in decoded_chunks([image for image, _ in todo], workers=scorer.workers,
                                         chunk=4 * scorer.batch_size):
        chunk = todo[offset : offset + len(images)]
        good = [k for k, image in enumerate(images) if not isinstance(image, str)]
        image_rows = np.full((len(images), scorer.feature_dim), np.nan, dtype=np.float32)
        text_rows = np.full_like(image_rows, np.nan)
        errors = [image if isinstance(image, str) else "" for image in images]
        done = 0
        for items, image, text, messages in embed_batches(scorer, [(images[k], chunk[k][1]) for k in good]):
            rows = good[done : done + len(items)]
            image_rows[rows] = image
            if text is not None:
                text_rows[rows] = text
            for k, message in zip(rows, messages):
                errors[k] = message
            done += len(items)
        with_text = any(prompt is not None for _, prompt in chunk)
        yield chunk, image_rows, text_rows if with_text else None, errors
