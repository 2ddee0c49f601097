"""``sdclip score``: CLIP-score images against prompts, rank best-of-N, write CSV/JSONL as it goes.

Parse, call the scorer, print: ranking lives in ``scoring.ranking``, the file format in
``scoring.score_files``, output safety in ``cli._common``.

Rows are written and flushed batch by batch with an empty ``rank``; ranks need a prompt's whole group,
so when every image is scored the file is rewritten once (atomically) with ranks filled in. An
interrupted file therefore has scores but no ranks; ``--resume`` drops unfinished and failed rows
(and a half-written last line), skips the (image, prompt) pairs already scored, appends the rest, and
ranks everything at the end. No pair is ever written twice.

Safety: ``--out`` is locked (``<out>.lock``) while a run writes it; an output that is one of the inputs
is refused; a non-empty ``--out`` is refused without ``--resume`` or ``--overwrite``, before the model
loads; ``--overwrite`` writes a temporary file and replaces ``--out`` only when the run succeeds.
Resume compares images by their resolved path (``./a.png`` and ``/abs/a.png`` are one image) and writes
them as given. A relative path in ``--out`` resolves against the working directory, or, where it names no
file from there but does from ``--out``'s folder, against that folder (so a resume from another working
directory finds the rows the first run wrote); a row that matches neither but looks like an image to
score is refused rather than scored twice.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path

from ..errors import SdclipError
from ..models.sources import DEFAULT_MODEL
from ..prompts.lists import has_lone_surrogate
from ..scoring.ranking import rank_rows
from ..scoring.score_files import COLUMNS, ENCODING, SUFFIXES, ScoreRow, read_resume_rows, write_rows
from ._rows import row_batches
from ._parts import add_processes_option, processes_for, relaunch, run_sharded
from ._common import (OutputLock, add_model_options, atomic_write, output_path, prompt_text, same_file, shown,
                      stderr, stdout, whole_number, write_failed)
from ._score_metrics import (MetricPlan, add_metric_options, batch_rows, load_multi, metric_plan,
                             print_metric_summary, resumed_row, write_report_option)


_positive_int = whole_number(1)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="CLIP-score images against prompts and rank each prompt's images",
        description="Score images against prompts (100 * cosine, as torchmetrics' CLIPScore), rank the images "
        "of each prompt (1 = best), and summarise the run. Rows are written batch by batch; ranks are filled in "
        "when the run completes.")
    parser.add_argument("--images", nargs="+", metavar="PATH",
                        help="image files and folders (folders searched recursively for .png .jpg .jpeg .webp .bmp)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", metavar="TEXT", type=prompt_text, help="score every image against this prompt")
    what.add_argument("--pairs", metavar="FILE",
                      help="CSV with columns image,prompt or JSONL of {\"image\", \"prompt\"}; "
                      "image paths relative to the file")
    what.add_argument("--webdataset", nargs="+", metavar="TAR",
                      help="WebDataset shards (img2dataset's {key}.jpg + {key}.txt/.json) or folders of them: "
                      "each image is scored against its caption, streamed from the tar")
    parser.add_argument("--out", metavar="FILE", help=".csv or .jsonl (default: a table on stdout)")
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                        help="images per model call (default: 64 on cuda, 4 on cpu)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="keep the pairs already scored in --out, score the rest and append")
    again.add_argument("--overwrite", action="store_true",
                       help="replace a non-empty --out (written to a temporary file, swapped in on success)")
    parser.add_argument("--exif-transpose", action="store_true",
                        help="turn images upright by their EXIF orientation first (default: as PIL opens them, "
                        "like CLIPImageProcessor)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any image could not be scored")
    parser.add_argument("--preprocessing", default="auto", choices=["auto", "exact", "fast"],
                        help="exact: CLIPImageProcessor's PIL resize on the CPU (auto for files); "
                        "fast: decode on the CPU, resize batched on the device")
    parser.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                        help="image decoding threads (default: one per core, at most 32)")
    parser.add_argument("--gpu-decode", action="store_true",
                        help="with --preprocessing fast on cuda: decode JPEG files on the GPU (nvjpeg, needs "
                        "torchvision: pip install 'sdclip[gpu]'); ignored where it cannot run")
    add_processes_option(parser)
    parser.add_argument("--embeddings", metavar="DIR", help="score from a folder `sdclip embed` wrote (no vision tower: "
                        "one text pass and a matrix product); with --prompt, every image in it (or those of --images)")
    add_model_options(parser, default=DEFAULT_MODEL)
    add_metric_options(parser)
    parser.set_defaults(run=run)


# -- input ----------------------------------------------------------------------------------------


def read_pairs(value: str) -> list[tuple[str, str]]:
    """(image path, prompt) rows of a pairs file; relative image paths are taken relative to the file's folder.

    Absolute paths and ``..`` are allowed: the pairs file names the images to read (sdclip only reads them).
    """
    path = Path(value)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise SdclipError(f"--pairs '{value}': expected a .csv or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as error:
        raise SdclipError(f"--pairs '{value}': no such file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise SdclipError(f"--pairs '{value}': cannot be read ({error})") from error
    rows = _csv_pairs(value, text) if suffix == ".csv" else _jsonl_pairs(value, text)
    if not rows:
        raise SdclipError(f"--pairs '{value}': no rows; expected at least one (image, prompt) pair")
    return [(image if os.path.isabs(image) else str(path.parent / image), prompt) for image, prompt in rows]


def _csv_pairs(name: str, text: str) -> list[tuple[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    for column in ("image", "prompt"):
        if column not in fields:
            found = ", ".join(fields) if fields else "no header"
            raise SdclipError(f"--pairs '{name}': no '{column}' column (found: {found}); "
                              "expected a header row with image,prompt")
    rows = []
    for row in reader:
        if not row.get("image"):
            raise SdclipError(f"--pairs '{name}' line {reader.line_num}: empty image path")
        rows.append((row["image"], row.get("prompt") or ""))
    return rows


def _jsonl_pairs(name: str, text: str) -> list[tuple[str, str]]:
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # "\n" only: U+2028 may sit inside a string
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise SdclipError(f"--pairs '{name}' line {number}: not valid JSON ({error.msg})") from error
        for key in ("image", "prompt"):
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                raise SdclipError(f"--pairs '{name}' line {number}: no string '{key}' "
                                  '(expected {"image": "...", "prompt": "..."})')
        if has_lone_surrogate(item["prompt"]):
            raise SdclipError(f"--pairs '{name}' line {number}: the prompt holds a lone surrogate escape "
                              "(\\ud800-\\udfff); expected UTF-8 text")
        rows.append((item["image"], item["prompt"]))
    return rows


# -- run ------------------------------------------------------------------------------------------


def _pairs_from_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    from ..scoring.images import find_images

    if getattr(args, "webdataset", None):
        from ..scoring.webdataset import read_webdataset, tar_paths

        pairs = read_webdataset(tar_paths(args.webdataset))
        if not pairs:
            raise SdclipError(f"--webdataset: no images in {', '.join(args.webdataset)}; expected img2dataset shards")
    elif args.pairs is not None:
        if args.images:
            raise SdclipError("--images: use --images with --prompt, or --pairs alone (the pairs file names the images)")
        pairs = read_pairs(args.pairs)
    else:
        if not args.images:
            raise SdclipError("--images: required with --prompt (image files or folders)")
        pairs = [(str(path), args.prompt) for path in find_images(args.images)]
    return list(dict.fromkeys(pairs))  # the same (image, prompt) twice is scored once


def _load_scorer(args: argparse.Namespace):  # noqa: ANN202
    import inspect

    from ..scoring.clip_scorer import ClipScorer

    options = {}
    if args.exif_transpose:
        if "exif_transpose" not in inspect.signature(ClipScorer.from_pretrained).parameters:
            raise SdclipError("--exif-transpose: this sdclip's scorer has no exif_transpose option; upgrade sdclip")
        options["exif_transpose"] = True
    return ClipScorer.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
        preprocessing=args.preprocessing, allow_pickle=args.allow_pickle,
        workers=args.workers, gpu_decode=args.gpu_decode,
        local_files_only=True if args.offline else None, **options,
    )


def _key(image: str, prompt: str) -> tuple[str, str]:
    """What makes two rows the same pair: the image's resolved path and the prompt."""
    return os.path.normcase(os.path.realpath(image)), prompt


def _row_image(image: str, out: Path) -> str:
    """Where a relative image path in ``--out`` points: from here, else from ``--out``'s folder.

    A score file's relative paths are relative to the folder its first run started in, which is most often
    the folder ``--out`` is in (``plot-scores`` looks in the same two places). The ``--out`` folder is used
    only when it is unambiguous: the path does not exist from here and does from there. Otherwise the
    path stays as it is and ``_check_same_folder`` refuses where it would score an image twice.
    """
    if os.path.isabs(image) or os.path.exists(image):
        return image
    beside = os.path.join(out.parent, image)
    return beside if os.path.exists(beside) else image


def _check_same_folder(out: Path, done: list[ScoreRow], pairs: list[tuple[str, str]]) -> None:
    """Refuse a resume from another working directory that would score images of ``done`` again.

    Relative paths in ``--out`` are relative to the folder the first run started in. A row whose relative
    image does not exist from here, while an image to score ends with the same path (and has its prompt),
    is most likely that image: scoring it again would write it twice, so stop and say where to run.
    """
    candidates: dict[tuple[str, str], list[str]] = {}
    for image, prompt in pairs:
        candidates.setdefault((os.path.basename(image), prompt), []).append(image)
    for row in done:
        if os.path.isabs(row.image) or ".tar/" in row.image or os.path.exists(_row_image(row.image, out)):
            continue
        tail = os.sep + os.path.normpath(row.image)
        for image in candidates.get((os.path.basename(row.image), row.prompt), []):
            if os.path.realpath(image).endswith(tail):
                raise SdclipError(f"--out '{out}': its row for '{shown(row.image)}' is relative to the folder the "
                                  f"first run started in, not this one (here it matches '{shown(image)}'); run "
                                  "--resume from that folder so no image is scored twice")


def run(args: argparse.Namespace) -> int:
    if args.resume and not args.out:
        raise SdclipError("--resume: needs --out (the file to resume)")
    if args.overwrite and not args.out:
        raise SdclipError("--overwrite: needs --out (the file to replace)")
    out = output_path(args.out, suffixes=SUFFIXES) if args.out else None
    plan = metric_plan(args)
    if getattr(args, "report", None):
        output_path(args.report, suffixes=(".html", ".htm"), option="--report")
    if args.embeddings:
        from ._embedded import score_embeddings

        if plan.multi:
            raise SdclipError("--embeddings: stored embeddings give the clip metric only; drop --metric")
        return score_embeddings(args, out, read_pairs=read_pairs, write_ranked=_write_ranked, print_rows=_print_rows,
                                finish=_finish)
    launched = relaunch(args)  # --processes N: the same command under accelerate launch
    if launched is not None:
        return launched
    pairs = _pairs_from_args(args)
    processes = processes_for(args, out)  # launched, or resuming part files: each process scores its share
    if out is None:
        rows = _score(args, pairs, None, [])
        _print_rows(rows)
        return _finish(args, rows, None)
    same_file(out, [args.pairs] if args.pairs else [], what="--pairs file")
    same_file(out, [image for image, _ in pairs if image.lower().endswith(out.suffix.lower())], what="image")
    if processes is not None:
        scorer = lambda: load_multi(args, plan) if plan.multi else _load_scorer(args)  # noqa: E731
        rows = run_sharded(args, out, pairs, processes, row_batches=lambda todo: row_batches(scorer(), todo, plan),
                           pair_key=lambda pair: _key(*pair), row_key=lambda row: _key(_row_image(row.image, out),
                                                                                       row.prompt),
                           write=lambda path, rows: _write_ranked(path, rows, plan.columns),
                           resumed=lambda row: resumed_row(plan, row), metrics=plan.columns)
        return 0 if rows is None else _finish(args, rank_rows(rows), out)
    with OutputLock(out):
        existing = out.is_file() and out.stat().st_size > 0
        if existing and not (args.resume or args.overwrite):
            raise SdclipError(f"--out '{out}': exists and is not empty; pass --resume to continue it, or "
                              "--overwrite to replace it")
        done: list[ScoreRow] = []
        if existing and args.resume:
            done = list({_key(_row_image(r.image, out), r.prompt): kept for r in read_resume_rows(out, name="--out")
                         if (kept := resumed_row(plan, r)) is not None}.values())  # all asked metrics, no error
            _check_same_folder(out, done, pairs)
            finished = {_key(_row_image(row.image, out), row.prompt) for row in done}
            wanted = {_key(*pair) for pair in pairs}
            pairs = [pair for pair in pairs if _key(*pair) not in finished]
            stderr().print(f"resuming {shown(str(out))}: {len(wanted & finished)} pairs already scored, "
                           f"{len(pairs)} to go")
        if args.overwrite:  # the old file stays until this run succeeds
            rows = _score(args, pairs, None, [], plan)
        else:
            rows = _score(args, pairs, out, done, plan)
        rows = _write_ranked(out, rows, plan.columns)
    return _finish(args, rows, out)


def _write_ranked(out: Path, rows: list[ScoreRow], metrics: tuple[str, ...] = ()) -> list[ScoreRow]:
    """Rank ``rows`` per prompt and put them in ``out`` atomically (``metrics``: the file's metric columns)."""
    rows = rank_rows(rows)
    atomic_write(out, lambda file: write_rows(file, rows, out.suffix, metrics=metrics), **ENCODING)
    return rows


def _score(args: argparse.Namespace, pairs: list[tuple[str, str]], out: Path | None,
           done: list[ScoreRow], plan: MetricPlan | None = None) -> list[ScoreRow]:
    """Score ``pairs``; with ``out``, rewrite it with ``done`` and append each batch as it comes."""
    rows = list(done)
    if not pairs:
        return rows
    plan = plan or metric_plan(args)
    # before --out is touched: a bad --model changes nothing
    scorer = load_multi(args, plan) if plan.multi else _load_scorer(args)
    file = None
    if out is not None:
        atomic_write(out, lambda f: write_rows(f, done, out.suffix, metrics=plan.columns),
                     **ENCODING)  # drops failed and half rows
        try:
            file = out.open("a", newline="", **ENCODING)
        except OSError as error:
            raise write_failed(out, error) from None
    try:
        for new in row_batches(scorer, pairs, plan):
            rows += new
            if file is not None:
                try:
                    write_rows(file, new, out.suffix, with_header=False)  # type: ignore[union-attr]
                    file.flush()
                except OSError as error:
                    raise write_failed(out, error) from None  # type: ignore[arg-type]
    finally:
        if file is not None:
            try:
                file.close()
            except OSError:
                pass
    return rows


def _finish(args: argparse.Namespace, rows: list[ScoreRow], out: Path | None) -> int:
    plan = metric_plan(args)
    if plan.multi:
        print_metric_summary(plan, rows, out)
    else:
        _print_summary(rows, out)
    write_report_option(args, rows, out)
    failed = sum(bool(row.error) for row in rows)
    return 1 if args.strict and failed else 0


def _print_rows(rows: list[ScoreRow]) -> None:
    from rich.table import Table

    from ..scoring.ranking import rank_rows

    table = Table(title="scores")
    metrics = [name for name, _ in rows[0].metrics] if rows else []
    for column in COLUMNS + tuple(metrics):
        table.add_column(column, justify="left" if column in ("image", "prompt", "error") else "right")
    for row in rank_rows(rows):
        table.add_row(shown(row.image), shown(row.prompt), "" if row.score is None else f"{row.score:.4f}",
                      "" if row.rank is None else str(row.rank), shown(row.error),
                      *("" if row.metric(name) is None else f"{row.metric(name):.4f}" for name in metrics))
    stdout().print(table)


def _print_summary(rows: list[ScoreRow], out: Path | None) -> None:
    from rich.table import Table

    from ..scoring.ranking import clip_score, rank_rows, summarize

    table = Table(title="summary" + (f" (rows in {shown(str(out))})" if out else ""))
    for column in ("prompt", "images", "failed", "mean score", "best image", "best score"):
        table.add_column(column, justify="right" if column in ("images", "failed", "mean score", "best score")
                         else "left")
    for summary in summarize(rank_rows(rows)):
        table.add_row(shown(summary.prompt), str(summary.images), str(summary.failed),
                      "" if summary.mean_score is None else f"{summary.mean_score:.4f}",
                      shown(summary.best_image or ""), "" if summary.best_score is None else f"{summary.best_score:.4f}")
    console = stdout()
    console.print(table)
    total = clip_score(rows)
    if total is not None:  # torchmetrics' CLIPScore: mean over pairs, then clamped at 0
        console.print(f"CLIP score (torchmetrics definition, {total[1]} pairs): {total[0]:.4f}")
    else:
        console.print("CLIP score: no image could be scored")
