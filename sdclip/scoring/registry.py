"""Scorers by name: ``load_scorer("clip", source=...)``, and ``register_scorer`` for new metrics.

Adding a metric is one module (a ``Scorer`` subclass) plus one line in ``_BUILTIN`` below (or a
``register_scorer`` call from user code or a test). Built-in metrics are named by import path and
imported on first use, so the registry costs nothing at import time.

Example:
    >>> "clip" in available_scorers()
    True
    >>> load_scorer("aesthetic-v9")
    Traceback (most recent call last):
    ...
    sdclip.errors.ScorerError: scorer 'aesthetic-v9': not registered; available: aesthetic, clip, hpsv2, pickscore
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from ..errors import ScorerError
from .base import Scorer

# name -> "module:Class": a new metric is its module plus one line here
_BUILTIN: dict[str, str] = {
    "clip": "sdclip.scoring.clip_scorer:ClipScorer",
    "aesthetic": "sdclip.scoring.aesthetic:AestheticScorer",
    "pickscore": "sdclip.scoring.pickscore:PickScoreScorer",
    "hpsv2": "sdclip.scoring.hpsv2:HpsV2Scorer",
}
_registered: dict[str, type[Scorer] | str] = dict(_BUILTIN)
_lock = threading.Lock()


def register_scorer(name: str, cls: type[Scorer], *, replace: bool = False) -> None:
    """Make ``cls`` (a ``Scorer`` subclass with ``from_pretrained``) loadable as ``load_scorer(name, ...)``.

    Raises:
        ScorerError: ``name`` is taken (pass ``replace=True``), or ``cls`` is not a ``Scorer`` subclass.
    """
    if not isinstance(name, str) or not name:
        raise ScorerError(f"scorer name: expected a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise ScorerError(f"scorer '{name}': expected a subclass of sdclip.scoring.base.Scorer, got {cls!r}")
    with _lock:
        if name in _registered and not replace:
            raise ScorerError(f"scorer '{name}': already registered; pass replace=True to replace it")
        _registered[name] = cls


def unregister_scorer(name: str) -> None:
    """Forget a scorer registered with ``register_scorer`` (a built-in name goes back to the built-in)."""
    with _lock:
        if name not in _registered:
            raise ScorerError(f"scorer '{name}': not registered")
        if name in _BUILTIN:
            _registered[name] = _BUILTIN[name]
        else:
            del _registered[name]


def available_scorers() -> list[str]:
    """Registered scorer names, sorted."""
    with _lock:
        return sorted(_registered)


def scorer_class(name: str) -> type[Scorer]:
    """The class registered as ``name`` (imported on first use)."""
    with _lock:
        entry = _registered.get(name)
    if entry is None:
        raise ScorerError(f"scorer '{name}': not registered; available: {', '.join(available_scorers())}")
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)
    return entry


def load_scorer(name: str = "clip", source: Any = None, **options: Any) -> Scorer:
    """Load the scorer registered as ``name`` from ``source`` (its default model when None).

    Args:
        name: a registered name (``available_scorers()``); ``"clip"`` is ``ClipScorer``.
        source: what the scorer's ``from_pretrained`` takes (a hub id, folder or file for CLIP).
        **options: its ``from_pretrained`` options (device, dtype, batch_size, exif_transpose, ...).

    Example:
        >>> import tempfile
        >>> from sdclip.testing import random_clip_model, save_clip_folder
        >>> scorer = load_scorer("clip", save_clip_folder(random_clip_model(), tempfile.mkdtemp()), device="cpu")
        >>> type(scorer).__name__
        'ClipScorer'
    """
    cls = scorer_class(name)
    return cls.from_pretrained(**options) if source is None else cls.from_pretrained(source, **options)
