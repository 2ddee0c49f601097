"""The one cache look-up the encoders share: which texts are cached, which are still to encode."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any


def split_cached(cache: Any, texts: Iterable[Any], key: Callable[[Any], Hashable]) -> tuple[dict, list]:
    """Cached results by text, and the texts still to encode, in their first order.

    Args:
        cache: an ``sdclip._lru.LRUCache`` (anything with ``get(key)`` returning None when absent), or None.
        texts: the texts (None stands for the empty prompt); repeated texts are looked up once.
        key: the cache key of a text.

    Example:
        >>> split_cached({("a",): 1}, ["a", "b", "a"], key=lambda text: (text,))
        ({'a': 1}, ['b'])
    """
    results, todo = {}, []
    for text in dict.fromkeys(texts):
        cached = cache.get(key(text)) if cache is not None else None
        if cached is not None:
            results[text] = cached
        else:
            todo.append(text)
    return results, todo
