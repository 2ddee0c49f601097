"""One resolver for every kind of model source: hub id, CLIP folder, diffusers pipeline folder, single file.

``resolve_source`` only looks (at the file system, or the hub cache); it loads no weights. The loaders in
``sdclip.models.text_encoders`` and ``sdclip.models.clip_models`` then read what it found.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .checkpoint import PICKLE_SUFFIXES, read_json
from ..errors import ModelSourceError, WeightsNotAvailableError

DEFAULT_MODEL = "openai/clip-vit-large-patch14"
DEMO_MODEL = "sdclip:shapes"
# models that ship inside the package: name -> folder (a CLIP folder; the shipped tokenizer is used)
PACKAGED_MODELS = {DEMO_MODEL: Path(__file__).resolve().parent / "_demo" / "shapes"}
SourceKind = Literal["clip_folder", "pipeline", "single_file"]

_HUB_ID = r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$"
_CLIP_REPO_FILES = [
    "config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
    "preprocessor_config.json",
]  # fmt: skip
_PIPELINE_REPO_FILES = [
    "model_index.json",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
    "tokenizer/*", "tokenizer_2/*",
]  # fmt: skip


@dataclass(frozen=True)
class ResolvedSource:
    """Where a model's files are, and how they are laid out.

    Attributes:
        kind: ``"clip_folder"`` (a ``config.json`` of a CLIP model), ``"pipeline"`` (a diffusers folder
            with ``model_index.json``) or ``"single_file"`` (a ``.safetensors`` or pickle checkpoint).
        path: the folder or file.
        name: what the user passed, for error messages.
    """

    kind: SourceKind
    path: Path
    name: str


def _hub_offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _not_available(repo_id: str, error: Exception) -> WeightsNotAvailableError:
    folder = f"weights/{repo_id.split('/')[-1]}"
    return WeightsNotAvailableError(
        f"model '{repo_id}': weights are not in the local Hugging Face cache and the hub cannot be reached "
        f"({type(error).__name__}); on a machine with network run `hf download {repo_id} --local-dir {folder}` "
        f"and pass '{folder}' as the model"
    )


_PROBE_TIMEOUT_S = 2.0


def hub_reachable(timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``, or the HTTPS proxy if one is set) opens in time.

    huggingface_hub retries an unreachable hub five times with back-off (~25 s, a multi-line warning
    each time) before it gives up; one short probe first lets sdclip go straight to the local cache
    or to its own one-line error. Name resolution runs in a daemon thread so that a hanging DNS lookup
    is bounded by ``timeout`` too. The answer is remembered for the process.

    Example:
        >>> isinstance(hub_reachable(), bool)
        True
    """
    from huggingface_hub import constants

    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(k)), None)
    return _can_connect(proxy or constants.ENDPOINT, timeout)


@functools.lru_cache(maxsize=4)
def _can_connect(url: str, timeout: float) -> bool:
    import socket
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else "http://" + url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="sdclip-hub-probe")
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def download_from_hub(repo_id: str, *, local_files_only: bool | None = None) -> Path:
    """Fetch (or find in the cache) the files sdclip needs from a hub repository.

    Pipeline repositories (those with ``model_index.json``) get their text encoders and tokenizers only;
    CLIP repositories get config, safetensors weights, tokenizer and preprocessor files. Honours
    ``HF_HUB_OFFLINE`` and ``local_files_only``, and treats a hub that ``hub_reachable`` cannot
    connect to as offline (the cache, or one clear error, within seconds).

    Example:
        >>> download_from_hub("someone/not-cached", local_files_only=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sdclip.errors.WeightsNotAvailableError: model 'someone/not-cached': weights are not in the local ... cache ...
    """
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    offline = _hub_offline(local_files_only) or not hub_reachable()
    try:
        if offline:  # whatever snapshot the cache holds; raises when there is none
            return Path(snapshot_download(repo_id, local_files_only=True))
        try:
            hf_hub_download(repo_id, "model_index.json")
            patterns = _PIPELINE_REPO_FILES
        except EntryNotFoundError:
            patterns = _CLIP_REPO_FILES
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except RepositoryNotFoundError as error:
        raise ModelSourceError(f"model '{repo_id}': no such repository on the hub, and no such local path") from error
    except Exception as error:  # offline mode, no cache entry, connection errors: all mean "no weights here"
        raise _not_available(repo_id, error) from error


def _classify_folder(folder: Path, name: str) -> SourceKind:
    if (folder / "model_index.json").is_file():
        return "pipeline"
    if (folder / "config.json").is_file():
        config = read_json(folder / "config.json")
        model_type = config.get("model_type", "")
        if not isinstance(model_type, str):  # transformers would fail on it later, or tokens would ignore it
            raise ModelSourceError(
                f"model '{name}': {folder / 'config.json'} has \"model_type\": {json.dumps(model_type)}, expected a "
                "string such as \"clip_text_model\" (or no such key)"
            )
        architectures = config.get("architectures") or []
        architectures = [arch for arch in architectures if isinstance(arch, str)] if isinstance(architectures, list) else []
        if model_type.startswith("clip") or any(arch.startswith("CLIP") for arch in architectures):
            return "clip_folder"
        raise ModelSourceError(
            f"model '{name}': {folder / 'config.json'} describes {architectures or model_type or 'an unknown model'}, "
            "expected a CLIP model (CLIPModel, CLIPTextModel or CLIPTextModelWithProjection; \"architectures\" "
            "names the class)"
        )
    if (folder / "text_encoder").is_dir():
        return "pipeline"
    raise ModelSourceError(
        f"model '{name}': folder has no config.json or model_index.json; expected a CLIP model folder, "
        "a diffusers pipeline folder, or a .safetensors checkpoint"
    )


def resolve_source(source: str | os.PathLike, *, local_files_only: bool | None = None) -> ResolvedSource:
    """Find out what kind of model source ``source`` is.

    Args:
        source: a local folder or file, a hub id such as ``openai/clip-vit-large-patch14``, or a model
            that ships with sdclip (``sdclip:shapes``, the small trained demo model).
        local_files_only: never touch the network (default: the ``HF_HUB_OFFLINE`` variable).

    Raises:
        ModelSourceError: missing path, unknown layout, unsupported file type.
        WeightsNotAvailableError: a hub id whose files are not cached while the hub is unreachable.

    Example:
        >>> resolve_source("no/such-model", local_files_only=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sdclip.errors.WeightsNotAvailableError: model 'no/such-model': weights are not in the local ...
    """
    name = os.fspath(source)
    if name.startswith("sdclip:"):
        return packaged_model(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return ResolvedSource(_classify_folder(path, name), path, name)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".safetensors" or suffix in PICKLE_SUFFIXES:
            return ResolvedSource("single_file", path, name)
        raise ModelSourceError(
            f"model '{name}': unsupported file type '{suffix or path.name}'; expected .safetensors "
            f"(or a pickle {', '.join(PICKLE_SUFFIXES)} with allow_pickle=True)"
        )
    parent = Path(name).parent
    if not re.match(_HUB_ID, name) or (parent != Path(".") and parent.is_dir()):
        raise ModelSourceError(f"model '{name}': no such file or folder (and not a hub id of the form 'owner/name')")
    folder = download_from_hub(name, local_files_only=local_files_only)
    return ResolvedSource(_classify_folder(folder, name), folder, name)


def packaged_model(name: str) -> ResolvedSource:
    """The folder of a model that ships inside sdclip (``sdclip:shapes``), checked to be complete.

    Example:
        >>> packaged_model("sdclip:shapes").path.name
        'shapes'
    """
    folder = PACKAGED_MODELS.get(name)
    if folder is None:
        raise ModelSourceError(f"model '{name}': no such packaged model; expected one of {', '.join(PACKAGED_MODELS)}")
    missing = [file for file in ("config.json", "model.safetensors") if not (folder / file).is_file()]
    if missing:
        raise ModelSourceError(
            f"model '{name}': {', '.join(missing)} missing from {folder} (an install without package data?); "
            "reinstall sdclip, or rebuild the model with `python scripts/train_demo_model.py`"
        )
    return ResolvedSource("clip_folder", folder, name)


# -- pipeline folders ---------------------------------------------------------------------------


def model_index(resolved: ResolvedSource) -> dict:
    """A pipeline folder's ``model_index.json`` ({} when it has none)."""
    path = resolved.path / "model_index.json"
    return read_json(path) if path.is_file() else {}
