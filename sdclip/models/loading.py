"""Build CLIP text encoders and full CLIP models from any source ``sdclip.models.sources`` resolves.

Models come back in eval mode, without gradients, with SDPA attention, on the requested device and
dtype. Weights are read with safetensors (lazily: only the tensors needed); pickles only with
``allow_pickle=True`` and then with ``torch.load(weights_only=True)``. ``load_text_encoders`` loads every
encoder a pipeline conditions with (both of SDXL's, from a pipeline folder or a single file).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import checkpoint as ckpt
from .devices import resolve_device, resolve_dtype
from ..errors import ModelSourceError
from .sources import DEFAULT_MODEL, ResolvedSource, model_index, pipeline_text_encoders, resolve_source
from .tokenizer import SHIPPED_TOKENIZER_DIR, copy_tokenizer, has_tokenizer_files, load_tokenizer

if TYPE_CHECKING:
    import torch
    from transformers import CLIPModel, CLIPTokenizer

_TOKENIZER_FOR = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}
_OPENCLIP_PAD_TOKEN = "!"  # OpenCLIP pads with id 0 ("!"), and so does SDXL's tokenizer_2


@dataclass
class LoadedTextEncoder:
    """A text encoder with the tokenizer that goes with it.

    Attributes:
        model: ``CLIPTextModel``, or ``CLIPTextModelWithProjection`` when the checkpoint has a text
            projection (a CLIPModel, SDXL's second encoder).
        tokenizer: the folder's own tokenizer, else sdclip's shipped clip-vit-large-patch14 one (padding
            with ``!`` for SDXL's second encoder, as its ``tokenizer_2`` does).
        source: where it came from (None for modules taken from a live diffusers pipeline).
    """

    model: Any
    tokenizer: CLIPTokenizer
    source: ResolvedSource | None


@dataclass
class LoadedTextEncoders:
    """Every CLIP text encoder a source conditions its UNet with, in the pipeline's order.

    Attributes:
        encoders: one for SD 1.x/2.x (and the SDXL refiner, which has only the second encoder), two
            for SDXL: clip-vit-large-patch14's text tower, then OpenCLIP bigG's with its projection.
        sdxl: whether the source is an SDXL pipeline (penultimate hidden states, pooled pair).
        force_zeros_for_empty_prompt: the pipeline's setting of that name (SDXL only): a missing
            negative prompt becomes zeros instead of the encoded empty prompt.
    """

    encoders: list[LoadedTextEncoder]
    sdxl: bool = False
    force_zeros_for_empty_prompt: bool = False


def _weight_files(folder: Path, *, allow_pickle: bool) -> tuple[list[Path], bool]:
    """The weight files of a transformers model folder: (files, are_pickles)."""
    safetensors = sorted(folder.glob("*.safetensors"))
    if (folder / "model.safetensors").is_file():
        safetensors = [folder / "model.safetensors"]
    elif (index := folder / "model.safetensors.index.json").is_file():
        shards = sorted(set(ckpt.read_json(index).get("weight_map", {}).values()))
        safetensors = [folder / shard for shard in shards]
    if safetensors:
        return safetensors, False
    pickles = sorted(folder.glob("pytorch_model*.bin"))
    if pickles:
        if not allow_pickle:
            ckpt.read_pickle(pickles[0], allow_pickle=False)  # raises the standard refusal
        return pickles, True
    raise ModelSourceError(f"model folder '{folder}': no weights found (expected model.safetensors)")


def _read_folder_weights(folder: Path, *, allow_pickle: bool, want: Any = None) -> dict[str, torch.Tensor]:
    """Canonical state dict of a model folder; ``want(key)`` picks which raw keys to read."""
    files, pickled = _weight_files(folder, allow_pickle=allow_pickle)
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        if pickled:
            tensors = ckpt.read_pickle(file, allow_pickle=True)
            state_dict.update({k: v for k, v in tensors.items() if want is None or want(k)})
        else:
            keys = [k for k in ckpt.safetensors_keys(file) if want is None or want(k)]
            state_dict.update(ckpt.read_safetensors(file, keys))
    return ckpt.canonical_clip_state_dict(state_dict)


def _is_text_key(key: str) -> bool:
    return not key.startswith(("vision_model.", "visual_projection", "logit_scale"))


def _check_keys(name: str, expected: set[str], found: set[str]) -> None:
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {', '.join(unexpected[:3])})")
        raise ModelSourceError(f"checkpoint '{name}': weights do not fit a CLIP model: {'; '.join(parts)}")


def _materialise(model_cls: Any, config: Any, state_dict: dict, *, name: str, device: Any, dtype: Any) -> Any:
    """Instantiate ``model_cls`` without random init, load ``state_dict`` strictly, move, freeze."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = model_cls._from_config(config, attn_implementation="sdpa")
    _check_keys(name, set(model.state_dict()), set(state_dict))
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def build_text_model(
    config: dict, state_dict: dict, *, name: str, device: torch.device, dtype: torch.dtype
) -> Any:
    """A ``CLIPTextModel`` (or ``...WithProjection`` if the state dict has ``text_projection.weight``).

    ``state_dict`` is in sdclip's canonical layout (no ``text_model.`` prefix).
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text_config = CLIPTextConfig(**{k: v for k, v in config.items() if k not in {"architectures", "model_type"}})
    if "text_projection.weight" in state_dict:
        state_dict = {
            (k if k == "text_projection.weight" else "text_model." + k): v for k, v in state_dict.items()
        }
        return _materialise(CLIPTextModelWithProjection, text_config, state_dict, name=name, device=device, dtype=dtype)
    return _materialise(CLIPTextModel, text_config, state_dict, name=name, device=device, dtype=dtype)


def _text_from_clip_folder(folder: Path, name: str, *, allow_pickle: bool) -> tuple[dict, dict]:
    config = ckpt.read_json(folder / "config.json")
    if "text_config" in config:  # a full CLIPModel: take its text tower and text projection
        text_config = dict(config["text_config"])
        text_config.setdefault("projection_dim", config.get("projection_dim", 512))
        state_dict = _read_folder_weights(folder, allow_pickle=allow_pickle, want=_is_text_key)
    else:
        text_config = config
        state_dict = _read_folder_weights(folder, allow_pickle=allow_pickle)
    if "embeddings.token_embedding.weight" not in state_dict:
        raise ModelSourceError(f"model '{name}': {folder} holds no CLIP text encoder weights")
    return text_config, state_dict


def _text_from_single_file(path: Path, name: str, *, allow_pickle: bool, raw: dict | None = None) -> tuple[dict, dict]:
    """(config, canonical state dict) of a single file's text encoder; ``raw``: its tensors, if already read."""
    if raw is None and path.suffix.lower() == ".safetensors":
        keys = ckpt.safetensors_keys(path)
        sd1_keys = ckpt.text_keys_of(keys)
        wanted = sd1_keys or [k for k in keys if _is_text_key(k)]
        raw = ckpt.read_safetensors(path, wanted)
    elif raw is None:
        raw = ckpt.read_pickle(path, allow_pickle=allow_pickle)
    state_dict = ckpt.canonical_clip_state_dict(raw)
    state_dict = {k: v for k, v in state_dict.items() if _is_text_key(k)}
    if "embeddings.token_embedding.weight" not in state_dict:
        raise ModelSourceError(
            f"checkpoint '{name}': no CLIP text encoder inside (expected keys under 'cond_stage_model.transformer.' "
            "or a CLIP state dict); a UNet- or VAE-only file cannot be used"
        )
    return ckpt.infer_text_config(state_dict), state_dict


def load_text_encoder(
    source: str | os.PathLike = DEFAULT_MODEL,
    *,
    subfolder: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
    allow_pickle: bool = False,
) -> LoadedTextEncoder:
    """Load a CLIP text encoder and its tokenizer from a hub id, folder, pipeline folder or single file.

    Args:
        source: hub id, CLIP model folder, diffusers pipeline folder or ``.safetensors`` checkpoint.
        subfolder: in a pipeline folder, which encoder (``text_encoder`` or ``text_encoder_2``).
        device: default CUDA when available, else CPU.
        dtype: default float16 on CUDA, float32 elsewhere.
        local_files_only: never touch the network (default: ``HF_HUB_OFFLINE``).
        allow_pickle: allow ``.ckpt``/``.pt``/``.bin`` files (loaded with ``weights_only=True``).

    Example:
        >>> loaded = load_text_encoder("weights/clip-vit-large-patch14")  # doctest: +SKIP
        >>> loaded.model.config.hidden_size  # doctest: +SKIP
        768
    """
    resolved = resolve_source(source, local_files_only=local_files_only)
    device_ = resolve_device(device)
    dtype_ = resolve_dtype(dtype, device_)
    return _load_encoder(resolved, subfolder, device=device_, dtype=dtype_, allow_pickle=allow_pickle)


def _load_encoder(
    resolved: ResolvedSource, subfolder: str | None, *, device: torch.device, dtype: torch.dtype, allow_pickle: bool
) -> LoadedTextEncoder:
    folder = _text_encoder_folder(resolved, subfolder)
    if folder is not None:
        config, state_dict = _text_from_clip_folder(folder, resolved.name, allow_pickle=allow_pickle)
    else:
        config, state_dict = _text_from_single_file(resolved.path, resolved.name, allow_pickle=allow_pickle)
    model = build_text_model(config, state_dict, name=resolved.name, device=device, dtype=dtype)
    return LoadedTextEncoder(model, _tokenizer_of(resolved, subfolder), resolved)


def load_text_encoders(
    source: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
    allow_pickle: bool = False,
) -> LoadedTextEncoders:
    """Load every text encoder (and tokenizer) a source conditions with: one for SD 1.x/2.x, two for SDXL.

    SDXL is recognised by ``text_encoder_2`` in a pipeline folder (its ``model_index.json`` or the
    folder itself), or by keys under ``conditioner.embedders.1.model.`` in a single-file checkpoint.
    A single file carries no configs: they are inferred from tensor shapes (heads = width // 64;
    ``quick_gelu`` for the clip-vit-large-patch14 tower, ``gelu`` for OpenCLIP bigG) and the OpenCLIP
    layout of the second encoder is converted with diffusers' own code. The second encoder's
    tokenizer pads with ``!`` (id 0), as SDXL's ``tokenizer_2`` does.

    Args:
        source: hub id, CLIP model folder, diffusers pipeline folder or single-file checkpoint.
        device: default CUDA when available, else CPU.
        dtype: default float16 on CUDA, float32 elsewhere.
        local_files_only: never touch the network (default: ``HF_HUB_OFFLINE``).
        allow_pickle: allow ``.ckpt``/``.pt``/``.bin`` files (loaded with ``weights_only=True``).

    Raises:
        ModelSourceError: a pipeline folder lacks a text encoder its layout needs, has a non-CLIP
            text encoder (Flux's T5, SD3's third encoder), or a file's weights do not fit.

    Example:
        >>> loaded = load_text_encoders("path/to/stable-diffusion-xl-base-1.0")  # doctest: +SKIP
        >>> [e.model.config.hidden_size for e in loaded.encoders], loaded.sdxl  # doctest: +SKIP
        ([768, 1280], True)
    """
    resolved = resolve_source(source, local_files_only=local_files_only)
    device_ = resolve_device(device)
    dtype_ = resolve_dtype(dtype, device_)
    if resolved.kind == "pipeline":
        index = model_index(resolved)
        parts = pipeline_text_encoders(resolved, index)
        options = dict(device=device_, dtype=dtype_, allow_pickle=allow_pickle)
        encoders = [_load_encoder(resolved, part, **options) for part in parts]
        if "text_encoder_2" not in parts:
            return LoadedTextEncoders(encoders)
        force_zeros = bool(index.get("force_zeros_for_empty_prompt", True))  # diffusers' default for SDXL
        return LoadedTextEncoders(encoders, sdxl=True, force_zeros_for_empty_prompt=force_zeros)
    if resolved.kind == "single_file":
        return _single_file_encoders(resolved, device=device_, dtype=dtype_, allow_pickle=allow_pickle)
    return LoadedTextEncoders([_load_encoder(resolved, None, device=device_, dtype=dtype_, allow_pickle=allow_pickle)])


def _single_file_encoders(
    resolved: ResolvedSource, *, device: torch.device, dtype: torch.dtype, allow_pickle: bool
) -> LoadedTextEncoders:
    """The text encoder(s) of a single-file checkpoint: SDXL's two, or SD 1.x's one."""
    path, name = resolved.path, resolved.name
    sdxl_prefixes = (ckpt.SDXL_CLIP_L_PREFIX, ckpt.SDXL_OPENCLIP_PREFIX)
    if path.suffix.lower() == ".safetensors":
        keys = ckpt.safetensors_keys(path)
        sdxl = ckpt.is_sdxl_checkpoint(keys)
        raw = ckpt.read_safetensors(path, ckpt.text_keys_of(keys, sdxl_prefixes)) if sdxl else None
    else:
        raw = ckpt.read_pickle(path, allow_pickle=allow_pickle)  # read once: pickles cannot be read in part
    if raw is None or not ckpt.is_sdxl_checkpoint(raw):
        config, state_dict = _text_from_single_file(path, name, allow_pickle=allow_pickle, raw=raw)
        model = build_text_model(config, state_dict, name=name, device=device, dtype=dtype)
        return LoadedTextEncoders([LoadedTextEncoder(model, load_tokenizer(), resolved)])
    models = [
        build_text_model(config, state_dict, name=name, device=device, dtype=dtype)
        for config, state_dict in ckpt.sdxl_text_encoders(raw, name=name)
    ]
    tokenizers = [load_tokenizer(), _openclip_tokenizer()]
    encoders = [LoadedTextEncoder(model, tok, resolved) for model, tok in zip(models, tokenizers, strict=True)]
    return LoadedTextEncoders(encoders, sdxl=True, force_zeros_for_empty_prompt=True)  # diffusers' default


def _openclip_tokenizer() -> CLIPTokenizer:
    """sdclip's shipped tokenizer, padding with ``!`` (id 0) as SDXL's ``tokenizer_2`` does.

    Like ``load_tokenizer``, each call returns its own copy (textual inversion adds tokens to it).
    """
    return copy_tokenizer(_openclip_tokenizer_cached())


@functools.lru_cache(maxsize=1)
def _openclip_tokenizer_cached() -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER_DIR), pad_token=_OPENCLIP_PAD_TOKEN)


def _text_encoder_folder(resolved: ResolvedSource, subfolder: str | None) -> Path | None:
    """The folder holding the text encoder's config and weights (None for a single file)."""
    if resolved.kind == "pipeline":
        part = subfolder or "text_encoder"
        if not (resolved.path / part / "config.json").is_file():
            raise ModelSourceError(f"model '{resolved.name}': pipeline folder has no {part}/config.json")
        return resolved.path / part
    if resolved.kind == "clip_folder":
        return resolved.path / subfolder if subfolder else resolved.path
    return None


def _tokenizer_of(resolved: ResolvedSource, subfolder: str | None) -> CLIPTokenizer:
    """The source's own tokenizer when it has one, else sdclip's shipped clip-vit-large-patch14 one.

    The stand-in for a pipeline's missing ``tokenizer_2`` pads with ``!``, as SDXL's does.
    """
    folder = None
    if resolved.kind == "pipeline":
        folder = resolved.path / _TOKENIZER_FOR.get(subfolder or "text_encoder", "tokenizer")
    elif resolved.kind == "clip_folder":
        folder = resolved.path / subfolder if subfolder else resolved.path
    if folder is not None and has_tokenizer_files(folder):
        return load_tokenizer(folder)
    if resolved.kind == "pipeline" and subfolder == "text_encoder_2":
        return _openclip_tokenizer()
    return load_tokenizer()


def tokenizer_for_source(
    source: str | os.PathLike | None = None,
    *,
    subfolder: str | None = None,
    local_files_only: bool | None = None,
) -> CLIPTokenizer:
    """The tokenizer a model source would use, without loading any weights (None: the shipped one).

    Example:
        >>> tokenizer_for_source().model_max_length
        77
    """
    if source is None:
        return load_tokenizer()
    return _tokenizer_of(resolve_source(source, local_files_only=local_files_only), subfolder)


def load_clip_model(
    source: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
    allow_pickle: bool = False,
) -> tuple[CLIPModel, CLIPTokenizer, dict | None]:
    """Load a full ``CLIPModel`` (both towers, projections, ``logit_scale``) for scoring.

    Returns:
        ``(model, tokenizer, preprocessor_config)``; the last is the folder's
        ``preprocessor_config.json`` as a dict, or None when there is none.

    Example:
        >>> model, tokenizer, preprocess = load_clip_model("weights/clip-vit-large-patch14")  # doctest: +SKIP
    """
    from transformers import CLIPConfig
    from transformers import CLIPModel as _CLIPModel

    resolved = resolve_source(source, local_files_only=local_files_only)
    device_ = resolve_device(device)
    dtype_ = resolve_dtype(dtype, device_)
    preprocessor = None
    if resolved.kind == "clip_folder":
        config = ckpt.read_json(resolved.path / "config.json")
        if "vision_config" not in config:
            raise ModelSourceError(
                f"model '{resolved.name}': {config.get('architectures') or 'this model'} has no vision tower; "
                "scoring needs a full CLIP model (CLIPModel)"
            )
        state_dict = _read_folder_weights(resolved.path, allow_pickle=allow_pickle)
        if (resolved.path / "preprocessor_config.json").is_file():
            preprocessor = ckpt.read_json(resolved.path / "preprocessor_config.json")
    elif resolved.kind == "single_file":
        if resolved.path.suffix.lower() == ".safetensors":
            raw = ckpt.read_safetensors(resolved.path, ckpt.safetensors_keys(resolved.path))
        else:
            raw = ckpt.read_pickle(resolved.path, allow_pickle=allow_pickle)
        state_dict = ckpt.canonical_clip_state_dict(raw)
        if "vision_model.embeddings.patch_embedding.weight" not in state_dict:
            raise ModelSourceError(
                f"checkpoint '{resolved.name}': no CLIP vision tower inside; scoring needs a full CLIP model"
            )
        text = ckpt.infer_text_config({k: v for k, v in state_dict.items() if _is_text_key(k)})
        config = {
            "text_config": text,
            "vision_config": ckpt.infer_vision_config(state_dict),
            "projection_dim": text["projection_dim"],
        }
    else:
        raise ModelSourceError(
            f"model '{resolved.name}': a diffusers pipeline has no CLIP vision tower; scoring needs a full CLIP "
            "model such as openai/clip-vit-large-patch14"
        )
    clip_config = CLIPConfig(**{k: v for k, v in config.items() if k not in {"architectures", "model_type"}})
    prefixed = {
        (k if k.startswith(("vision_model.", "visual_projection", "text_projection", "logit_scale")) else "text_model." + k): v
        for k, v in state_dict.items()
    }
    model = _materialise(_CLIPModel, clip_config, prefixed, name=resolved.name, device=device_, dtype=dtype_)
    return model, _tokenizer_of(resolved, None), preprocessor
