"""Reading a metric's own weight file (an aesthetic head, an HPS v2 checkpoint): one missing-file error.

A metric whose weights are one file (not a CLIP folder or hub id, which ``models/`` resolves) reads it
here: ``.safetensors`` first, pickles (``.pth``/``.pt``/``.ckpt``/``.bin``) only with ``allow_pickle``
and then with ``torch.load(weights_only=True)`` (``models.checkpoint.read_pickle``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import WeightsNotAvailableError
from ..models import checkpoint as ckpt

if TYPE_CHECKING:
    import torch


def read_metric_weights(
    metric: str, path: str | os.PathLike | None, *, allow_pickle: bool, published: str
) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, or a one-line error naming the metric, the path and where the weights live.

    Args:
        metric: the metric's registry name (for messages).
        path: a ``.safetensors`` or pickle file (None: not given).
        allow_pickle: accept pickle files (loaded with ``torch.load(weights_only=True)``).
        published: where the published weights can be downloaded (for the message).

    Raises:
        WeightsNotAvailableError: ``path`` is None or not a file.
        PickleRefusedError: a pickle without ``allow_pickle``.

    Example:
        >>> read_metric_weights("aesthetic", "missing.pth", allow_pickle=True, published="https://example.org/w.pth")
        Traceback (most recent call last):
        ...
        sdclip.errors.WeightsNotAvailableError: metric 'aesthetic': weights file 'missing.pth' not found; download the published weights from https://example.org/w.pth and pass the file's path
    """
    if path is None or not Path(path).is_file():
        tried = "no path given" if path is None else f"weights file '{path}' not found"
        raise WeightsNotAvailableError(
            f"metric '{metric}': {tried}; download the published weights from {published} and pass the file's path"
        )
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return ckpt.read_safetensors(path, ckpt.safetensors_keys(path))
    return ckpt.read_pickle(path, allow_pickle=allow_pickle)
