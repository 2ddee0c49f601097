"""Embedding folders as clip-retrieval users know them: float16 ``.npy`` shards plus Parquet metadata.

A finished folder holds::

    img_emb/img_emb_00000.npy     (N_k, D) float16, L2-normalised image embeddings
    text_emb/text_emb_00000.npy   (N_k, D) float16, the prompt of each row (only when prompts were given)
    metadata/metadata_00000.parquet   image_path, prompt, shard, row, error  (one row per embedding row)
    sdclip-embeddings.json        model, dim, rows, shards: written last, so its presence means complete

Rows are in input order. A failed image has a NaN row and its ``error``. ``load_embeddings(folder)`` reads
it all back in one call; ``cosine_scores`` scores stored rows against text features with one matrix
product, so re-scoring never runs the vision tower again. Writing (per-process parts, resume, the final
merge) is ``embed_parts``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SdclipError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow

MANIFEST = "sdclip-embeddings.json"
METADATA_COLUMNS = ("image_path", "prompt", "shard", "row", "error")

__all__ = ["Embeddings", "MANIFEST", "METADATA_COLUMNS", "cosine_scores", "embed_batches", "load_embeddings", "rescore",
           "shard_paths"]


def shard_paths(folder: str | os.PathLike, shard: int) -> dict[str, Path]:
    """The three files of final shard ``shard``.

    Example:
        >>> sorted((kind, path.as_posix()) for kind, path in shard_paths("emb", 2).items())  # doctest: +NORMALIZE_WHITESPACE
        [('image', 'emb/img_emb/img_emb_00002.npy'), ('metadata', 'emb/metadata/metadata_00002.parquet'),
         ('text', 'emb/text_emb/text_emb_00002.npy')]
    """
    folder = Path(folder)
    return {"image": folder / "img_emb" / f"img_emb_{shard:05d}.npy",
            "text": folder / "text_emb" / f"text_emb_{shard:05d}.npy",
            "metadata": folder / "metadata" / f"metadata_{shard:05d}.parquet"}


@dataclass
class Embeddings:
    """A loaded embedding folder.

    Attributes:
        image: (N, D) float16 image embeddings (L2-normalised; NaN rows for failed images).
        text: (N, D) float16 prompt embeddings, or None when the folder has no prompts.
        metadata: a pyarrow Table with ``METADATA_COLUMNS``, one row per embedding row.
        manifest: what ``sdclip embed`` recorded (model, dim, rows, shards).
    """

    image: np.ndarray
    text: np.ndarray | None
    metadata: pyarrow.Table
    manifest: dict[str, Any]

    @property
    def images(self) -> list[str]:
        """The image path of each row."""
        return self.metadata.column("image_path").to_pylist()

    @property
    def prompts(self) -> list[str | None]:
        """The prompt of each row (None where none was given)."""
        return self.metadata.column("prompt").to_pylist()

    @property
    def errors(self) -> list[str]:
        """Why each row failed ("" when it did not)."""
        return self.metadata.column("error").to_pylist()

    def __len__(self) -> int:
        return int(self.image.shape[0])


def load_embeddings(folder: str | os.PathLike, *, mmap: bool = False) -> Embeddings:
    """Load a folder ``sdclip embed`` wrote, every shard in order, in one call.

    Args:
        folder: the ``--out`` folder of ``sdclip embed``.
        mmap: memory-map the ``.npy`` shards of a one-shard folder instead of reading them.

    Raises:
        SdclipError: the folder is not a finished ``sdclip embed`` output.

    Example:
        >>> import tempfile
        >>> load_embeddings(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sdclip.errors.SdclipError: embeddings '...': no sdclip-embeddings.json; expected a folder `sdclip embed` finished (resume an unfinished one with `sdclip embed ... --resume`)
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise SdclipError(f"embeddings '{folder}': no {MANIFEST}; expected a folder `sdclip embed` finished "
                          "(resume an unfinished one with `sdclip embed ... --resume`)") from None
    except (OSError, ValueError) as error:
        raise SdclipError(f"embeddings '{folder}': {MANIFEST} cannot be read ({error})") from None
    images, texts, tables = [], [], []
    for shard in range(int(manifest.get("shards", 0))):
        paths = shard_paths(folder, shard)
        try:
            images.append(np.load(paths["image"], mmap_mode="r" if mmap else None))
            if manifest.get("has_text"):
                texts.append(np.load(paths["text"], mmap_mode="r" if mmap else None))
            tables.append(pq.read_table(paths["metadata"]))
        except (OSError, ValueError) as error:
            raise SdclipError(f"embeddings '{folder}': shard {shard} cannot be read ({error}); "
                              "expected the files `sdclip embed` wrote") from None
    dim = int(manifest.get("dim", 0))
    image = (images[0] if len(images) == 1 else np.concatenate(images)) if images else np.zeros((0, dim), np.float16)
    text = None
    if manifest.get("has_text"):
        text = (texts[0] if len(texts) == 1 else np.concatenate(texts)) if texts else np.zeros((0, dim), np.float16)
    schema = pa.schema([("image_path", pa.string()), ("prompt", pa.string()), ("shard", pa.int64()),
                        ("row", pa.int64()), ("error", pa.string())])
    metadata = pa.concat_tables(tables) if tables else schema.empty_table()
    if metadata.num_rows != image.shape[0]:
        raise SdclipError(f"embeddings '{folder}': {image.shape[0]} embedding rows but {metadata.num_rows} "
                          "metadata rows; expected one each (write the folder again with --overwrite)")
    return Embeddings(image, text, metadata, manifest)


def cosine_scores(image: Any, text: Any, *, pairs: bool = True, chunk: int = 65536) -> np.ndarray:
    """``100 * cos`` between stored image embeddings and text features, in float32.

    Args:
        image: (N, D) image embeddings (any float dtype; normalised again here).
        text: (N, D) one text row per image (``pairs=True``), or (P, D) prompts scored against every image.
        pairs: True: (N,) row-wise scores; False: (N, P), every image against every prompt.
        chunk: rows per matrix product (bounds memory for millions of rows).

    Example:
        >>> import numpy as np
        >>> image = np.array([[1.0, 0.0], [0.0, 0.5]], dtype=np.float16)
        >>> cosine_scores(image, np.array([[2.0, 0.0]]), pairs=False).tolist()
        [[100.0], [0.0]]
    """
    import numpy as np

    text = np.asarray(text, dtype=np.float32)
    text = text / np.maximum(np.linalg.norm(text, axis=-1, keepdims=True), 1e-12)
    out = []
    for start in range(0, len(image), chunk):
        block = np.asarray(image[start : start + chunk], dtype=np.float32)
        block = block / np.maximum(np.linalg.norm(block, axis=-1, keepdims=True), 1e-12)
        if pairs:
            out.append(100 * np.einsum("nd,nd->n", block, text[start : start + chunk]))
        else:
            out.append(100 * block @ text.T)
    if not out:
        return np.zeros((0,) if pairs else (0, len(text)), np.float32)
    return np.concatenate(out).astype(np.float32)


def embed_batches(scorer: Any, items: Sequence[tuple[Any, str | None]]) -> Iterator[tuple[list, Any, Any, list[str]]]:
    """Embed ``items`` ((image, prompt or None)) batch by batch with a CLIP scorer, for ``embed_parts``.

    Yields ``(items, image (B, D) float32 L2-normalised with NaN rows for failures, text (B, D) float32 or
    None, errors)`` per batch, in order. Images are decoded ahead of the model by the scorer's worker pool.

    Example:
        >>> import tempfile, torch
        >>> from sdclip.scoring.clip_scorer import ClipScorer
        >>> from sdclip.testing import random_clip_model, save_clip_folder
        >>> scorer = ClipScorer.from_pretrained(save_clip_folder(random_clip_model(), tempfile.mkdtemp()), device="cpu")
        >>> [(len(todo), image.shape) for todo, image, _, _ in embed_batches(scorer, [(torch.rand(3, 32, 32), None)])]
        [(1, (1, 96))]
    """
    import numpy as np
    import torch

    items = list(items)
    with_text = any(prompt is not None for _, prompt in items)
    for batch in scorer.image_pipeline().batches([Path(i) if isinstance(i, str) else i for i, _ in items]):
        todo = items[batch.start : batch.start + batch.size]
        features = np.full((batch.size, scorer.feature_dim), np.nan, dtype=np.float32)
        if batch.pixels is not None:
            embedded = torch.nn.functional.normalize(scorer.embed_images(batch.pixels).float(), dim=-1)
            features[list(batch.ok)] = embedded.cpu().numpy()
        text = None
        if with_text:
            text = scorer.text_features([prompt or "" for _, prompt in todo], normalize=True).float().cpu().numpy()
        yield todo, features, text, [error or "" for error in batch.errors]


def rescore(embeddings: Embeddings, pairs: Sequence[tuple[str, str]], text_features: Callable[[list[str]], Any],
            *, key: Callable[[str], Hashable] = os.path.realpath) -> list[tuple[str, str, float | None, str]]:
    """Score (image, prompt) pairs from stored image embeddings: one text pass per unique prompt, then dot products.

    Args:
        embeddings: a loaded folder (``load_embeddings``).
        pairs: (image path, prompt); the image must be in the folder (matched by ``key`` of its path).
        text_features: prompts -> (P, D) text features (e.g. ``ClipScorer.text_features``).
        key: what makes two image paths the same image (default: the resolved path).

    Returns:
        (image, prompt, score or None, error) per pair, in order; ``score`` is ``100 * cos``.

    Example:
        >>> import numpy as np, pyarrow as pa
        >>> table = pa.table({"image_path": ["a.png"], "prompt": [None], "shard": [0], "row": [0], "error": [""]})
        >>> store = Embeddings(np.array([[0.0, 0.5]], np.float16), None, table, {})
        >>> rescore(store, [("a.png", "x"), ("b.png", "x")], lambda texts: np.array([[0.0, 1.0]] * len(texts)))
        [('a.png', 'x', 100.0, ''), ('b.png', 'x', None, "image 'b.png': not in the embeddings folder")]
    """
    import numpy as np

    index = {key(image): row for row, image in enumerate(embeddings.images)}
    errors = embeddings.errors
    prompts = list(dict.fromkeys(prompt for _, prompt in pairs))
    table = np.asarray(text_features(prompts), dtype=np.float32) if prompts else np.zeros((0, 1), np.float32)
    rows = [index.get(key(image)) for image, _ in pairs]
    found = [k for k, row in enumerate(rows) if row is not None]
    position = {prompt: k for k, prompt in enumerate(prompts)}
    scores = cosine_scores(embeddings.image[[rows[k] for k in found]],
                           table[[position[pairs[k][1]] for k in found]]) if found else []
    result: list[tuple[str, str, float | None, str]] = []
    score_of = dict(zip(found, (float(s) for s in scores)))
    for k, (image, prompt) in enumerate(pairs):
        if rows[k] is None:
            result.append((image, prompt, None, f"image '{image}': not in the embeddings folder"))
        elif errors[rows[k]] or np.isnan(score_of[k]):
            result.append((image, prompt, None, errors[rows[k]] or "embedding is NaN"))
        else:
            result.append((image, prompt, round(score_of[k], 6), ""))
    return result
