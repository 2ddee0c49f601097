"""``sdclip score --embeddings DIR``: scores from stored image embeddings (``scoring.embeddings.rescore``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import SdclipError
from ..scoring.score_files import ScoreRow
from ._common import OutputLock, same_file, stderr


def score_embeddings(args: argparse.Namespace, out: Path | None, *, read_pairs: Callable, write_ranked: Callable,
                     print_rows: Callable, finish: Callable) -> int:
    """Score ``--prompt`` / ``--pairs`` against the rows of ``--embeddings``; write and summarise with ``score``'s
    own functions (passed in, so this module does not import ``score``)."""
    from ..scoring.clip_scorer import ClipScorer
    from ..scoring.embeddings import load_embeddings, rescore
    from ..scoring.images import find_images

    if args.resume:
        raise SdclipError("--resume: not used with --embeddings (scoring stored embeddings takes seconds); "
                          "pass --overwrite to replace --out")
    embeddings = load_embeddings(args.embeddings)
    if getattr(args, "webdataset", None):
        from ..scoring.webdataset import read_webdataset, tar_paths

        pairs = list(dict.fromkeys(read_webdataset(tar_paths(args.webdataset))))
    elif args.pairs is not None:
        if args.images:
            raise SdclipError("--images: use --images with --prompt, or --pairs alone (the pairs file names the images)")
        pairs = list(dict.fromkeys(read_pairs(args.pairs)))
    elif args.images:
        pairs = [(str(path), args.prompt) for path in find_images(args.images)]
    else:
        pairs = [(image, args.prompt) for image in dict.fromkeys(embeddings.images)]
    if out is not None:
        same_file(out, [args.pairs] if args.pairs else [], what="--pairs file")
        if out.is_file() and out.stat().st_size > 0 and not args.overwrite:
            raise SdclipError(f"--out '{out}': exists and is not empty; pass --overwrite to replace it")
    scorer = ClipScorer.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                        allow_pickle=args.allow_pickle, local_files_only=True if args.offline else None)
    if scorer.feature_dim != embeddings.image.shape[1]:
        raise SdclipError(f"--embeddings '{args.embeddings}': rows are {embeddings.image.shape[1]} wide but --model "
                          f"'{args.model}' gives {scorer.feature_dim}; expected the model that embedded them "
                          f"({embeddings.manifest.get('model')})")

    def text(prompts: list[str]):  # noqa: ANN202
        return scorer.text_features(prompts, normalize=True).float().cpu().numpy()

    key = lambda image: os.path.normcase(os.path.realpath(image))  # noqa: E731
    rows = [ScoreRow(image, prompt, value, None, error) for image, prompt, value, error in rescore(embeddings, pairs, text, key=key)]
    stderr().print(f"scored {len(rows)} pairs from {len(embeddings)} stored embeddings")
    if out is None:
        print_rows(rows)
        return finish(args, rows, None)
    with OutputLock(out):
        rows = write_ranked(out, rows)
    return finish(args, rows, out)
