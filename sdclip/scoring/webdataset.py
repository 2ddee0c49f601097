"""WebDataset tar shards as img2dataset writes them (``{key}.jpg`` + ``{key}.txt`` / ``{key}.json``), streamed.

Nothing is unpacked to disk. ``read_webdataset`` walks the tar headers (reading only the small caption
members) and names each sample ``<shard.tar>/<key>.<ext>``, in shard order then member order, so every
process sees the same sorted list and takes its contiguous share (``shards.shard_range``).
``decoded_chunks`` then streams only the tars of that share, once each, and decodes images in a bounded
pool of worker threads: at most ``chunk`` decoded images wait in memory ahead of the model.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import ImageInputError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
_SEP = ".tar/"

__all__ = ["decoded_chunks", "is_tar_ref", "read_webdataset", "split_ref", "tar_paths"]


def is_tar_ref(image: str | os.PathLike) -> bool:
    """True for a sample name ``read_webdataset`` makes (``shards/00000.tar/000123.jpg``).

    Example:
        >>> is_tar_ref("shards/00000.tar/000123.jpg"), is_tar_ref("images/a.jpg")
        (True, False)
    """
    return _SEP in os.fspath(image)


def split_ref(image: str) -> tuple[str, str]:
    """(tar path, member name) of a sample name.

    Example:
        >>> split_ref("shards/00000.tar/000123.jpg")
        ('shards/00000.tar', '000123.jpg')
    """
    tar, member = image.rsplit(_SEP, 1)
    return tar + ".tar", member


def _caption(data: bytes, suffix: str) -> str:
    text = data.decode("utf-8", errors="replace")
    if suffix == "json":
        try:
            item = json.loads(text)
        except ValueError:
            return ""
        value = item.get("caption", item.get("prompt", item.get("text", ""))) if isinstance(item, dict) else ""
        return value if isinstance(value, str) else ""
    return text.strip()


def read_webdataset(tars: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """(sample name, caption) of every image in the tar shards, in the order given then member order.

    The caption is ``{key}.txt``, else the ``caption`` (or ``prompt`` / ``text``) of ``{key}.json``, else "".

    Raises:
        ImageInputError: a shard is missing or not a tar file.

    Example:
        >>> import io, tarfile, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "00000.tar"
        >>> with tarfile.open(path, "w") as tar:
        ...     for name, data in [("0001.jpg", b"..."), ("0001.txt", b"a cat")]:
        ...         info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))
        >>> [(pathlib.Path(ref).name, caption) for ref, caption in read_webdataset([path])]
        [('0001.jpg', 'a cat')]
    """
    samples = []
    for shard in tars:
        name = os.fspath(shard)
        if not name.endswith(".tar"):
            raise ImageInputError(f"--webdataset '{name}': expected a .tar shard as img2dataset writes")
        images: dict[str, str] = {}
        captions: dict[str, dict[str, str]] = {}
        try:
            with tarfile.open(name, "r:") as tar:  # headers only; a caption member is read, images are not
                for member in tar:
                    if not member.isfile() or "." not in member.name:
                        continue
                    key, suffix = member.name.rsplit(".", 1)
                    suffix = suffix.lower()
                    if suffix in IMAGE_EXTENSIONS:
                        images.setdefault(key, member.name)
                    elif suffix in ("txt", "json"):
                        file = tar.extractfile(member)
                        captions.setdefault(key, {})[suffix] = _caption(file.read() if file else b"", suffix)
        except FileNotFoundError:
            raise ImageInputError(f"--webdataset '{name}': no such file") from None
        except (tarfile.TarError, OSError) as error:
            raise ImageInputError(f"--webdataset '{name}': not a readable tar file ({error})") from None
        for key, member in images.items():
            found = captions.get(key, {})
            samples.append((f"{name}/{member}", found.get("txt", found.get("json", ""))))
    return samples


def _decode(data: bytes, ref: str) -> Any:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Exception as error:  # a corrupt sample is one error row, not a stopped job
        return f"image '{ref}': not an image file Pillow can read ({type(error).__name__})"


def _stream(refs: Sequence[str]) -> Iterator[tuple[int, bytes | None]]:
    """(position in refs, bytes) for each sample, reading each tar once, front to back, in streaming mode."""
    wanted: dict[str, dict[str, list[int]]] = {}
    for position, ref in enumerate(refs):
        tar, member = split_ref(ref)
        wanted.setdefault(tar, {}).setdefault(member, []).append(position)
    for tar, members in wanted.items():
        with tarfile.open(tar, "r|") as stream:  # sequential: works on pipes and object-store mounts
            for member in stream:
                positions = members.pop(member.name, None)
                if positions is None:
                    continue
                file = stream.extractfile(member)
                data = file.read() if file else None
                for position in positions:
                    yield position, data
                if not members:
                    break
        for positions in members.values():  # named but not in the shard any more
            for position in positions:
                yield position, None


def decoded_chunks(refs: Sequence[str], *, workers: int = 2, chunk: int = 64) -> Iterator[tuple[int, list[Any]]]:
    """``(start, images)`` for consecutive chunks of ``refs``, in order: a PIL image or an error string each.

    Tars are read as streams, each once (samples of one tar should be consecutive, as ``read_webdataset``
    lists them); ``workers`` threads decode; at most two chunks are held decoded or decoding.

    Example:
        >>> import io, tarfile, tempfile, pathlib
        >>> from PIL import Image
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "00000.tar"
        >>> png = io.BytesIO(); Image.new("RGB", (4, 4)).save(png, "PNG")
        >>> with tarfile.open(path, "w") as tar:
        ...     for name, data in [("a.png", png.getvalue()), ("b.png", b"broken")]:
        ...         info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))
        >>> [(start, [getattr(i, "size", "error") for i in images])
        ...  for start, images in decoded_chunks([f"{path}/a.png", f"{path}/b.png"], chunk=1)]
        [(0, [(4, 4)]), (1, ['error'])]
    """
    total = len(refs)
    futures: dict[int, Any] = {}
    pending: deque = deque()
    cursor = 0

    def collect() -> None:  # whole chunks, in order, once every sample of the chunk is submitted
        nonlocal cursor
        while cursor < total and all(p in futures for p in range(cursor, min(cursor + chunk, total))):
            end = min(cursor + chunk, total)
            pending.append((cursor, [futures.pop(p) for p in range(cursor, end)]))
            cursor = end

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sdclip-tar") as pool:
        for position, data in _stream(refs):
            ref = refs[position]
            futures[position] = (pool.submit(_decode, data, ref) if data is not None else
                                 _done(f"image '{ref}': no such member in {split_ref(ref)[0]}"))
            collect()
            while len(pending) >= 2:  # bounded: the reader waits for the model
                first, chunk_futures = pending.popleft()
                yield first, [future.result() for future in chunk_futures]
        collect()
        while pending:
            first, chunk_futures = pending.popleft()
            yield first, [future.result() for future in chunk_futures]


def _done(value: Any) -> Any:
    from concurrent.futures import Future

    future: Future = Future()
    future.set_result(value)
    return future


def tar_paths(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Tar shards named directly or found (``*.tar``, sorted) in folders.

    Example:
        >>> tar_paths([]) == []
        True
    """
    found = []
    for path in map(Path, paths):
        found += sorted(map(str, path.glob("*.tar"))) if path.is_dir() else [str(path)]
    return found
