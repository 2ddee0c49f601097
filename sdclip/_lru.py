"""A small least-recently-used cache (encoded prompts, encoded texts), safe to share across threads.

Bounded by entries and, optionally, by bytes: an entry's size is the bytes of the tensor storages it holds,
so callers should store contiguous copies (``tensor.clone()``), not views of a larger batch, or a small
entry would keep the whole batch alive.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["LRUCache", "DEFAULT_MAX_BYTES", "check_cache_size", "storage_nbytes"]

DEFAULT_MAX_BYTES = 256 * 2**20
"""The default byte bound of the conditioner's cache (256 MiB)."""


def storage_nbytes(value: Any) -> int:
    """Bytes of every tensor storage in ``value`` (a tensor, or tuples / lists / dicts of them), each counted once.

    Example:
        >>> import torch
        >>> storage_nbytes((torch.zeros(2, 3), torch.zeros(4, dtype=torch.float16), "text"))
        32
        >>> storage_nbytes(torch.zeros(100)[:2])  # a view holds its whole base
        400
    """
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "untyped_storage"):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen or storage.data_ptr() == 0:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def check_cache_size(value: Any, name: str = "cache_size") -> int:
    """``value`` if it is an integer >= 0 (not a bool), else ``PromptError`` naming ``name``.

    Example:
        >>> check_cache_size(16)
        16
        >>> check_cache_size("x")
        Traceback (most recent call last):
        ...
        sdclip.errors.PromptError: cache_size: expected an integer >= 0 (0 disables the cache), got 'x'
    """
    from .errors import PromptError

    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PromptError(f"{name}: expected an integer >= 0 (0 disables the cache), got {value!r}")
    return value


class LRUCache:
    """A least-recently-used map bounded by entries (``max_size=0`` disables it) and optionally by bytes.

    Every method holds an internal lock, so one cache can be shared by threads. An entry larger than
    ``max_bytes`` on its own is not stored.

    Args:
        max_size: most entries kept; 0 disables the cache.
        max_bytes: most bytes kept (``sizeof`` of the entries); None: no byte bound.
        sizeof: the size of a value in bytes; default :func:`storage_nbytes`.

    Example:
        >>> cache = LRUCache(2)
        >>> for key in "abc":
        ...     cache.put(key, key.upper())
        >>> cache.get("a"), cache.get("c"), len(cache)
        (None, 'C', 2)
    """

    def __init__(self, max_size: int, *, max_bytes: int | None = None, sizeof: Callable[[Any], int] | None = None) -> None:
        self.max_size = check_cache_size(max_size)
        self.max_bytes = None if max_bytes is None else check_cache_size(max_bytes, "cache_bytes")
        self._sizeof = sizeof or storage_nbytes
        self._items: OrderedDict = OrderedDict()  # key -> (value, nbytes)
        self._nbytes = 0
        self._lock = threading.RLock()

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries (as ``sizeof`` counts them)."""
        return self._nbytes

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Any, value: Any) -> None:
        if self.max_size <= 0:
            return
        size = self._sizeof(value) if self.max_bytes is not None else 0
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            if self.max_bytes is not None and size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self._nbytes += size
            while len(self._items) > self.max_size or (self.max_bytes is not None and self._nbytes > self.max_bytes):
                _, (_, evicted) = self._items.popitem(last=False)
                self._nbytes -= evicted

    def items(self) -> list[tuple[Any, Any]]:
        """A snapshot of ``(key, value)`` pairs, least recently used first."""
        with self._lock:
            return [(key, value) for key, (value, _) in self._items.items()]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._nbytes = 0

    def __len__(self) -> int:
        return len(self._items)
