"""Load the CLIP text encoders (and their tokenizers) a source conditions with.

Models come back in eval mode, without gradients, with SDPA attention, on the requested device and
dtype (``LoadOptions(trainable=True)``: in train mode, with gradients). Weights are read with
safetensors (lazily: only the tensors needed); pickles only with ``allow_pickle=True`` and then with
``torch.load(weights_only=True)``. Which encoders a source has, and with which tokenizer each, comes
from its family (``sdclip.models.families``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelSourceError
from . import checkpoint as ckpt
from .building import build_text_model
from .families import FAMILIES, ModelFamily, family_for_width, pipeline_family, single_file_family, slot_for
from .options import LoadOptions
from .sources import DEFAULT_MODEL, ResolvedSource, model_index, resolve_source
from .tokenizer import SHIPPED_TOKENIZER_DIR, copy_tokenizer, has_tokenizer_files, load_tokenizer

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTokenizer


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
        family: the source's model family (its rules as data); by default SDXL or SD 1.x per ``sdxl``.
        t5: SD3 / Flux: the T5 encoder and its tokenizer (``encoders`` holds the CLIP ones); None
            without one (SD3 loaded without ``text_encoder_3``: that part is zeros).
        t5_width: SD3: the width of the T5 part (the transformer's ``joint_attention_dim``), for zeros.
    """

    encoders: list[LoadedTextEncoder]
    sdxl: bool = False
    force_zeros_for_empty_prompt: bool = False
    family: ModelFamily | None = None
    t5: LoadedTextEncoder | None = None
    t5_width: int | None = None

    def __post_init__(self) -> None:
        if self.family is None:
            self.family = FAMILIES["sdxl" if self.sdxl else "sd1"]


def _text_from_clip_folder(folder: Path, name: str, *, allow_pickle: bool) -> tuple[dict, dict]:
    config = ckpt.read_json(folder / "config.json")
    if "text_config" in config:  # a full CLIPModel: take its text tower and text projection
        if not isinstance(config["text_config"], dict):
            raise ModelSourceError(f"config '{folder / 'config.json'}': 'text_config' is not a JSON object")
        text_config = dict(config["text_config"])
        text_config.setdefault("projection_dim", config.get("projection_dim", 512))
        state_dict = ckpt.read_folder_weights(folder, allow_pickle=allow_pickle, want=ckpt.is_text_key)
    else:
        text_config = config
        state_dict = ckpt.read_folder_weights(folder, allow_pickle=allow_pickle)
    if "embeddings.token_embedding.weight" not in state_dict:
        raise ModelSourceError(f"model '{name}': {folder} holds no CLIP text encoder weights")
    return text_config, state_dict


def _text_from_single_file(path: Path, name: str, *, allow_pickle: bool, raw: dict | None = None) -> tuple[dict, dict]:
    """(config, canonical state dict) of a single file's text encoder; ``raw``: its tensors, if already read."""
    if raw is None and path.suffix.lower() == ".safetensors":
        keys = ckpt.safetensors_keys(path)
        sd1_keys = ckpt.text_keys_of(keys)
        wanted = sd1_keys or [k for k in keys if ckpt.is_text_key(k)]
        raw = ckpt.read_safetensors(path, wanted)
    elif raw is None:
        raw = ckpt.read_pickle(path, allow_pickle=allow_pickle)
    state_dict = ckpt.canonical_clip_state_dict(raw)
    state_dict = {k: v for k, v in state_dict.items() if ckpt.is_text_key(k)}
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
    trainable: bool = False,
) -> LoadedTextEncoder:
    """Load a CLIP text encoder and its tokenizer from a hub id, folder, pipeline folder or single file.

    Args:
        source: hub id, CLIP model folder, diffusers pipeline folder or ``.safetensors`` checkpoint.
        subfolder: in a pipeline folder, which encoder (``text_encoder`` or ``text_encoder_2``).
        device, dtype, local_files_only, allow_pickle, trainable: see ``LoadOptions``.

    Example:
        >>> import tempfile
        >>> from sdclip.testing import TINY_TEXT, random_text_encoder
        >>> folder = tempfile.mkdtemp()
        >>> random_text_encoder(TINY_TEXT).save_pretrained(folder)
        >>> loaded = load_text_encoder(folder, device="cpu")
        >>> loaded.model.config.hidden_size, loaded.model.training
        (128, False)
    """
    options = LoadOptions(device, dtype, local_files_only, allow_pickle, trainable)
    resolved = resolve_source(source, local_files_only=options.local_files_only)
    return load_encoder(resolved, subfolder, options)


def load_encoder(resolved: ResolvedSource, subfolder: str | None, options: LoadOptions) -> LoadedTextEncoder:
    """One text encoder of a resolved source (``subfolder`` in a pipeline), with its tokenizer."""
    device = options.torch_device()
    dtype = options.torch_dtype(device)
    folder = _text_encoder_folder(resolved, subfolder)
    if folder is not None:
        config, state_dict = _text_from_clip_folder(folder, resolved.name, allow_pickle=options.allow_pickle)
    else:
        config, state_dict = _text_from_single_file(resolved.path, resolved.name, allow_pickle=options.allow_pickle)
    tokenizer = tokenizer_of(resolved, subfolder)
    model = build_text_model(config, state_dict, name=resolved.name, device=device, dtype=dtype,
                             trainable=options.trainable, tokenizer=tokenizer)  # fmt: skip
    return LoadedTextEncoder(model, tokenizer, resolved)


def load_text_encoders(
    source: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
    allow_pickle: bool = False,
    trainable: bool = False,
) -> LoadedTextEncoders:
    """Load every text encoder (and tokenizer) a source conditions with: one for SD 1.x/2.x, two for SDXL.

    SDXL is recognised by ``text_encoder_2`` in a pipeline folder (its ``model_index.json`` or the
    folder itself), or by keys under ``conditioner.embedders.1.model.`` in a single-file checkpoint
    (see ``sdclip.models.families``). A single file carries no configs: they are inferred from tensor
    shapes (heads = width // 64; ``quick_gelu`` for the clip-vit-large-patch14 tower, ``gelu`` for
    OpenCLIP bigG) and the OpenCLIP layout of the second encoder is converted with diffusers' own code.
    The second encoder's tokenizer pads with ``!`` (id 0), as SDXL's ``tokenizer_2`` does.

    Args:
        source: hub id, CLIP model folder, diffusers pipeline folder or single-file checkpoint.
        device, dtype, local_files_only, allow_pickle, trainable: see ``LoadOptions``.

    Raises:
        ModelSourceError: a pipeline folder lacks a text encoder its layout needs, has a non-CLIP
            text encoder (Flux's T5, SD3's third encoder), or a file's weights do not fit.

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> from sdclip.testing import TINY_TEXT, TINY_TEXT_2, random_text_encoder
        >>> folder = Path(tempfile.mkdtemp())  # an SDXL pipeline's text side: two encoders, no tokenizers
        >>> random_text_encoder(TINY_TEXT).save_pretrained(folder / "text_encoder")
        >>> random_text_encoder(TINY_TEXT_2, projection=True).save_pretrained(folder / "text_encoder_2")
        >>> index = {"text_encoder": ["transformers", "CLIPTextModel"],
        ...          "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}
        >>> _ = (folder / "model_index.json").write_text(json.dumps(index))
        >>> loaded = load_text_encoders(folder, device="cpu")
        >>> [e.model.config.hidden_size for e in loaded.encoders], loaded.family.name
        ([128, 192], 'sdxl')
    """
    return load_encoders(source, LoadOptions(device, dtype, local_files_only, allow_pickle, trainable))


def load_encoders(
    source: str | os.PathLike, options: LoadOptions, *, subfolder: str | None = None
) -> LoadedTextEncoders:
    """``load_text_encoders`` with its options as one ``LoadOptions``; ``subfolder``: that encoder alone."""
    resolved = resolve_source(source, local_files_only=options.local_files_only)
    options.torch_dtype()  # a bad device or dtype fails before any weights are read
    if subfolder is not None:
        return LoadedTextEncoders([load_encoder(resolved, subfolder, options)])
    if resolved.kind == "pipeline":
        index = model_index(resolved)
        family, parts = pipeline_family(resolved, index)
        if family.name in ("sd3", "flux"):  # sdclip.models.mmdit loads these (CLIP and T5), above this module
            raise ModelSourceError(
                f"model '{resolved.name}': a {family.title} pipeline; load it with TextConditioner.from_pretrained "
                "or sdclip.models.mmdit.load_conditioning_encoders, which also load its T5 encoder"
            )
        encoders = [load_encoder(resolved, part, options) for part in parts]
        if not family.pipeline_takes_pooled:
            family = family_for_width(int(encoders[0].model.config.hidden_size))
            return LoadedTextEncoders(encoders, family=family)
        force_zeros = bool(index.get("force_zeros_for_empty_prompt", family.force_zeros_default))
        return LoadedTextEncoders(encoders, sdxl=True, force_zeros_for_empty_prompt=force_zeros, family=family)
    if resolved.kind == "single_file":
        return _single_file_encoders(resolved, options)
    encoder = load_encoder(resolved, None, options)
    return LoadedTextEncoders([encoder], family=family_for_width(int(encoder.model.config.hidden_size)))


def _single_file_encoders(resolved: ResolvedSource, options: LoadOptions) -> LoadedTextEncoders:
    """The text encoder(s) of a single-file checkpoint: SDXL's two, or SD 1.x's one."""
    path, name = resolved.path, resolved.name
    device = options.torch_device()
    build = dict(name=name, device=device, dtype=options.torch_dtype(device), trainable=options.trainable)
    sdxl = FAMILIES["sdxl"]
    if path.suffix.lower() == ".safetensors":
        keys = ckpt.safetensors_keys(path)
        prefixes = tuple(slot.single_file_prefix for slot in sdxl.encoders)
        raw = ckpt.read_safetensors(path, ckpt.text_keys_of(keys, prefixes)) if single_file_family(keys) is sdxl else None
    else:
        raw = ckpt.read_pickle(path, allow_pickle=options.allow_pickle)  # read once: pickles cannot be read in part
    if raw is None or single_file_family(raw) is not sdxl:
        config, state_dict = _text_from_single_file(path, name, allow_pickle=options.allow_pickle, raw=raw)
        tokenizer = load_tokenizer()
        model = build_text_model(config, state_dict, tokenizer=tokenizer, **build)
        return LoadedTextEncoders([LoadedTextEncoder(model, tokenizer, resolved)], family=family_for_width(config["hidden_size"]))
    tokenizers = [_stand_in_tokenizer(slot.pad_token) for slot in sdxl.encoders]
    models = [
        build_text_model(config, state_dict, tokenizer=tokenizer, **build)
        for (config, state_dict), tokenizer in zip(ckpt.sdxl_text_encoders(raw, name=name), tokenizers, strict=True)
    ]
    encoders = [LoadedTextEncoder(model, tok, resolved) for model, tok in zip(models, tokenizers, strict=True)]
    return LoadedTextEncoders(encoders, sdxl=True, force_zeros_for_empty_prompt=sdxl.force_zeros_default, family=sdxl)


def _stand_in_tokenizer(pad_token: str | None) -> CLIPTokenizer:
    """sdclip's shipped tokenizer, padding with ``pad_token`` (None: its own), as a copy of its own.

    Like ``load_tokenizer``, each call returns its own copy (textual inversion adds tokens to it).
    """
    return load_tokenizer() if pad_token is None else copy_tokenizer(_padded_tokenizer(pad_token))


@functools.lru_cache(maxsize=2)
def _padded_tokenizer(pad_token: str) -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER_DIR), pad_token=pad_token)


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


def tokenizer_of(resolved: ResolvedSource, subfolder: str | None) -> CLIPTokenizer:
    """The source's own tokenizer when it has one, else sdclip's shipped clip-vit-large-patch14 one.

    The stand-in for a pipeline's missing ``tokenizer_2`` pads with ``!``, as SDXL's does.
    """
    folder = None
    slot = slot_for(FAMILIES["sdxl"], subfolder)
    if resolved.kind == "pipeline":
        folder = resolved.path / slot.tokenizer
    elif resolved.kind == "clip_folder":
        folder = resolved.path / subfolder if subfolder else resolved.path
    if folder is not None and has_tokenizer_files(folder):
        return load_tokenizer(folder)
    if resolved.kind == "pipeline":
        return _stand_in_tokenizer(slot.pad_token)
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
    return tokenizer_of(resolve_source(source, local_files_only=local_files_only), subfolder)
