"""The CLIP tokenizer that ships with sdclip, and loading one from a model folder.

sdclip carries ``vocab.json`` and ``merges.txt`` identical to ``openai/clip-vit-large-patch14``'s (see
``scripts/make_tokenizer_data.py``), so tokenizing needs no download and no weights. A model folder that
brings its own tokenizer files (an SD 2.x folder pads with ``!``, say) uses those instead.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

SHIPPED_TOKENIZER_DIR = Path(__file__).resolve().parent / "_tokenizer_data"
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def has_tokenizer_files(folder: str | Path) -> bool:
    """Whether ``folder`` holds a CLIP tokenizer (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``).

    Example:
        >>> has_tokenizer_files(SHIPPED_TOKENIZER_DIR)
        True
    """
    folder = Path(folder)
    return (folder / "tokenizer.json").is_file() or all((folder / name).is_file() for name in TOKENIZER_FILES)


@functools.lru_cache(maxsize=8)
def _load_cached(folder: str) -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder)


def copy_tokenizer(tokenizer: CLIPTokenizer) -> CLIPTokenizer:
    """An independent copy of a CLIP tokenizer (adding tokens to it leaves the original alone).

    ``copy.deepcopy`` alone loses the word-end fix transformers' CLIPTokenizer patches onto its backend
    decoder (``cat</w>`` would decode as ``cat</w>`` instead of ``cat``); it is re-applied here.

    Example:
        >>> copy_tokenizer(load_tokenizer()).decode([2368, 1929])
        'cat dog'
    """
    duplicate = copy.deepcopy(tokenizer)
    rewrap = getattr(duplicate, "_wrap_decode_method_backend_tokenizer", None)
    if rewrap is not None:
        rewrap()
    return duplicate


def load_tokenizer(folder: str | Path | None = None) -> CLIPTokenizer:
    """Load a CLIP tokenizer from ``folder``, or sdclip's shipped one when ``folder`` is None.

    Files are parsed once per folder and cached; each call returns its own copy, so adding tokens
    to it (diffusers' ``load_textual_inversion`` does) never leaks into other users.

    Args:
        folder: a folder with tokenizer files, or None for the shipped clip-vit-large-patch14 tokenizer.

    Returns:
        A ``transformers.CLIPTokenizer`` with ``model_max_length`` 77.

    Example:
        >>> tokenizer = load_tokenizer()
        >>> tokenizer("a photo of a cat").input_ids
        [49406, 320, 1125, 539, 320, 2368, 49407]
    """
    path = SHIPPED_TOKENIZER_DIR if folder is None else Path(folder)
    tokenizer = copy_tokenizer(_load_cached(str(path.resolve())))
    if tokenizer.model_max_length > 10_000:  # a folder whose config forgot the limit: CLIP's is 77
        tokenizer.model_max_length = 77
    return tokenizer
