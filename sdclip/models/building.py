"""Turn a canonical state dict and a config into a transformers CLIP model, checking the weights fit.

Every loader ends here: the config is checked (a CLIP text tower needs 77 positions; its vocabulary
must cover its tokenizer's), then the tensors (names, shapes, floating dtype, finite values), then the
model is built without random initialisation, moved, and frozen for inference or left trainable.
Each mismatch is one ``ModelSourceError`` line naming the tensor, what was expected and what was found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ModelSourceError
from .checkpoint import check_finite

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTokenizer

CLIP_CONTEXT_LENGTH = 77  # every CLIP tokenizer pads and truncates to 77 tokens
_CONFIG_META_KEYS = {"architectures", "model_type"}


def check_keys(name: str, expected: set[str], found: set[str]) -> None:
    """Refuse a state dict whose tensor names are not exactly the model's, listing a few of each."""
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {', '.join(unexpected[:3])})")
        raise ModelSourceError(f"checkpoint '{name}': weights do not fit a CLIP model: {'; '.join(parts)}")


def check_tensors(name: str, expected: dict[str, Any], state_dict: dict[str, Any]) -> None:
    """Refuse tensors of another shape than the model's, or of a non-floating dtype."""
    for key, reference in expected.items():
        tensor = state_dict[key]
        if not tensor.is_floating_point():
            raise ModelSourceError(
                f"checkpoint '{name}': tensor '{key}' holds {str(tensor.dtype).removeprefix('torch.')} values, "
                "expected floating-point weights (float32, float16 or bfloat16)"
            )
        if tuple(tensor.shape) != tuple(reference.shape):
            raise ModelSourceError(
                f"checkpoint '{name}': tensor '{key}' has shape {tuple(tensor.shape)}, expected "
                f"{tuple(reference.shape)} (from the config and the other tensors); the weights do not fit together"
            )


def check_text_config(name: str, config: dict, tokenizer: CLIPTokenizer | None = None) -> None:
    """Refuse a text tower with fewer than 77 positions, or a vocabulary smaller than its tokenizer's."""
    positions = config.get("max_position_embeddings", CLIP_CONTEXT_LENGTH)
    if not isinstance(positions, int) or positions < CLIP_CONTEXT_LENGTH:
        raise ModelSourceError(
            f"model '{name}': text encoder has {positions} position embeddings, expected at least "
            f"{CLIP_CONTEXT_LENGTH} (CLIP encodes 77 tokens); the weights or config.json are damaged"
        )
    vocab = config.get("vocab_size")
    if tokenizer is not None and isinstance(vocab, int) and vocab < len(tokenizer):
        raise ModelSourceError(
            f"model '{name}': text encoder has a vocabulary of {vocab} tokens, smaller than its tokenizer's "
            f"{len(tokenizer)}; token ids past {vocab - 1} would have no embedding"
        )


def make_config(config_cls: Any, config: dict, *, name: str) -> Any:
    """``config_cls(**config)`` without the keys only ``config.json`` carries, with a one-line error."""
    try:
        return config_cls(**{k: v for k, v in config.items() if k not in _CONFIG_META_KEYS})
    except Exception as error:  # transformers validates values with several exception types
        raise ModelSourceError(f"model '{name}': config does not describe a CLIP model ({_one_line(error)})") from error


def materialise(
    model_cls: Any, config: Any, state_dict: dict, *, name: str, device: torch.device, dtype: torch.dtype,
    trainable: bool = False,
) -> Any:
    """Instantiate ``model_cls`` without random init, load ``state_dict`` strictly, move, freeze or not.

    Args:
        trainable: False (inference): ``eval()`` mode, no parameter requires gradients. True:
            ``train()`` mode, every parameter requires gradients.
    """
    from accelerate import init_empty_weights

    try:
        with init_empty_weights(include_buffers=False):
            model = model_cls._from_config(config, attn_implementation="sdpa")
    except Exception as error:  # e.g. a width that the heads do not divide
        raise ModelSourceError(f"model '{name}': config does not describe a CLIP model ({_one_line(error)})") from error
    expected = model.state_dict()
    check_keys(name, set(expected), set(state_dict))
    check_tensors(name, expected, state_dict)
    check_finite(state_dict, source=name)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model = model.to(device=device, dtype=dtype)
    return model.train().requires_grad_(True) if trainable else model.eval().requires_grad_(False)


def build_text_model(
    config: dict, state_dict: dict, *, name: str, device: torch.device, dtype: torch.dtype,
    trainable: bool = False, tokenizer: CLIPTokenizer | None = None,
) -> Any:
    """A ``CLIPTextModel`` (or ``...WithProjection`` if the state dict has ``text_projection.weight``).

    ``state_dict`` is in sdclip's canonical layout (no ``text_model.`` prefix); ``tokenizer``, when
    given, must fit in the vocabulary.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    check_text_config(name, config, tokenizer)
    text_config = make_config(CLIPTextConfig, config, name=name)
    options = dict(name=name, device=device, dtype=dtype, trainable=trainable)
    if "text_projection.weight" in state_dict:
        state_dict = {
            (k if k == "text_projection.weight" else "text_model." + k): v for k, v in state_dict.items()
        }
        return materialise(CLIPTextModelWithProjection, text_config, state_dict, **options)
    return materialise(CLIPTextModel, text_config, state_dict, **options)


def _one_line(error: Exception) -> str:
    """An exception's message on one line, shortened: transformers' can span several."""
    return " ".join(str(error).split())[:200]
