"""``sdclip score``: CLIP-score images against prompts, rank best-of-N, write CSV/JSONL as it goes.

Rows are written and flushed batch by batch with an empty ``rank``; ranks need a prompt's whole group,
so when every image is scored the file is rewritten once (atomically) with ranks filled in. An
interrupted file therefore has scores but no ranks; ``--resume`` drops unfinished and failed rows
(and a half-written last line), skips the (image, prompt) pairs already scored, appends the rest, and
ranks everything at the end. No pair is ever written twice.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from pathlib import Path

from ..errors import SdclipError
from ..models.sources import DEFAULT_MODEL
from ._common import add_model_options, output_path, stderr, stdout

COLUMNS = ("image", "prompt", "score", "rank", "error")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return number


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="CLIP-score images against prompts and rank each prompt's images",
        description="Score images against prompts (100 * cosine, as torchmetrics' CLIPScore), rank the images "
        "of each prompt (1 = best), and summarise the run. Rows are written batch by batch; ranks are filled in "
        "when the run completes.")
    parser.add_argument("--images", nargs="+", metavar="PATH",
                        help="image files and folders (folders searched recursively for .png .jpg .jpeg .webp .bmp)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", metavar="TEXT", help="score every image against this prompt")
    what.add_argument("--pairs", metavar="FILE",
                      help="CSV with columns image,prompt or JSONL of {\"image\", \"prompt\"}; "
                      "image paths relative to the file")
    parser.add_argument("--out", metavar="FILE", help=".csv or .jsonl (default: a table on stdout)")
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                        help="images per model call (default: 64 on cuda, 4 on cpu)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the pairs already scored in --out, score the rest and append")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any image could not be scored")
    parser.add_argument("--preprocessing", default="auto", choices=["auto", "exact", "fast"],
                        help="exact: CLIPImageProcessor's PIL resize on the CPU (auto for files); "
                        "fast: decode on the CPU, resize batched on the device")
    add_model_options(parser, default=DEFAULT_MODEL)
    parser.set_defaults(run=run)


# -- input ----------------------------------------------------------------------------------------


def read_pairs(value: str) -> list[tuple[str, str]]:
    """(image path, prompt) rows of a pairs file; image paths are taken relative to the file's folder."""
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
    for number, line in enumerate(text.splitlines(), start=1):
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
        rows.append((item["image"], item["prompt"]))
    return rows


# -- output ---------------------------------------------------------------------------------------


def _format(row: dict, suffix: str) -> str:
    """One output row as a CSV or JSONL line (with its newline)."""
    score = row["score"]
    if suffix == ".jsonl":
        value = None if score is None else round(score, 6)
        item = {"image": row["image"], "prompt": row["prompt"], "score": value, "rank": row["rank"],
                "error": row["error"]}
        return json.dumps(item, ensure_ascii=False) + "\n"
    buffer = io.StringIO()
    fields = [row["image"], row["prompt"], "" if score is None else f"{score:.6f}",
              "" if row["rank"] is None else str(row["rank"]), row["error"]]
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue()


def _parse(line: str, suffix: str) -> dict | None:
    """A row read back from an output file, or None when the line is not a whole row."""
    try:
        if suffix == ".jsonl":
            item = json.loads(line)
            fields = [item["image"], item["prompt"], item["score"], item.get("rank"), item.get("error") or ""]
        else:
            fields = next(csv.reader([line]))
            if len(fields) != len(COLUMNS):
                return None
            fields = [fields[0], fields[1], float(fields[2]) if fields[2] else None,
                      int(fields[3]) if fields[3] else None, fields[4]]
    except (ValueError, KeyError, TypeError, StopIteration, csv.Error):
        return None
    return dict(zip(COLUMNS, fields))


def read_rows(path: Path) -> list[dict]:
    """The whole rows of an output file (a half-written last line is skipped).

    Raises:
        SdclipError: the file is not an ``sdclip score`` output (so ``--resume`` will not overwrite it).
    """
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):  # the run stopped mid-line: that row is incomplete
        text = text[: text.rfind("\n") + 1]
    if suffix == ".csv":
        records = _csv_records(text)
        if records and records[0].strip() != ",".join(COLUMNS):
            raise SdclipError(f"--out '{path}': not an sdclip score file (its header is not "
                              f"{','.join(COLUMNS)}); refusing to resume into it")
        records = records[1:]
    else:
        records = [line for line in text.splitlines(keepends=True) if line.strip()]
    rows = []
    for number, record in enumerate(records, start=1):
        row = _parse(record, suffix)
        if row is None:
            raise SdclipError(f"--out '{path}': row {number} is not an sdclip score row; refusing to resume into it")
        rows.append(row)
    return rows


def _csv_records(text: str) -> list[str]:
    """CSV text split into records (a quoted prompt may hold newlines)."""
    records, current = [], ""
    for line in text.splitlines(keepends=True):
        current += line
        if current.count('"') % 2 == 0:
            records.append(current)
            current = ""
    return records


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` (with a header for CSV) atomically: a temporary file, then a rename."""
    suffix = path.suffix.lower()
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8", newline="") as file:
        if suffix == ".csv":
            file.write(",".join(COLUMNS) + "\n")
        file.writelines(_format(row, suffix) for row in rows)
    os.replace(temporary, path)


def add_ranks(rows: list[dict]) -> None:
    """Fill in each row's rank within its prompt (1 = best; ties by order; failed rows get none)."""
    from ..scoring.clip_scorer import Ranking

    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        row["rank"] = None
        if not row["error"] and row["score"] is not None:
            groups.setdefault(row["prompt"], []).append(index)
    for prompt, indices in groups.items():
        ranking = Ranking.from_scores([rows[i]["score"] for i in indices], prompt=prompt)
        for index, rank in zip(indices, ranking.ranks):
            rows[index]["rank"] = rank


# -- run ------------------------------------------------------------------------------------------


def _pairs_from_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    from ..scoring.images import find_images

    if args.pairs is not None:
        if args.images:
            raise SdclipError("--images: use --images with --prompt, or --pairs alone (the pairs file names the images)")
        pairs = read_pairs(args.pairs)
    else:
        if not args.images:
            raise SdclipError("--images: required with --prompt (image files or folders)")
        pairs = [(str(path), args.prompt) for path in find_images(args.images)]
    return list(dict.fromkeys(pairs))  # the same (image, prompt) twice is scored once


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..scoring.clip_scorer import ClipScorer

    if args.resume and not args.out:
        raise SdclipError("--resume: needs --out (the file to resume)")
    out = output_path(args.out, suffixes=(".csv", ".jsonl")) if args.out else None
    pairs = _pairs_from_args(args)
    done: list[dict] = []
    if out is not None and args.resume and out.exists():
        wanted = set(pairs)
        done = list({(r["image"], r["prompt"]): r for r in read_rows(out) if not r["error"]}.values())
        write_rows(out, done)  # drops failed rows and a half-written line before appending
        finished = {(row["image"], row["prompt"]) for row in done}
        pairs = [pair for pair in pairs if pair not in finished]
        stderr().print(f"resuming {out}: {len(wanted & finished)} pairs already scored, {len(pairs)} to go")
    elif out is not None:
        write_rows(out, [])

    rows = list(done)
    if pairs:
        scorer = ClipScorer.from_pretrained(
            args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
            preprocessing=args.preprocessing, allow_pickle=args.allow_pickle,
            local_files_only=True if args.offline else None,
        )
        suffix = out.suffix.lower() if out else ""
        file = out.open("a", encoding="utf-8", newline="") if out else None
        try:
            with tqdm(total=len(pairs), unit="img", desc="sdclip score", file=sys.stderr) as progress:
                batches = scorer.iter_scores([Path(image) for image, _ in pairs], [p for _, p in pairs],
                                             errors="return")
                for batch in batches:
                    new = []
                    for offset, (score, error) in enumerate(zip(batch.scores.tolist(), batch.errors)):
                        image, prompt = pairs[batch.start + offset]
                        ok = error is None and not math.isnan(score)
                        new.append({"image": image, "prompt": prompt, "score": round(score, 6) if ok else None,
                                    "rank": None, "error": "" if ok else (error or "score is NaN")})
                    rows += new
                    if file is not None:
                        file.writelines(_format(row, suffix) for row in new)
                        file.flush()
                    progress.update(len(new))
        finally:
            if file is not None:
                file.close()

    add_ranks(rows)
    if out is not None:
        write_rows(out, rows)
    else:
        _print_rows(rows)
    _print_summary(rows, out)
    failed = sum(bool(row["error"]) for row in rows)
    return 1 if args.strict and failed else 0


def _print_rows(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="scores")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("score", "rank") else "left")
    for row in rows:
        table.add_row(row["image"], row["prompt"], "" if row["score"] is None else f"{row['score']:.4f}",
                      "" if row["rank"] is None else str(row["rank"]), row["error"])
    stdout().print(table)


def _print_summary(rows: list[dict], out: Path | None) -> None:
    from rich.table import Table

    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["prompt"], []).append(row)
    table = Table(title="summary" + (f" (rows in {out})" if out else ""))
    for column in ("prompt", "images", "failed", "mean score", "best image", "best score"):
        table.add_column(column, justify="right" if column in ("images", "failed", "mean score", "best score")
                         else "left")
    scores = []
    for prompt, group in groups.items():
        ok = [row for row in group if not row["error"]]
        scores += [row["score"] for row in ok]
        best = min(ok, key=lambda row: row["rank"]) if ok else None
        table.add_row(prompt, str(len(group)), str(len(group) - len(ok)),
                      f"{sum(r['score'] for r in ok) / len(ok):.4f}" if ok else "",
                      best["image"] if best else "", f"{best['score']:.4f}" if best else "")
    console = stdout()
    console.print(table)
    if scores:  # torchmetrics' CLIPScore: mean over pairs, then clamped at 0
        console.print(f"CLIP score (torchmetrics definition, {len(scores)} pairs): "
                      f"{max(sum(scores) / len(scores), 0.0):.4f}")
    else:
        console.print("CLIP score: no image could be scored")
