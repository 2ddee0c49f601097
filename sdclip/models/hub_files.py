"""One file of a hub repository (a metric's weight file): ``hf://owner/name/path/in/repo``, found or downloaded.

``resolve_source`` takes whole repositories (a CLIP model, a pipeline); a metric whose weights are one file
(LAION's aesthetic head, HPS v2's checkpoint) names that file inside a repository instead. The spelling is
``huggingface_hub``'s own file-system one, models only:

- ``hf://owner/name/path/in/repo.pth`` (always the hub), ``hf://owner/name@revision/path`` for a branch,
  tag or commit;
- ``owner/name/path/in/repo.pth`` (no scheme) when no such local file exists and ``owner`` is not a local
  folder, the way a bare hub id is told from a folder.

The file goes through ``huggingface_hub.hf_hub_download``, so its cache, ``HF_HUB_OFFLINE``,
``HF_HUB_CACHE`` and ``HF_TOKEN`` work as for any hub download; a hub that ``hub_reachable`` cannot connect
to counts as offline (the cache, or one clear error, within seconds).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelSourceError, WeightsNotAvailableError
from .sources import _hub_offline, hub_reachable

HUB_SCHEME = "hf://"
_REFERENCE = re.compile(
    r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*)(?:@(?P<revision>[\w.\-]+))?/(?P<file>[^/].*)$"
)
_OTHER_REPO_TYPES = ("datasets", "spaces")


@dataclass(frozen=True)
class HubFile:
    """A file inside a hub model repository.

    Attributes:
        repo_id: ``owner/name``.
        filename: the path inside the repository (``/``-separated).
        revision: a branch, tag or commit (None: the default branch).
    """

    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HUB_SCHEME}{self.repo_id}{'@' + self.revision if self.revision else ''}/{self.filename}"

    @property
    def url(self) -> str:
        """The file's page on the hub."""
        return f"https://huggingface.co/{self.repo_id}/blob/{self.revision or 'main'}/{self.filename}"

    @property
    def download_command(self) -> str:
        """The ``hf`` command that puts the file into the local cache."""
        return f"hf download {self.repo_id} {self.filename}" + (f" --revision {self.revision}" if self.revision else "")


def parse_hub_file(reference: str | os.PathLike) -> HubFile | None:
    """The hub file ``reference`` names, or None when it is a local path.

    ``hf://`` references always name the hub; a plain string ``owner/name/file`` does when no such local
    file exists and ``owner`` is not a local folder. ``Path`` objects are always local.

    Raises:
        ModelSourceError: an ``hf://`` reference that is not ``hf://owner/name[@revision]/path``.

    Example:
        >>> parse_hub_file("hf://xswu/HPSv2/HPS_v2.1_compressed.pt")
        HubFile(repo_id='xswu/HPSv2', filename='HPS_v2.1_compressed.pt', revision=None)
        >>> str(parse_hub_file("camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth"))
        'hf://camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth'
        >>> parse_hub_file("hf://owner/name@v1.0/heads/head.safetensors").revision
        'v1.0'
        >>> parse_hub_file("head.pth") is None
        True
    """
    if not isinstance(reference, str):
        return None
    if reference.startswith(HUB_SCHEME):
        match = _REFERENCE.match(reference[len(HUB_SCHEME):])
        if match is None or match.group("repo").split("/")[0] in _OTHER_REPO_TYPES or ".." in match["file"].split("/"):
            raise ModelSourceError(
                f"weights '{reference}': expected hf://owner/name/path/in/repo (or hf://owner/name@revision/path), "
                "a file in a hub model repository"
            )
        return HubFile(match["repo"], match["file"], match["revision"])
    match = _REFERENCE.match(reference)
    if match is None or ".." in match["file"].split("/") or Path(reference).expanduser().exists() \
            or Path(reference.split("/")[0]).is_dir():
        return None
    return HubFile(match["repo"], match["file"], match["revision"])


def download_hub_file(file: HubFile, *, local_files_only: bool | None = None) -> Path:
    """The local path of ``file``: from the Hugging Face cache, else downloaded into it.

    Args:
        file: the hub file (``parse_hub_file``).
        local_files_only: never touch the network (default: the ``HF_HUB_OFFLINE`` variable).

    Raises:
        WeightsNotAvailableError: not in the cache while offline or the hub cannot be reached.
        ModelSourceError: the hub says the repository, revision or file does not exist.

    Example:
        >>> download_hub_file(HubFile("someone/not-cached", "head.pth"), local_files_only=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sdclip.errors.WeightsNotAvailableError: 'hf://someone/not-cached/head.pth': not in the local ... cache, ...
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )  # fmt: skip

    forced = _hub_offline(local_files_only)
    offline = forced or not hub_reachable()
    try:
        return Path(hf_hub_download(file.repo_id, file.filename, revision=file.revision, local_files_only=offline))
    except LocalEntryNotFoundError as error:
        why = "offline mode (HF_HUB_OFFLINE / local_files_only)" if forced else "the hub cannot be reached"
        raise WeightsNotAvailableError(
            f"'{file}': not in the local Hugging Face cache, and {why}; on a machine with network run "
            f"`{file.download_command}` (or pass the downloaded file's path)"
        ) from error
    except RepositoryNotFoundError as error:
        raise ModelSourceError(f"'{file}': no hub repository '{file.repo_id}' (or it is private or gated: "
                               "log in with `hf auth login`)") from error
    except RevisionNotFoundError as error:
        raise ModelSourceError(
            f"'{file}': hub repository '{file.repo_id}' has no revision '{file.revision or 'main'}'"
        ) from error
    except EntryNotFoundError as error:
        raise ModelSourceError(f"'{file}': hub repository '{file.repo_id}' has no file '{file.filename}'") from error
    except Exception as error:  # connection errors mid-way: the file is not here
        raise WeightsNotAvailableError(
            f"'{file}': could not be downloaded ({type(error).__name__}); on a machine with network run "
            f"`{file.download_command}` (or pass the downloaded file's path)"
        ) from error
