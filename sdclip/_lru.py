"""A small least-recently-used cache (encoded prompts, encoded texts)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class LRUCache:
    """A small least-recently-used map; ``max_size=0`` disables it."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._items: OrderedDict = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        if self.max_size <= 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
