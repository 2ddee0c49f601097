"""Reading a metric's own weight file (an aesthetic head, an HPS v2 checkpoint): a local path or a hub file.

A metric whose weights are one file (not a CLIP folder or hub id, which ``models/`` resolves) reads it
here. The file is a local path or a file in a hub repository, ``hf://owner/name/path/in/repo``
(``models.hub_files``: the Hugging Face cache, ``HF_HUB_OFFLINE``, a download otherwise); with no source,
the metric's published file. ``.safetensors`` are read as such; pickles (``.pth``/``.pt``/``.ckpt``/``.bin``)
with ``torch.load(weights_only=True)`` (``models.checkpoint.read_pickle``), only when the metric allows
them: a hub pickle is refused before it is downloaded. Every failure is one line naming the metric, what
was tried and where the published weights are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SdclipError, WeightsNotAvailableError
from ..models import checkpoint as ckpt
from ..models.hub_files import HUB_SCHEME, download_hub_file, parse_hub_file

if TYPE_CHECKING:
    import torch


def read_metric_weights(
    metric: str, path: str | os.PathLike | None, *, allow_pickle: bool, published: str,
    default: str | None = None, local_files_only: bool | None = None,
) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, or a one-line error naming the metric, what was tried and where the weights live.

    Args:
        metric: the metric's registry name (for messages).
        path: a local ``.safetensors`` or pickle file, or a hub file ``hf://owner/name/path/in/repo``
            (``owner/name/path`` without the scheme when no such local file exists); None: ``default``.
        allow_pickle: accept pickle files (loaded with ``torch.load(weights_only=True)``).
        published: where the published weights are (for messages).
        default: the metric's published weights as a hub file (None: a source must be given).
        local_files_only: never touch the network for a hub file (default: ``HF_HUB_OFFLINE``).

    Raises:
        WeightsNotAvailableError: no source, a missing local file, or a hub file neither cached nor reachable.
        ModelSourceError: the hub has no such repository or file; a malformed ``hf://`` reference.
        PickleRefusedError: a pickle without ``allow_pickle`` (a hub one before any download).

    Example:
        >>> read_metric_weights("aesthetic", "missing.pth", allow_pickle=True, published="hf://owner/name/w.pth")
        Traceback (most recent call last):
        ...
        sdclip.errors.WeightsNotAvailableError: metric 'aesthetic': weights file 'missing.pth' not found; the published weights are hf://owner/name/w.pth: pass that, or a downloaded copy's path
    """
    source = default if path is None else path
    if source is None:
        raise WeightsNotAvailableError(f"metric '{metric}': no path given; the published weights are {published}: "
                                       "pass that, or a downloaded copy's path")
    try:
        hub = parse_hub_file(source)
    except SdclipError as error:
        raise type(error)(f"metric '{metric}': {error}; the published weights are {published}") from error
    if hub is None:
        local = Path(source).expanduser()
        if not local.is_file():
            raise WeightsNotAvailableError(f"metric '{metric}': weights file '{source}' not found; the published "
                                           f"weights are {published}: pass that, or a downloaded copy's path")
    else:
        pickled = Path(hub.filename).suffix.lower() != ".safetensors"
        if pickled and not allow_pickle:
            raise ckpt.pickle_refusal(hub)  # before downloading a file that would be refused
        try:
            local = download_hub_file(hub, local_files_only=local_files_only)
        except SdclipError as error:
            tried = "" if str(source).startswith(HUB_SCHEME) else f"no local file '{source}', and as a hub file "
            raise type(error)(f"metric '{metric}': {tried}{error}; the published weights are {published}") from error
    if local.suffix.lower() == ".safetensors":
        return ckpt.read_safetensors(local, ckpt.safetensors_keys(local))
    return ckpt.read_pickle(local, allow_pickle=allow_pickle)
