"""Load a T5 text encoder (SD3's ``text_encoder_3``, Flux's ``text_encoder_2``) and its tokenizer.

T5-XXL holds 4.7B parameters, so its weights are read straight into the requested dtype: the safetensors
header is parsed here and each tensor is read with a plain file read (no memory map, whose touched pages
would count towards the process's resident memory) into its final buffer when the file already has the
dtype, else into one reused scratch buffer that is converted; the model is built on the meta device and
takes the tensors as they are (``load_state_dict(assign=True)``). Peak resident memory is the weights in
the target dtype plus the largest single tensor in the file's dtype.

Sources: a ``T5EncoderModel`` folder (``config.json`` + safetensors, sharded or not), a standalone file
in transformers' key layout (ComfyUI's ``t5xxl_fp16.safetensors``), or the ``text_encoders.t5xxl.transformer.``
part of an SD3.5 single-file checkpoint; a file's config is inferred from its tensor shapes.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelSourceError
from . import checkpoint as ckpt
from .building import materialise

if TYPE_CHECKING:
    import torch

__all__ = ["SD35_T5_PREFIX", "infer_t5_config", "load_t5", "load_t5_tokenizer", "read_safetensors_as"]

SD35_T5_PREFIX = "text_encoders.t5xxl.transformer."
_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")


def read_safetensors_as(
    path: Path, *, dtype: torch.dtype, prefix: str = "", device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` whose names start with ``prefix`` (removed), each converted to ``dtype`` as read.

    Example:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> path = Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_file({"a.x": torch.ones(2), "b": torch.zeros(1)}, str(path))
        >>> read_safetensors_as(path, dtype=torch.bfloat16, prefix="a.")
        {'x': tensor([1., 1.], dtype=torch.bfloat16)}
    """
    import torch

    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
            start = 8 + length
            wanted = sorted(((key, info) for key, info in header.items() if key != "__metadata__" and key.startswith(prefix)),
                            key=lambda item: item[1]["data_offsets"][0])  # fmt: skip
            stored = {key: getattr(torch, _DTYPES[info["dtype"]]) for key, info in wanted}
            converting = [end - begin for key, info in wanted if stored[key] != dtype for begin, end in [info["data_offsets"]]]
            scratch = torch.empty(max(converting, default=0), dtype=torch.uint8)  # one buffer for every conversion
            out = {}
            for key, info in wanted:
                begin, end = info["data_offsets"]
                same = stored[key] == dtype
                raw = torch.empty(end - begin, dtype=torch.uint8) if same else scratch[: end - begin]
                handle.seek(start + begin)
                if handle.readinto(memoryview(raw.numpy())) != end - begin:
                    raise ValueError(f"tensor '{key}' is cut short")
                tensor = raw.view(stored[key]).reshape(info["shape"])
                out[key[len(prefix):]] = (tensor if same else tensor.to(dtype=dtype)).to(device)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, struct.error) as error:
        raise ModelSourceError(
            f"checkpoint '{path}': not a readable safetensors file of float tensors ({type(error).__name__}: {error})"
        ) from error
    return out


def infer_t5_config(state_dict: dict[str, Any], *, name: str = "checkpoint") -> dict:
    """A ``T5Config`` dict for an encoder's tensors (transformers' key layout), from their shapes.

    Example:
        >>> import torch
        >>> from sdclip.testing_mmdit import tiny_t5_encoder
        >>> config = infer_t5_config(tiny_t5_encoder(vocab_size=200).state_dict())
        >>> config["d_model"], config["num_heads"], config["num_layers"], config["feed_forward_proj"]
        (384, 6, 2, 'gated-gelu')
    """
    embedding = state_dict.get("shared.weight", state_dict.get("encoder.embed_tokens.weight"))
    bias = state_dict.get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    if embedding is None or bias is None:
        raise ModelSourceError(
            f"checkpoint '{name}': no T5 encoder inside (expected 'shared.weight' and "
            "'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', transformers' T5EncoderModel "
            f"layout, or the same under '{SD35_T5_PREFIX}')"
        )
    layers = 1 + max(int(m.group(1)) for key in state_dict if (m := _BLOCK.match(key)))
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state_dict
    wi = state_dict["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"]
    heads = int(bias.shape[1])
    return {
        "vocab_size": int(embedding.shape[0]), "d_model": int(embedding.shape[1]), "num_layers": layers,
        "num_heads": heads, "d_kv": int(state_dict["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]) // heads,
        "d_ff": int(wi.shape[0]), "relative_attention_num_buckets": int(bias.shape[0]),
        "feed_forward_proj": "gated-gelu" if gated else "relu", "is_encoder_decoder": False,
    }  # fmt: skip


def load_t5(
    source: str | Path, *, device: torch.device, dtype: torch.dtype, trainable: bool = False, prefix: str | None = None
) -> Any:
    """A ``T5EncoderModel`` from a folder or a ``.safetensors`` file, loaded straight into ``dtype``.

    ``prefix`` (a file only): where its tensors live; default: none, or ``SD35_T5_PREFIX`` when the file
    has tensors under it.

    Example:
        >>> import tempfile, torch
        >>> from sdclip.testing_mmdit import tiny_t5_encoder
        >>> folder = tempfile.mkdtemp()
        >>> tiny_t5_encoder(vocab_size=200).save_pretrained(folder)
        >>> load_t5(folder, device=torch.device("cpu"), dtype=torch.bfloat16).dtype
        torch.bfloat16
    """
    from transformers import T5Config, T5EncoderModel

    path = Path(source)
    name = str(source)
    if path.is_dir():
        files, pickled = ckpt.weight_files(path, allow_pickle=False)
        state_dict = {}
        for file in files:
            state_dict.update(read_safetensors_as(file, dtype=dtype))
        config = {**infer_t5_config(state_dict, name=name), **_folder_config(path)}
    elif path.is_file() and path.suffix.lower() == ".safetensors":
        if prefix is None:
            prefix = SD35_T5_PREFIX if any(k.startswith(SD35_T5_PREFIX) for k in ckpt.safetensors_keys(path)) else ""
        state_dict = read_safetensors_as(path, dtype=dtype, prefix=prefix)
        config = infer_t5_config(state_dict, name=name)
    else:
        raise ModelSourceError(
            f"t5 '{source}': expected a T5EncoderModel folder or a .safetensors file, found "
            f"{'a file of another kind' if path.exists() else 'nothing at that path'}"
        )
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("decoder.") and k != "lm_head.weight"}
    embedding = state_dict.get("shared.weight", state_dict.get("encoder.embed_tokens.weight"))
    state_dict.setdefault("shared.weight", embedding)  # tied: files keep one or both names
    state_dict.setdefault("encoder.embed_tokens.weight", embedding)
    model = materialise(T5EncoderModel, T5Config(**config), state_dict, name=name, device=device, dtype=dtype,
                        trainable=trainable)  # fmt: skip
    model.encoder.embed_tokens = model.shared  # assign=True loaded two tensors; tie them again as transformers does
    return model


def _folder_config(folder: Path) -> dict:
    config = ckpt.read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    keep = ("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "feed_forward_proj", "layer_norm_epsilon",
            "relative_attention_num_buckets", "relative_attention_max_distance", "dense_act_fn", "is_gated_act")
    return {k: v for k, v in config.items() if k in keep}


def load_t5_tokenizer(folder: str | Path | None, *, needed_by: str) -> Any:
    """The T5 tokenizer in ``folder`` (``tokenizer.json`` or ``spiece.model``); ``needed_by`` names the encoder.

    Raises:
        ModelSourceError: no folder, or no tokenizer files in it (the message says which folder to pass).

    Example:
        >>> load_t5_tokenizer(None, needed_by="t5 't5xxl_fp16.safetensors'")
        Traceback (most recent call last):
        ...
        sdclip.errors.ModelSourceError: t5 't5xxl_fp16.safetensors': no T5 tokenizer given; pass t5_tokenizer= a folder with tokenizer.json or spiece.model (a SD3 pipeline's tokenizer_3/, Flux's tokenizer_2/)
    """
    path = Path(folder) if folder is not None else None
    if path is None or not ((path / "tokenizer.json").is_file() or (path / "spiece.model").is_file()):
        found = "no T5 tokenizer given" if path is None else f"'{folder}' holds no tokenizer.json or spiece.model"
        raise ModelSourceError(
            f"{needed_by}: {found}; pass t5_tokenizer= a folder with tokenizer.json or spiece.model "
            "(a SD3 pipeline's tokenizer_3/, Flux's tokenizer_2/)"
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
