"""Writing an embedding folder from many processes: append-only parts, resume, one merge into ``.npy`` + Parquet.

Each process appends its rows to ``<out>/parts/part-00003-of-00008.{img.f16,txt.f16,jsonl}``: the raw
float16 rows first, then one JSON line per row (image, prompt, error), flushed every batch. A JSON line
is the commit: on resume a part keeps as many raw rows as it has whole lines, so a killed process loses
at most its unflushed batch. As for score parts, the pairs left are re-shard over this run's processes,
whatever their number, and the main process merges every part by input position into the final shards
(``embeddings.shard_paths``), writing the manifest last.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import SdclipError
from .embeddings import MANIFEST, shard_paths
from .shards import Processes, shard_range

Item = tuple[str, "str | None"]
# what a batch function yields: (items, image rows (B, D) float32, text rows (B, D) float32 or None, errors)
EmbedBatch = tuple[list[Item], Any, Any, list[str]]

__all__ = ["embed_in_parts", "parts_folder"]


def parts_folder(folder: str | os.PathLike) -> Path:
    """Where the per-process parts of an embedding folder live until the merge.

    Example:
        >>> parts_folder("emb").as_posix()
        'emb/parts'
    """
    return Path(folder) / "parts"


def _part(folder: Path, rank: int, world: int) -> dict[str, Path]:
    stem = parts_folder(folder) / f"part-{rank:05d}-of-{world:05d}"
    return {"meta": stem.with_suffix(".jsonl"), "image": stem.with_suffix(".img.f16"),
            "text": stem.with_suffix(".txt.f16")}


def _all_parts(folder: Path) -> list[dict[str, Path]]:
    found = sorted(parts_folder(folder).glob("part-*-of-*.jsonl")) if parts_folder(folder).is_dir() else []
    return [{"meta": path, "image": path.with_name(path.name[:-6] + ".img.f16"),
             "text": path.with_name(path.name[:-6] + ".txt.f16")} for path in found]


def _lines(path: Path) -> list[dict]:
    """The whole JSON lines of a part (a half-written last line is dropped)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = []
    for number, line in enumerate(data[: data.rfind(b"\n") + 1].split(b"\n")[:-1], start=1):
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise SdclipError(f"--out part '{path}': line {number} is not JSON; expected the lines `sdclip embed` "
                              "writes (delete the parts folder to start again)") from None
    return lines


def embed_in_parts(
    folder: str | os.PathLike,
    items: Sequence[Item],
    *,
    item_key: Callable[[Item], Hashable],
    batches: Callable[[list[Item]], Iterable[EmbedBatch]],
    dim: int,
    processes: Processes,
    manifest: dict[str, Any],
    resume: bool = False,
    shard_size: int = 100_000,
    on_plan: Callable[[int, int], None] | None = None,
) -> dict[str, Any] | None:
    """Embed this process's share of ``items`` into its part; on the main process merge and return the manifest.

    Args:
        folder: the output folder.
        items: every (image, prompt or None) in input order, the same list on every process.
        item_key: what makes two items the same (the image's resolved path and the prompt).
        batches: embeds a list of items, yielding ``(items, image (B, D), text (B, D) or None, errors)``.
        dim: D, the embedding width.
        processes: this process's rank and world size.
        manifest: what to record in ``sdclip-embeddings.json`` (model, ...); rows, shards, dim are added.
        resume: keep the rows already in the parts folder.
        shard_size: rows per final ``.npy`` shard.
        on_plan: called with (items already done, items left) before any work.

    Example:
        >>> import tempfile, numpy as np
        >>> from sdclip.scoring.embeddings import load_embeddings
        >>> items = [("a.png", None), ("b.png", None)]
        >>> embed = lambda todo: [(todo, np.eye(2, 4)[: len(todo)], None, [""] * len(todo))]
        >>> folder = tempfile.mkdtemp()
        >>> embed_in_parts(folder, items, item_key=tuple, batches=embed, dim=4, processes=Processes(),
        ...                manifest={"model": "tiny"})["rows"]
        2
        >>> load_embeddings(folder).images
        ['a.png', 'b.png']
    """
    import numpy as np

    folder = Path(folder)
    done = {item_key((line["image"], line["prompt"])) for part in _all_parts(folder) if resume
            for line in _lines(part["meta"]) if not line["error"]} if resume else set()
    left = [item for item in items if item_key(item) not in done]
    if on_plan is not None:
        on_plan(len(items) - len(left), len(left))
    mine = [left[i] for i in shard_range(len(left), processes.rank, processes.world)]
    if processes.is_main and not resume and parts_folder(folder).is_dir():
        shutil.rmtree(parts_folder(folder))  # a fresh run: an earlier run's parts must not be merged
    processes.barrier()  # every process has read the parts before any rewrites its own
    parts_folder(folder).mkdir(parents=True, exist_ok=True)
    part = _part(folder, processes.rank, processes.world)
    kept = _lines(part["meta"]) if resume else []
    part["meta"].write_text("".join(json.dumps(line) + "\n" for line in kept))
    for kind in ("image", "text"):
        with part[kind].open("ab") as file:
            file.truncate(len(kept) * dim * 2)  # rows past the last whole line were never committed
    with part["image"].open("ab") as images, part["text"].open("ab") as texts, part["meta"].open("a") as meta:
        for todo, image, text, errors in batches(mine) if mine else ():
            images.write(np.ascontiguousarray(image, dtype=np.float16).tobytes())
            images.flush()
            if text is not None:
                texts.write(np.ascontiguousarray(text, dtype=np.float16).tobytes())
                texts.flush()
            meta.write("".join(json.dumps({"image": i, "prompt": p, "error": e}) + "\n"
                               for (i, p), e in zip(todo, errors)))
            meta.flush()  # the commit point of this batch
    processes.barrier()  # every part is complete
    if not processes.is_main:
        return None
    return _merge(folder, items, item_key=item_key, dim=dim, manifest=manifest, shard_size=shard_size)


def _merge(folder: Path, items: Sequence[Item], *, item_key: Callable[[Item], Hashable], dim: int,
           manifest: dict[str, Any], shard_size: int) -> dict[str, Any]:
    """Gather every part's rows in input order into the final shards; the manifest goes last."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    has_text = any(prompt is not None for _, prompt in items)
    kinds = ("image", "text") if has_text else ("image",)
    where: dict[Hashable, tuple[int, int, str]] = {}
    arrays = []
    for number, part in enumerate(_all_parts(folder)):
        lines = _lines(part["meta"])
        arrays.append({kind: np.memmap(part[kind], np.float16, "r", shape=(len(lines), dim)) if lines else None
                       for kind in kinds})
        for row, line in enumerate(lines):
            key = item_key((line["image"], line["prompt"]))
            if key not in where or (where[key][2] and not line["error"]):
                where[key] = (number, row, line["error"])
    missing = [item for item in items if item_key(item) not in where]
    if missing:
        raise SdclipError(f"--out '{folder}': {len(missing)} of {len(items)} images have no row in the parts "
                          f"(first: {missing[0][0]!r}); a process stopped early: run the same command with --resume")
    old = json.loads((folder / MANIFEST).read_text()).get("shards", 0) if (folder / MANIFEST).is_file() else 0
    (folder / MANIFEST).unlink(missing_ok=True)  # not complete while the shards change
    shards = max(1, -(-len(items) // shard_size))
    for shard in range(shards):
        chunk = items[shard * shard_size : (shard + 1) * shard_size]
        found = [where[item_key(item)] for item in chunk]
        paths = shard_paths(folder, shard)
        for kind in kinds:
            rows = np.stack([arrays[n][kind][r] for n, r, _ in found]) if found else np.zeros((0, dim), np.float16)
            paths[kind].parent.mkdir(exist_ok=True)
            _save_npy(paths[kind], rows)
        table = pa.table({"image_path": [image for image, _ in chunk], "prompt": [prompt for _, prompt in chunk],
                          "shard": [shard] * len(chunk), "row": list(range(len(chunk))),
                          "error": [error for _, _, error in found]},
                         schema=pa.schema([("image_path", pa.string()), ("prompt", pa.string()),
                                           ("shard", pa.int64()), ("row", pa.int64()), ("error", pa.string())]))
        paths["metadata"].parent.mkdir(exist_ok=True)
        temporary = paths["metadata"].with_name(paths["metadata"].name + ".tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, paths["metadata"])
    for shard in range(shards, old):  # an earlier, longer output's extra shards
        for path in shard_paths(folder, shard).values():
            path.unlink(missing_ok=True)
    result = {**manifest, "dim": dim, "rows": len(items), "shards": shards, "shard_size": shard_size,
              "has_text": has_text, "dtype": "float16", "normalized": True}
    temporary = folder / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(temporary, folder / MANIFEST)
    shutil.rmtree(parts_folder(folder), ignore_errors=True)
    return result


def _save_npy(path: Path, rows: Any) -> None:
    import numpy as np

    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        np.save(file, np.ascontiguousarray(rows, dtype=np.float16))
    os.replace(temporary, path)
