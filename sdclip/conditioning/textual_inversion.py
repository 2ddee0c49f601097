"""Textual-inversion embeddings: read A1111 / diffusers / SDXL files, add their tokens to an encoder.

An embedding of ``n`` vectors named ``tok`` becomes the added tokens ``tok tok_1 ... tok_{n-1}`` (as
diffusers' ``load_textual_inversion`` does), and prompts mentioning ``tok`` (or ``embedding:tok`` in
ComfyUI syntax) are expanded to all of them before tokenization.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models import checkpoint as ckpt
from ..errors import EmbeddingError
from ..prompts.syntaxes import get_syntax

if TYPE_CHECKING:
    import torch

SDXL_KEYS = ("clip_l", "clip_g")  # SDXL embeddings: one tensor per text encoder, in encoder order
_COMFY_EMBEDDING = re.compile(r"embedding:([^\s,()\[\]:]+)")
_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")


def read_embedding(path: str | Path, *, allow_pickle: bool = False) -> tuple[str, list[torch.Tensor]]:
    """Read a textual-inversion file: ``(name, vectors per text encoder)``, each ``(n, width)``.

    Formats: A1111 ``.pt`` (``string_to_param``; pickle, only with ``allow_pickle``) and ``.safetensors``
    (``emb_params``), diffusers' ``learned_embeds.safetensors`` (``{token: tensor}``, its key is the
    name), SDXL files with ``clip_l`` and ``clip_g``. Otherwise the name is the file stem. Files with
    no vectors, or NaN / infinite ones, are refused with ``EmbeddingError``.

    Example:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> path = tempfile.mkdtemp() + "/style.safetensors"
        >>> save_file({"emb_params": torch.randn(2, 768)}, path)
        >>> name, vectors = read_embedding(path)
        >>> name, vectors[0].shape
        ('style', torch.Size([2, 768]))
    """
    path = Path(path)
    if not path.is_file():
        raise EmbeddingError(f"embedding '{path}': no such file")
    if path.suffix.lower() == ".safetensors":
        tensors = ckpt.read_safetensors(path, ckpt.safetensors_keys(path))
    elif path.suffix.lower() in _SUFFIXES:
        tensors = ckpt.read_pickle(path, allow_pickle=allow_pickle)
    else:
        raise EmbeddingError(f"embedding '{path}': unsupported file type; expected .safetensors, .pt or .bin")
    name = path.stem
    if all(key in tensors for key in SDXL_KEYS):
        vectors = [tensors[key] for key in SDXL_KEYS]
    elif "emb_params" in tensors:
        vectors = [tensors["emb_params"]]
    elif isinstance(tensors.get("string_to_param"), dict):
        if not tensors["string_to_param"]:
            raise EmbeddingError(f"embedding '{path}': string_to_param is empty; expected one {{token: tensor}} entry")
        vectors = [next(iter(tensors["string_to_param"].values()))]
    elif (flat := [k for k in tensors if k.startswith("string_to_param.")]):
        vectors = [tensors[flat[0]]]
    elif len(tensors) == 1:
        name, tensor = next(iter(tensors.items()))
        vectors = [tensor]
    else:
        raise EmbeddingError(
            f"embedding '{path}': unknown layout (keys {sorted(tensors)[:5]}); expected emb_params, "
            "string_to_param, clip_l/clip_g, or a single {token: tensor}"
        )
    import torch

    vectors = [v if v.ndim == 2 else v.reshape(1, -1) for v in vectors if isinstance(v, torch.Tensor)]
    for v in vectors:
        if v.shape[0] == 0 or v.numel() == 0:
            raise EmbeddingError(f"embedding '{path}': holds 0 vectors (shape {tuple(v.shape)}); expected at least one")
        if not v.is_floating_point():
            raise EmbeddingError(f"embedding '{path}': vectors are {v.dtype}; expected floating-point vectors")
        if not torch.isfinite(v).all():
            raise EmbeddingError(f"embedding '{path}': vectors contain NaN or infinity; the file is corrupt or was saved mid-training")
    return name, [v.detach().float() for v in vectors]


def token_names(name: str, count: int) -> list[str]:
    """The tokens an ``count``-vector embedding adds, as diffusers names them.

    Example:
        >>> token_names("style", 3)
        ['style', 'style_1', 'style_2']
    """
    return [name] + [f"{name}_{i}" for i in range(1, count)]


def add_embedding(model: Any, tokenizer: Any, name: str, vectors: torch.Tensor, *, source: str = "") -> None:
    """Add ``vectors`` (n, width) to ``tokenizer`` and ``model``'s token-embedding table, in place."""
    import torch

    table = model.get_input_embeddings()
    width = table.weight.shape[1]
    if vectors.shape[1] != width:
        raise EmbeddingError(
            f"embedding '{source or name}': vectors are {vectors.shape[1]} wide but the text encoder's "
            f"token embeddings are {width} wide (an embedding for another model?)"
        )
    names = token_names(name, vectors.shape[0])
    taken = [token for token in names if token in tokenizer.get_vocab()]
    if taken:
        raise EmbeddingError(f"embedding '{source or name}': token {taken[0]!r} is already in the vocabulary; pass token=")
    tokenizer.add_tokens(names)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the new rows are overwritten below
    ids = tokenizer.convert_tokens_to_ids(names)
    with torch.no_grad():
        model.get_input_embeddings().weight[ids] = vectors.to(table.weight.device, table.weight.dtype)


def expand_textual_inversion(text: str, added: dict[str, int], *, syntax: str = "plain") -> str:
    """Expand mentions of multi-vector embeddings (``tok`` → ``tok tok_1 ...``) as diffusers does, and
    ComfyUI's ``embedding:tok`` to the tokens. ``added`` maps embedding names to vector counts; a count of 0
    marks an embedding loaded into other encoders only (SD3's bigG with a one-part file, T5): its
    ``embedding:tok`` mentions are dropped, as ComfyUI ignores an embedding whose width does not fit the encoder.

    Example:
        >>> expand_textual_inversion("a style painting", {"style": 3})
        'a style style_1 style_2 painting'
        >>> expand_textual_inversion("embedding:style.pt cat", {"style": 1}, syntax="comfy")
        'style cat'
        >>> expand_textual_inversion("a embedding:style cat", {"style": 0}, syntax="comfy")
        'a  cat'
    """
    if not added:
        return text
    if get_syntax(syntax).embedding_prefix:
        def named(match: re.Match) -> str:
            stem = match.group(1)
            for suffix in _SUFFIXES:
                stem = stem.removesuffix(suffix)
            return match.group(0) if stem not in added else stem if added[stem] else ""

        text = _COMFY_EMBEDDING.sub(named, text)
    for name, count in added.items():
        if count > 1 and name in text:
            text = text.replace(name, " ".join(token_names(name, count)))
    return text


def load_into_encoders(
    encoders: list,
    embeddings: list[dict[str, int]],
    path: str | Path,
    *,
    token: str | None,
    allow_pickle: bool,
    copy_models: bool,
    family: str | None = None,
) -> list[str]:
    """Add the embedding in ``path`` to each of ``encoders`` (a conditioner's ``LoadedTextEncoder``
    list, replaced in place by extended ones) and record its vector counts in ``embeddings``.

    Tokenizers are always copied first; models too when ``copy_models`` (they belong to the caller).
    ``family`` (``"sd3"`` / ``"flux"``) picks the CLIP parts, see :func:`encoder_vectors`.
    Returns the tokens added to the first tokenizer.
    """
    import copy

    from ..models.loading import LoadedTextEncoder
    from ..models.tokenizer import copy_tokenizer

    name, vectors = read_embedding(path, allow_pickle=allow_pickle)
    name = token or name
    pairs = encoder_vectors(vectors, len(encoders), family=family, source=str(path))
    for index, part in pairs:
        loaded = encoders[index]
        tokenizer, model = copy_tokenizer(loaded.tokenizer), loaded.model
        if copy_models:
            model = copy.deepcopy(model)
        add_embedding(model, tokenizer, name, part, source=str(path))
        encoders[index] = LoadedTextEncoder(model, tokenizer, loaded.source)
        embeddings[index][name] = part.shape[0]
    for index in set(range(len(encoders))) - {index for index, _ in pairs}:
        embeddings[index].setdefault(name, 0)  # known, not for this encoder: see expand_textual_inversion
    return token_names(name, pairs[0][1].shape[0])


def encoder_vectors(
    vectors: list, n_encoders: int, *, family: str | None = None, source: str = ""
) -> list[tuple[int, Any]]:
    """Which CLIP encoder gets which of a file's vector sets: ``[(encoder index, vectors)]``.

    One set per encoder, in order (SD 1.x: one; SDXL and SD3: ``clip_l`` then ``clip_g``). SD3 and Flux also take
    a one-part file (A1111 / diffusers, CLIP-L wide) into CLIP-L alone, and Flux, whose only CLIP is CLIP-L, the
    ``clip_l`` part of an SDXL / SD3 file (as ComfyUI reads a file's ``clip_l`` key for CLIP-L). An encoder left
    without the embedding (SD3's bigG with a one-part file) reads the name as text, as in diffusers when an
    embedding is loaded into one text encoder only (ComfyUI's ``embedding:name`` is dropped there); T5 never gets it.

    Example:
        >>> import torch
        >>> [i for i, _ in encoder_vectors([torch.zeros(1, 768)], 2, family="sd3")]  # SD3, one-part file: CLIP-L
        [0]
        >>> [tuple(v.shape) for _, v in encoder_vectors([torch.zeros(2, 768), torch.zeros(2, 1280)], 1, family="flux")]
        [(2, 768)]
    """
    if len(vectors) == n_encoders:
        return list(enumerate(vectors))
    if family in ("sd3", "flux") and len(vectors) in (1, len(SDXL_KEYS)) and n_encoders <= len(SDXL_KEYS):
        return [(0, vectors[0])]  # CLIP-L: a one-part file, or a clip_l / clip_g file's clip_l on Flux
    raise EmbeddingError(
        f"embedding '{source}': holds vectors for {len(vectors)} text encoder(s), this model has {n_encoders}"
    )
