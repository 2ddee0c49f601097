"""Training pairs (image, caption) from memory, a folder, CSV / JSONL files or WebDataset tar shards.

Every reader gives a ``PairSource``: a sized, indexable list of pairs whose captions are read up front and
whose images are opened only when a batch needs them (``open_image``), so a bad image costs one pair, not
the run: the trainer skips it and counts it.

* in memory: a sequence of ``(image, caption)`` or ``(image, caption, label)``; ``image`` is a PIL image or
  a path;
* a folder: every image (``.jpg .jpeg .png .webp .bmp .gif``, searched recursively) with a same-name
  ``.txt`` caption beside it; images without one are counted in ``skipped``;
* ``.csv`` / ``.jsonl``: one pair per row, columns ``image`` (or ``filepath`` / ``file`` / ``path``) and
  ``caption`` (or ``text`` / ``title``), optional ``label``; relative paths are relative to the file;
* ``.tar`` (WebDataset): members ``{key}.{jpg,png,...}`` with ``{key}.txt`` or ``{key}.json`` (``caption``
  or ``text``; the key ends at the file name's first dot), read with ``tarfile``: one streamed pass over the
  headers and captions, then each image is read at its offset when a batch needs it;
* a folder of ``.tar`` shards, or a list of any of these (concatenated in order).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..errors import TrainingDataError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_IMAGE_KEYS = ("image", "filepath", "file", "path")
_CAPTION_KEYS = ("caption", "text", "title")

DataSpec = Union[str, os.PathLike, "PairSource", Sequence[Any]]


class PairSource:
    """A list of (image, caption) pairs; images open lazily.

    Attributes:
        name: where the pairs come from (for messages).
        skipped: pairs dropped while reading the list, by reason (e.g. ``{"no caption": 2}``).

    Example:
        >>> from PIL import Image
        >>> pairs = load_pairs([(Image.new("RGB", (8, 8)), "a black square")])
        >>> len(pairs), pairs.caption(0), pairs.open_image(0).size
        (1, 'a black square', (8, 8))
    """

    def __init__(self, name: str, captions: Sequence[str], labels: Sequence[str | None] | None = None) -> None:
        self.name = name
        self._captions = list(captions)
        self._labels = list(labels) if labels is not None else [None] * len(self._captions)
        self.skipped: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._captions)

    def caption(self, index: int) -> str:
        """The caption of pair ``index``."""
        return self._captions[index]

    def label(self, index: int) -> str | None:
        """The class label given with pair ``index`` (a ``label`` column / third item), or None."""
        return self._labels[index]

    def open_image(self, index: int) -> Image.Image:
        """Pair ``index``'s image, decoded (raises on a bad image; the trainer skips and counts it)."""
        raise NotImplementedError


class _MemoryPairs(PairSource):
    def __init__(self, name: str, images: list[Any], captions: list[str], labels: list[str | None]) -> None:
        super().__init__(name, captions, labels)
        self._images = images

    def open_image(self, index: int) -> Image.Image:
        return _decode(self._images[index])


class _TarPairs(PairSource):
    def __init__(self, path: Path) -> None:
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(path, "r|*") as stream:  # streamed: headers in one pass, no seeking
                texts: dict[str, bytes] = {}
                for member in stream:
                    if not member.isfile():
                        continue
                    folder, _, base = member.name.rpartition("/")
                    stem, _, suffix = base.partition(".")  # WebDataset: the key ends at the name's first dot
                    key, suffix = f"{folder}/{stem}", "." + suffix.lower().rpartition(".")[2]  # "v1.png": .png
                    if suffix in (".txt", ".json"):
                        handle = stream.extractfile(member)
                        texts[key + suffix] = handle.read() if handle else b""
                    members.setdefault(key, {})[suffix] = member
        except (OSError, tarfile.TarError) as error:
            raise TrainingDataError(f"data '{path}': not a readable tar file ({error}); expected WebDataset "
                                    "shards of {key}.jpg + {key}.txt") from error
        self._path, self._offsets = path, []
        captions, labels, skipped = [], [], 0
        for key, parts in members.items():
            image = next((parts[s] for s in IMAGE_SUFFIXES if s in parts), None)
            if image is None:
                continue
            caption, label = _tar_caption(texts.get(key + ".txt"), texts.get(key + ".json"))
            if caption is None:
                skipped += 1
                continue
            self._offsets.append((image.offset_data, image.size))
            captions.append(caption)
            labels.append(label)
        super().__init__(str(path), captions, labels)
        if skipped:
            self.skipped["no caption"] = skipped

    def open_image(self, index: int) -> Image.Image:
        offset, size = self._offsets[index]
        with open(self._path, "rb") as handle:
            handle.seek(offset)
            return _decode(io.BytesIO(handle.read(size)))


class _FilePairs(_MemoryPairs):
    pass


class _ConcatPairs(PairSource):
    def __init__(self, parts: list[PairSource]) -> None:
        super().__init__(
            " + ".join(part.name for part in parts),
            [part.caption(i) for part in parts for i in range(len(part))],
            [part.label(i) for part in parts for i in range(len(part))],
        )
        self._index = [(part, i) for part in parts for i in range(len(part))]
        for part in parts:
            for reason, count in part.skipped.items():
                self.skipped[reason] = self.skipped.get(reason, 0) + count

    def open_image(self, index: int) -> Image.Image:
        part, inner = self._index[index]
        return part.open_image(inner)


class Subset(PairSource):
    """The pairs of ``source`` at ``indices`` (a train or validation split).

    Example:
        >>> from PIL import Image
        >>> pairs = load_pairs([(Image.new("RGB", (4, 4)), c) for c in "abc"])
        >>> [Subset(pairs, [2, 0]).caption(i) for i in range(2)]
        ['c', 'a']
    """

    def __init__(self, source: PairSource, indices: Sequence[int]) -> None:
        super().__init__(source.name, [source.caption(i) for i in indices], [source.label(i) for i in indices])
        self._source, self._indices = source, list(indices)

    def open_image(self, index: int) -> Image.Image:
        return self._source.open_image(self._indices[index])


def load_pairs(data: DataSpec) -> PairSource:
    """Read training pairs from any of the layouts in this module's docstring.

    Args:
        data: a ``PairSource``; a sequence of ``(image, caption[, label])``; a folder; a ``.csv`` /
            ``.jsonl`` / ``.tar`` file; or a list of such paths.

    Raises:
        TrainingDataError: a missing path, an unknown format, missing columns, or no pairs at all.

    Example:
        >>> from PIL import Image
        >>> load_pairs([(Image.new("RGB", (8, 8)), "a cat", "cat")]).label(0)
        'cat'
    """
    if isinstance(data, PairSource):
        pairs = data
    elif isinstance(data, (str, os.PathLike)):
        pairs = _from_path(Path(data))
    elif isinstance(data, Sequence) and data and all(isinstance(d, (str, os.PathLike)) for d in data):
        pairs = _ConcatPairs([_from_path(Path(d)) for d in data])
    elif isinstance(data, Sequence):
        pairs = _from_memory(data)
    else:
        raise TrainingDataError(f"data: expected a path, a list of paths or of (image, caption) pairs, got "
                                f"{type(data).__name__}")
    if len(pairs) == 0:
        raise TrainingDataError(f"data '{pairs.name}': no (image, caption) pairs found; expected images with "
                                "same-name .txt captions, CSV/JSONL rows or WebDataset tar shards")
    return pairs


def _from_memory(items: Sequence[Any]) -> PairSource:
    images, captions, labels = [], [], []
    for n, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) in (2, 3) and isinstance(item[1], str)):
            raise TrainingDataError(f"data[{n}]: expected an (image, caption) or (image, caption, label) tuple "
                                    f"with a string caption, got {type(item).__name__}")
        images.append(item[0])
        captions.append(item[1])
        labels.append(item[2] if len(item) == 3 else None)
    return _MemoryPairs("<memory>", images, captions, labels)


def _from_path(path: Path) -> PairSource:
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.suffix.lower() == ".tar")
        return _ConcatPairs([_TarPairs(p) for p in shards]) if shards else _from_folder(path)
    if not path.is_file():
        raise TrainingDataError(f"data '{path}': no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".tar":
        return _TarPairs(path)
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
        return _from_rows(path, rows)
    if suffix in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise TrainingDataError(f"data '{path}': line {line_number} is not JSON ({error.msg}); "
                                                "expected one object per line") from error
        return _from_rows(path, rows)
    raise TrainingDataError(f"data '{path}': unknown format '{suffix}'; expected a folder, .csv, .tsv, .jsonl or .tar")


def _from_folder(folder: Path) -> PairSource:
    images, captions, missing = [], [], 0
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        text = image.with_suffix(".txt")
        if text.is_file():
            images.append(image)
            captions.append(text.read_text(encoding="utf-8", errors="replace").strip())
        else:
            missing += 1
    pairs = _FilePairs(str(folder), images, captions, [None] * len(images))
    if missing:
        pairs.skipped["no caption"] = missing
    return pairs


def _from_rows(path: Path, rows: list[Any]) -> PairSource:
    if not rows:
        return _FilePairs(str(path), [], [], [])
    first = rows[0] if isinstance(rows[0], dict) else {}
    image_key = next((k for k in _IMAGE_KEYS if k in first), None)
    caption_key = next((k for k in _CAPTION_KEYS if k in first), None)
    if image_key is None or caption_key is None:
        raise TrainingDataError(
            f"data '{path}': columns {sorted(first)} lack an image column ({'/'.join(_IMAGE_KEYS)}) or a caption "
            f"column ({'/'.join(_CAPTION_KEYS)})"
        )
    images = [path.parent / str(row[image_key]) for row in rows]
    captions = [str(row[caption_key]) for row in rows]
    labels = [str(row["label"]) if row.get("label") not in (None, "") else None for row in rows]
    return _FilePairs(str(path), images, captions, labels)


def _tar_caption(text: bytes | None, meta: bytes | None) -> tuple[str | None, str | None]:
    label = None
    caption = text.decode("utf-8", errors="replace").strip() if text is not None else None
    if meta is not None:
        try:
            data = json.loads(meta)
        except json.JSONDecodeError:
            data = {}
        if isinstance(data, dict):
            caption = caption or next((str(data[k]) for k in _CAPTION_KEYS if data.get(k)), None)
            label = str(data["label"]) if data.get("label") not in (None, "") else None
    return caption, label


def _decode(image: Any) -> Image.Image:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    with Image.open(image) as opened:
        opened.load()
        return opened.copy()
