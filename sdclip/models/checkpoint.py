"""Reading CLIP weights from files: key layouts, lazy safetensors reads, and configs inferred from shapes.

Every state dict that leaves this module is in one *canonical* layout, whatever wrote the file:

- text tower keys without a prefix, as transformers 5 saves ``CLIPTextModel``
  (``embeddings.token_embedding.weight``, ``encoder.layers.0...``, ``final_layer_norm.weight``);
- ``text_projection.weight`` when the checkpoint has a text projection;
- vision tower keys under ``vision_model.`` plus ``visual_projection.weight`` and ``logit_scale``
  (full CLIP models only).

Hub checkpoints written by transformers 4 carry a ``text_model.`` prefix, single-file SD checkpoints
carry ``cond_stage_model.transformer.`` (SD 1.x) or the OpenCLIP layout (SDXL's second encoder); all are
mapped here, and the legacy ``position_ids`` buffers are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelSourceError, PickleRefusedError

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
ATTENTION_HEAD_WIDTH = 64  # every CLIP text and vision tower uses 64-wide heads

_TEXT_PREFIXES = ("text_model.",)
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
_SD1_PREFIXES = ("cond_stage_model.transformer.", SDXL_CLIP_L_PREFIX)
_IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a safetensors file, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as error:  # safetensors raises several types for a damaged header
        raise ModelSourceError(
            f"checkpoint '{path}': not a readable safetensors file ({type(error).__name__}: {error})"
        ) from error


def read_safetensors(path: Path, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Read only ``keys`` from a safetensors file (the rest of the file is never loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in keys}
    except Exception as error:
        raise ModelSourceError(f"checkpoint '{path}': could not read tensors ({type(error).__name__}: {error})") from error


def pickle_refusal(name: str | Path) -> PickleRefusedError:
    """The one refusal of a pickle file without ``allow_pickle`` (also raised before downloading one)."""
    return PickleRefusedError(
        f"checkpoint '{name}': pickle files ({', '.join(PICKLE_SUFFIXES)}) can run code when loaded; "
        "pass allow_pickle=True (CLI: --allow-pickle) if you trust it, or convert it to .safetensors"
    )


def read_pickle(path: Path, *, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """Load a pickle checkpoint with ``torch.load(weights_only=True)``, only when allowed.

    A pickle that holds anything but tensors and plain containers (code, custom classes) is refused
    with one line; torch's own multi-line explanation and protocol warning are not shown.
    """
    if not allow_pickle:
        raise pickle_refusal(path)
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 ...": noise beside the error below
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelSourceError(
            f"checkpoint '{path}': holds objects other than tensors (code or custom classes), which "
            "sdclip's safe loader does not run; convert it to .safetensors where you trust it"
        ) from error
    except Exception as error:
        reason = " ".join(str(error).split())[:200]
        raise ModelSourceError(f"checkpoint '{path}': not a loadable torch checkpoint ({reason})") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # Lightning / LDM .ckpt files nest the weights
    if not isinstance(loaded, dict):
        raise ModelSourceError(f"checkpoint '{path}': expected a state dict, found {type(loaded).__name__}")
    return loaded


def strip_text_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a text-encoder state dict with or without ``text_model.`` to the canonical layout."""
    canonical = {}
    for key, tensor in state_dict.items():
        if _IGNORED_KEYS.search(key):
            continue
        for prefix in _TEXT_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        canonical[key] = tensor
    return canonical


def canonical_clip_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical layout for a state dict saved by CLIPModel, CLIPTextModel(WithProjection) or SD 1.x."""
    return strip_text_prefix(sd1_text_state_dict(state_dict) or state_dict)


def sd1_text_state_dict(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The SD 1.x text encoder of a single-file checkpoint, via diffusers' own prefix map."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

    return convert_ldm_clip_checkpoint(checkpoint)


def text_keys_of(keys: Iterable[str], prefixes: tuple[str, ...] = _SD1_PREFIXES) -> list[str]:
    """The keys of a single-file checkpoint that belong to the text encoder under ``prefixes``."""
    return [key for key in keys if key.startswith(prefixes)]


def is_sdxl_checkpoint(keys: Iterable[str]) -> bool:
    """Whether a single-file checkpoint's keys hold SDXL's second (OpenCLIP bigG) text encoder."""
    return any(key.startswith(SDXL_OPENCLIP_PREFIX) for key in keys)


def openclip_text_state_dict(checkpoint: dict[str, torch.Tensor], *, prefix: str) -> dict[str, torch.Tensor]:
    """An OpenCLIP text tower (SDXL's second encoder, SD 2.x) converted to canonical transformers keys.

    Uses diffusers' ``convert_open_clip_checkpoint``, which needs the width only to split the fused
    ``in_proj`` attention weights; it is read from the token embedding.
    """
    from types import SimpleNamespace

    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    width = int(checkpoint[prefix + "token_embedding.weight"].shape[1])
    stand_in = SimpleNamespace(config=SimpleNamespace(hidden_size=width))
    return strip_text_prefix(convert_open_clip_checkpoint(stand_in, checkpoint, prefix=prefix))


def sdxl_text_encoders(checkpoint: dict[str, torch.Tensor], *, name: str) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """(config, canonical state dict) of both text encoders in an SDXL single-file checkpoint.

    The first (clip-vit-large-patch14's tower, ``quick_gelu``) sits under ``SDXL_CLIP_L_PREFIX`` in
    transformers' names, the second (OpenCLIP bigG, ``gelu``, with its projection) under
    ``SDXL_OPENCLIP_PREFIX`` in OpenCLIP's. Configs are inferred from shapes.
    """
    first = canonical_clip_state_dict({k: v for k, v in checkpoint.items() if k.startswith(SDXL_CLIP_L_PREFIX)})
    if "embeddings.token_embedding.weight" not in first:
        raise ModelSourceError(
            f"checkpoint '{name}': SDXL checkpoint without its first text encoder (no keys under "
            f"'{SDXL_CLIP_L_PREFIX}text_model.'); SDXL conditions on both encoders"
        )
    if SDXL_OPENCLIP_PREFIX + "token_embedding.weight" not in checkpoint:
        raise ModelSourceError(
            f"checkpoint '{name}': SDXL checkpoint's second text encoder is incomplete (no "
            f"'{SDXL_OPENCLIP_PREFIX}token_embedding.weight'); re-export the checkpoint"
        )
    second = openclip_text_state_dict(checkpoint, prefix=SDXL_OPENCLIP_PREFIX)
    return [
        (infer_text_config(first, hidden_act="quick_gelu"), first),
        (infer_text_config(second, hidden_act="gelu"), second),
    ]


def _layer_count(keys: Iterable[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = [int(match.group(1)) for key in keys if (match := pattern.match(key))]
    return max(indices) + 1 if indices else 0


def infer_text_config(state_dict: dict[str, torch.Tensor], *, hidden_act: str = "quick_gelu") -> dict:
    """A ``CLIPTextConfig`` dict inferred from a canonical text state dict's tensor shapes.

    Heads are ``hidden // 64`` (CLIP's head width). ``hidden_act`` is not visible in shapes: OpenAI's
    towers (SD 1.x, clip-vit-*) use ``quick_gelu``, OpenCLIP's (SD 2.x, SDXL bigG) ``gelu``.
    """
    try:
        vocab_size, hidden = state_dict["embeddings.token_embedding.weight"].shape
        positions = state_dict["embeddings.position_embedding.weight"].shape[0]
        intermediate = state_dict["encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise ModelSourceError(
            f"text encoder weights: tensor {error.args[0]!r} is missing, so this is not a CLIP text encoder"
        ) from error
    config = {
        "vocab_size": int(vocab_size),
        "hidden_size": int(hidden),
        "intermediate_size": int(intermediate),
        "num_hidden_layers": _layer_count(state_dict, "encoder.layers."),
        "num_attention_heads": int(hidden) // ATTENTION_HEAD_WIDTH,
        "max_position_embeddings": int(positions),
        "hidden_act": hidden_act,
        "projection_dim": int(hidden),
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }
    if "text_projection.weight" in state_dict:
        config["projection_dim"] = int(state_dict["text_projection.weight"].shape[0])
    return config


def infer_vision_config(state_dict: dict[str, torch.Tensor]) -> dict:
    """A ``CLIPVisionConfig`` dict inferred from canonical ``vision_model.`` tensor shapes."""
    prefix = "vision_model."
    try:
        hidden, _, patch, _ = state_dict[prefix + "embeddings.patch_embedding.weight"].shape
        positions = state_dict[prefix + "embeddings.position_embedding.weight"].shape[0]
        intermediate = state_dict[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise ModelSourceError(
            f"vision tower weights: tensor {error.args[0]!r} is missing, so this is not a CLIP vision tower"
        ) from error
    grid = round((int(positions) - 1) ** 0.5)
    return {
        "hidden_size": int(hidden),
        "intermediate_size": int(intermediate),
        "num_hidden_layers": _layer_count(state_dict, prefix + "encoder.layers."),
        "num_attention_heads": int(hidden) // ATTENTION_HEAD_WIDTH,
        "patch_size": int(patch),
        "image_size": grid * int(patch),
        "hidden_act": "quick_gelu",
    }


def read_json(path: Path) -> dict:
    """Read a JSON config file (an object), with an error that names the file when it is broken."""
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"config '{path}': not a readable JSON file ({error})") from error
    if not isinstance(loaded, dict):
        raise ModelSourceError(f"config '{path}': expected a JSON object, found a JSON {_json_kind(loaded)}")
    return loaded


def _json_kind(value: object) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


# -- model folders --------------------------------------------------------------------------------


def is_text_key(key: str) -> bool:
    """Whether a canonical key belongs to the text tower (or its projection), not the vision tower."""
    return not key.startswith(("vision_model.", "visual_projection", "logit_scale"))


def weight_files(folder: Path, *, allow_pickle: bool) -> tuple[list[Path], bool]:
    """The weight files of a transformers model folder: (files, are_pickles)."""
    safetensors = sorted(folder.glob("*.safetensors"))
    if (folder / "model.safetensors").is_file():
        safetensors = [folder / "model.safetensors"]
    elif (index := folder / "model.safetensors.index.json").is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        safetensors = [folder / shard for shard in shards]
    if safetensors:
        return safetensors, False
    pickles = sorted(folder.glob("pytorch_model*.bin"))
    if pickles:
        if not allow_pickle:
            read_pickle(pickles[0], allow_pickle=False)  # raises the standard refusal
        return pickles, True
    raise ModelSourceError(f"model folder '{folder}': no weights found (expected model.safetensors)")


def read_folder_weights(folder: Path, *, allow_pickle: bool, want: Any = None) -> dict[str, torch.Tensor]:
    """Canonical state dict of a model folder; ``want(key)`` picks which raw keys to read."""
    files, pickled = weight_files(folder, allow_pickle=allow_pickle)
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        if pickled:
            tensors = read_pickle(file, allow_pickle=True)
            state_dict.update({k: v for k, v in tensors.items() if want is None or want(k)})
        else:
            keys = [k for k in safetensors_keys(file) if want is None or want(k)]
            state_dict.update(read_safetensors(file, keys))
    return canonical_clip_state_dict(state_dict)


# -- what the tensors hold ------------------------------------------------------------------------


_FULL_CHECK_ELEMENTS = 1 << 16  # tensors up to this size are checked value by value
_SAMPLE_BLOCKS, _SAMPLE_BLOCK = 8, 4096  # larger ones: 8 contiguous blocks of 4096 values, spread evenly


def check_finite(tensors: Mapping[str, Any], *, source: str, exhaustive: bool = False) -> None:
    """Refuse weights holding NaN or infinity, naming the first such tensor.

    Tensors up to 2^16 values are checked value by value; larger ones, unless ``exhaustive``, in eight
    contiguous blocks of 4096 values spread over the tensor. That catches what goes wrong in practice
    (weights NaN throughout after a diverged run or a failed conversion) cheaply. Measured on a
    123M-parameter text encoder (clip-vit-large-patch14's, float32, 2 CPU cores): checking every value
    cost 1.8 s on a 2.8 s load (safetensors maps the file lazily and a full check reads all of it),
    the blocks 0.06 s on a 1.3 s load (under 5%). A lone NaN inside a large tensor can therefore pass;
    pass ``exhaustive=True`` to rule that out. Non-tensors and integer tensors are skipped.

    Args:
        tensors: name -> tensor (a state dict, or a textual-inversion file's vectors).
        source: the file or model, for the message.
        exhaustive: check every value of every tensor.

    Raises:
        ModelSourceError: a tensor holds a NaN or an infinite value.

    Example:
        >>> import torch
        >>> check_finite({"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")])}, source="x.safetensors")
        Traceback (most recent call last):
        ...
        sdclip.errors.ModelSourceError: checkpoint 'x.safetensors': tensor 'b' holds NaN or infinite values; the file is damaged or was saved after a diverged training run
    """
    import torch

    floats = {
        name: tensor
        for name, tensor in tensors.items()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.device.type != "meta"
    }
    if not floats:
        return
    # A NaN or inf anywhere makes a sum non-finite, and one sum per block is the cheapest pass over the
    # values; only a non-finite sum (or a finite-valued block whose float32 sum overflows) is looked at closely.
    sums = torch.stack([block.sum(dtype=torch.float32) for t in floats.values() for block in _blocks(t, exhaustive)])
    if bool(torch.isfinite(sums).all()):
        return
    for name, tensor in floats.items():
        if not all(bool(torch.isfinite(block).all()) for block in _blocks(tensor, exhaustive)):
            raise ModelSourceError(
                f"checkpoint '{source}': tensor '{name}' holds NaN or infinite values; "
                "the file is damaged or was saved after a diverged training run"
            )


def _blocks(tensor: torch.Tensor, exhaustive: bool) -> list[torch.Tensor]:
    """The parts of ``tensor`` that ``check_finite`` looks at: all of it, or evenly spread blocks."""
    flat = tensor.reshape(-1)
    if exhaustive or flat.numel() <= _FULL_CHECK_ELEMENTS:
        return [flat]
    last = flat.numel() - _SAMPLE_BLOCK
    starts = (round(last * i / (_SAMPLE_BLOCKS - 1)) for i in range(_SAMPLE_BLOCKS))
    return [flat[start : start + _SAMPLE_BLOCK] for start in starts]
