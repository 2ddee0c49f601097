"""Model families as data: which text encoders a pipeline conditions with, and how their outputs are used.

Each ``ModelFamily`` says which encoders it has (pipeline subfolder, tokenizer subfolder, the stand-in
tokenizer's pad token, the activation a single file's inferred config gets), which hidden layer becomes
conditioning (``EncoderSpec``), how the pooled embedding is taken, whether the pipeline takes it, and the
default of ``force_zeros_for_empty_prompt``. The loaders (``sdclip.models.text_encoders``) detect the
family of a source here (``pipeline_family``, ``single_file_family``) and read everything else from it.

SD3 and Flux
------------
SD3 / SD3.5 condition on ``text_encoder`` (CLIP-L) and ``text_encoder_2`` (bigG), both with projections
and SDXL's rules, plus ``text_encoder_3``, a T5 encoder (absent or None: zeros, as diffusers); Flux on
``text_encoder`` (CLIP-L, pooled output only) and ``text_encoder_2`` (T5, the sequence). ``pipeline_family``
returns the CLIP parts; the T5 slot (``t5_slot``) is loaded by ``sdclip.models.mmdit`` and the tensors are
assembled in ``sdclip.conditioning.mmdit``.

Example:
    >>> FAMILIES["sdxl"].spec, [slot.subfolder for slot in FAMILIES["sdxl"].encoders]
    (EncoderSpec(skip_offset=2, final_norm=False), ['text_encoder', 'text_encoder_2'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ModelSourceError
from .checkpoint import SDXL_CLIP_L_PREFIX, SDXL_OPENCLIP_PREFIX, is_sdxl_checkpoint, read_json

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .sources import ResolvedSource


@dataclass(frozen=True)
class EncoderSpec:
    """How one text encoder's hidden states become conditioning.

    Attributes:
        skip_offset: the hidden state used is ``hidden_states[-(clip_skip + skip_offset)]``
            (1 for SD 1.x/2.x: the last layer; 2 for SDXL: the penultimate layer).
        final_norm: whether that hidden state goes through the final layer norm (SD 1.x: yes;
            SDXL: no).

    Example:
        >>> EncoderSpec()
        EncoderSpec(skip_offset=1, final_norm=True)
    """

    skip_offset: int = 1
    final_norm: bool = True


SD_SPEC = EncoderSpec()  # SD 1.x/2.x: last layer, through the final layer norm
SDXL_SPEC = EncoderSpec(skip_offset=2, final_norm=False)  # both SDXL encoders: penultimate layer, no norm


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a family.

    Attributes:
        subfolder: its folder in a diffusers pipeline (``config.json`` and weights).
        tokenizer: the folder of its tokenizer in a pipeline.
        pad_token: the pad token of sdclip's stand-in tokenizer when the source brings none (None: the
            shipped tokenizer's own, ``<|endoftext|>``; ``"!"``, id 0, for OpenCLIP towers).
        hidden_act: the activation of a config inferred from a single file's shapes (not visible in shapes).
        single_file_prefix: where a single-file checkpoint keeps its tensors.
        architecture: the ``architectures`` prefix its ``config.json`` must have.
    """

    subfolder: str
    tokenizer: str
    pad_token: str | None = None
    hidden_act: str = "quick_gelu"
    single_file_prefix: str = "cond_stage_model.transformer."
    architecture: str = "CLIP"


CLIP_L = TextEncoderSlot("text_encoder", "tokenizer")
OPENCLIP_H = TextEncoderSlot("text_encoder", "tokenizer", pad_token="!", hidden_act="gelu",
                             single_file_prefix="cond_stage_model.model.")  # fmt: skip
SDXL_CLIP_L = TextEncoderSlot("text_encoder", "tokenizer", single_file_prefix=SDXL_CLIP_L_PREFIX)
SDXL_OPENCLIP_G = TextEncoderSlot("text_encoder_2", "tokenizer_2", pad_token="!", hidden_act="gelu",
                                  single_file_prefix=SDXL_OPENCLIP_PREFIX)  # fmt: skip
T5_XXL = TextEncoderSlot("text_encoder_3", "tokenizer_3", architecture="T5")
FLUX_T5 = TextEncoderSlot("text_encoder_2", "tokenizer_2", architecture="T5")

Pooling = Literal["eos", "eos_of_last"]


@dataclass(frozen=True)
class ModelFamily:
    """A pipeline family's text conditioning, as data.

    Attributes:
        name: short key (``sd1``, ``sd2``, ``sdxl``, ``sdxl_refiner``, ``sd3``, ``flux``).
        title: what error messages call it.
        encoders: its text encoders, in the pipeline's order.
        spec: which hidden state of every encoder becomes conditioning.
        pooling: ``"eos"``: the EOS token's final hidden state (projected when the model has a projection);
            ``"eos_of_last"``: the same, of the last encoder only (SDXL's pooled vector).
        pipeline_takes_pooled: whether the pipeline's ``__call__`` takes the pooled pair.
        force_zeros_default: ``force_zeros_for_empty_prompt`` when the pipeline does not say.
        supported: False for families sdclip recognises only to refuse clearly.
    """

    name: str
    title: str
    encoders: tuple[TextEncoderSlot, ...]
    spec: EncoderSpec = SD_SPEC
    pooling: Pooling = "eos"
    pipeline_takes_pooled: bool = False
    force_zeros_default: bool = False
    supported: bool = True


FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily("sd1", "Stable Diffusion 1.x", (CLIP_L,)),
        ModelFamily("sd2", "Stable Diffusion 2.x", (OPENCLIP_H,)),
        ModelFamily("sdxl", "SDXL", (SDXL_CLIP_L, SDXL_OPENCLIP_G), SDXL_SPEC, "eos_of_last", True, True),
        ModelFamily("sdxl_refiner", "the SDXL refiner", (SDXL_OPENCLIP_G,), SDXL_SPEC, "eos_of_last", True, True),
        ModelFamily("sd3", "Stable Diffusion 3", (SDXL_CLIP_L, SDXL_OPENCLIP_G, T5_XXL), SDXL_SPEC, "eos", True),
        ModelFamily("flux", "Flux", (CLIP_L, FLUX_T5), SD_SPEC, "eos", True),
    )
}  # fmt: skip
_SD2_WIDTH = 1024  # OpenCLIP ViT-H's text width; clip-vit-large-patch14's is 768


def family_for_width(width: int) -> ModelFamily:
    """SD 1.x or SD 2.x, told apart by the one text encoder's width (both use the same rules).

    Example:
        >>> family_for_width(1024).title
        'Stable Diffusion 2.x'
    """
    return FAMILIES["sd2" if width == _SD2_WIDTH else "sd1"]


def single_file_family(keys: Iterable[str]) -> ModelFamily:
    """The family of a single-file checkpoint from its tensor names (SDXL or SD 1.x).

    Example:
        >>> single_file_family(["conditioner.embedders.1.model.token_embedding.weight"]).name
        'sdxl'
    """
    return FAMILIES["sdxl" if is_sdxl_checkpoint(keys) else "sd1"]


def _has_component(resolved: ResolvedSource, index: dict, part: str) -> bool:
    """Whether a pipeline has ``part``: per ``model_index.json`` when it names it, else per the folder."""
    if part in index:
        entry = index[part]
        return isinstance(entry, list) and bool(entry) and entry[0] is not None  # [null, null]: not used
    return (resolved.path / part).is_dir()


def _architecture(resolved: ResolvedSource, part: str) -> str:
    architectures = read_json(resolved.path / part / "config.json").get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return "an unknown model"


def pipeline_family(resolved: ResolvedSource, index: dict) -> tuple[ModelFamily, list[str]]:
    """A pipeline folder's family and the text encoder subfolders it conditions with.

    For SD3 and Flux the parts are the CLIP encoders; their T5 is ``t5_slot(family)``.

    Raises:
        ModelSourceError: a missing encoder folder, or an encoder that is not CLIP where CLIP is expected.
    """
    family = _mmdit_family(resolved, index)
    if family is not None:
        parts = [slot.subfolder for slot in family.encoders if slot.architecture == "CLIP"]
        for part in parts:
            if not (resolved.path / part / "config.json").is_file():
                raise ModelSourceError(
                    f"model '{resolved.name}': {family.title} pipeline folder has no {part}/config.json; copy the "
                    f"complete folder ({family.title} conditions on {', '.join(s.subfolder for s in family.encoders)})"
                )
        return family, parts
    if not _has_component(resolved, index, "text_encoder_2"):
        return FAMILIES["sd1"], ["text_encoder"]
    family = FAMILIES["sdxl"]
    parts = ["text_encoder_2"]  # the SDXL refiner has no first encoder
    if _has_component(resolved, index, "text_encoder"):
        parts.insert(0, "text_encoder")
    else:
        family = FAMILIES["sdxl_refiner"]
    for part in parts:
        if not (resolved.path / part / "config.json").is_file():
            first_alone = part == "text_encoder_2" and "text_encoder" in parts
            raise ModelSourceError(
                f"model '{resolved.name}': SDXL pipeline folder has no {part}/config.json; SDXL conditions on "
                f"{' and '.join(parts)}: copy the complete folder (with tokenizer_2/)"
                + (", or pass subfolder='text_encoder' to load the first encoder alone" if first_alone else "")
            )
        architecture = _architecture(resolved, part)
        if not architecture.startswith("CLIP"):
            raise ModelSourceError(
                f"model '{resolved.name}': {part} is {architecture}, not a CLIP text encoder; sdclip conditions "
                "SD 1.x/2.x and SDXL pipelines, whose text encoders are all CLIP"
            )
    return family, parts


def _mmdit_family(resolved: ResolvedSource, index: dict) -> ModelFamily | None:
    """SD3 (a ``text_encoder_3`` entry, even None, or the pipeline class) or Flux (a T5 ``text_encoder_2``)."""
    class_name = str(index.get("_class_name", ""))
    if class_name.startswith("StableDiffusion3") or "text_encoder_3" in index or (resolved.path / "text_encoder_3").is_dir():
        return FAMILIES["sd3"]
    if class_name.startswith("Flux"):
        return FAMILIES["flux"]
    if (resolved.path / "text_encoder_2" / "config.json").is_file() and _architecture(resolved, "text_encoder_2").startswith("T5"):
        return FAMILIES["flux"]
    return None


def t5_slot(family: ModelFamily) -> TextEncoderSlot | None:
    """The family's T5 encoder slot (SD3: ``text_encoder_3``; Flux: ``text_encoder_2``), or None.

    Example:
        >>> t5_slot(FAMILIES["flux"]).subfolder, t5_slot(FAMILIES["sdxl"])
        ('text_encoder_2', None)
    """
    return next((slot for slot in family.encoders if slot.architecture == "T5"), None)


def has_component(resolved: ResolvedSource, index: dict, part: str) -> bool:
    """Whether a pipeline has ``part``: per ``model_index.json`` when it names it, else per the folder."""
    return _has_component(resolved, index, part)


def slot_for(family: ModelFamily, subfolder: str | None) -> TextEncoderSlot:
    """The slot of ``subfolder`` (default ``text_encoder``) in ``family``, or in SDXL's table for a lone subfolder.

    Example:
        >>> slot_for(FAMILIES["sd1"], "text_encoder_2").tokenizer
        'tokenizer_2'
    """
    part = subfolder or "text_encoder"
    for slot in (*family.encoders, *FAMILIES["sdxl"].encoders):
        if slot.subfolder == part:
            return slot
    return TextEncoderSlot(part, "tokenizer")
