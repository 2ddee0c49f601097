"""The model a run starts from (a config, or any source sdclip loads), its frozen parts, and the folder it ends as."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ..errors import TrainingError
from ..models.building import check_text_config
from ..models.tokenizer import load_tokenizer
from ..scoring.preprocess import PreprocessConfig
from .loss import LOGIT_SCALE_INIT

if TYPE_CHECKING:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

ModelSpec = Union[str, os.PathLike, dict, "CLIPConfig", "CLIPModel"]


@dataclass
class StartingModel:
    """A CLIPModel ready to train, with what it needs around it.

    Attributes:
        model: float32, on the CPU, in ``train()`` mode, frozen parts per the lock.
        tokenizer: the source's tokenizer, or sdclip's shipped CLIP tokenizer.
        preprocessor: the source's ``preprocessor_config.json`` dict, or None (CLIP's, at the image size).
        preprocess: the parsed pixel pipeline.
        from_scratch: whether the weights were initialised here (from a config).
    """

    model: CLIPModel
    tokenizer: CLIPTokenizer
    preprocessor: dict | None
    preprocess: PreprocessConfig
    from_scratch: bool


def starting_model(spec: ModelSpec, *, image_size: int | None = None, seed: int = 0) -> StartingModel:
    """Build (from a config) or load (from a source) the model a run trains.

    Args:
        spec: a ``transformers.CLIPConfig``, a config dict (``text_config`` / ``vision_config`` /
            ``projection_dim``), a path to such a ``.json`` file (all trained from scratch, weights seeded
            with ``seed``), a ``CLIPModel`` instance, or any source ``load_clip_model`` takes (hub id,
            CLIP folder, single-file checkpoint).
        image_size: the vision tower's input size: set on a config, checked on a loaded model.

    Example:
        >>> from sdclip.testing import TINY_TEXT, TINY_VISION
        >>> config = {"text_config": TINY_TEXT, "vision_config": TINY_VISION, "projection_dim": 96}
        >>> start = starting_model(config, image_size=64)
        >>> start.from_scratch, start.preprocess.output_size, round(start.model.logit_scale.item(), 4)
        (True, (64, 64), 2.6593)
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    from ..models.clip_models import load_clip_model

    if isinstance(spec, (str, os.PathLike)) and str(spec).lower().endswith(".json") and Path(spec).is_file():
        spec = _read_config(Path(spec))
    if isinstance(spec, dict):
        try:
            spec = CLIPConfig(**{k: v for k, v in spec.items() if k not in ("architectures", "transformers_version")})
        except Exception as error:  # transformers validates with several exception types
            raise TrainingError(f"model config: not a CLIP config ({error}); expected text_config, "
                                "vision_config and projection_dim") from error
    preprocessor = None
    if isinstance(spec, CLIPConfig):
        config = spec.__class__.from_dict(spec.to_dict())  # a copy: the caller's config stays as given
        if image_size is not None:
            config.vision_config.image_size = image_size
        if abs(config.logit_scale_init_value - LOGIT_SCALE_INIT) < 1e-3:  # transformers' default, rounded
            config.logit_scale_init_value = LOGIT_SCALE_INIT
        tokenizer = load_tokenizer()
        check_text_config("<config>", config.text_config.to_dict(), tokenizer)
        torch.manual_seed(seed)
        try:
            model = CLIPModel(config)
        except Exception as error:  # e.g. a width the heads do not divide
            raise TrainingError(f"model config: cannot build a CLIPModel ({error})") from error
        from_scratch = True
    elif isinstance(spec, CLIPModel):
        model, tokenizer, from_scratch = spec, load_tokenizer(), False
    else:
        model, tokenizer, preprocessor = load_clip_model(spec, device="cpu", dtype="fp32", trainable=True)
        from_scratch = False
    model = model.float().train().requires_grad_(True)
    size = int(model.config.vision_config.image_size)
    if image_size is not None and image_size != size:
        raise TrainingError(f"image_size: the model's vision tower takes {size} px images, got image_size="
                            f"{image_size}; leave it unset, or train a new model from a config")
    preprocess = PreprocessConfig.from_dict(preprocessor, image_size=size)
    return StartingModel(model, tokenizer, preprocessor, preprocess, from_scratch)


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise TrainingError(f"model '{path}': not a readable JSON config ({error})") from error


def tower_parameters(model: CLIPModel, tower: str) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of one part: ``"image"`` (vision tower + projection), ``"text"`` (text tower +
    projection), ``"text_encoder"`` (``text_model`` only, what SD pipelines condition on).

    Example:
        >>> from sdclip.testing import random_clip_model
        >>> names = [n for n, _ in tower_parameters(random_clip_model(), "image")]
        >>> names[-1]
        'visual_projection.weight'
    """
    prefixes = {"image": ("vision_model.", "visual_projection."), "text": ("text_model.", "text_projection."),
                "text_encoder": ("text_model.",)}[tower]  # fmt: skip
    return [(n, p) for n, p in model.named_parameters() if n.startswith(prefixes)]


def apply_lock(model: CLIPModel, lock: str) -> None:
    """Freeze the part ``lock`` names (``"none"``, ``"image"``, ``"text"``, ``"text_encoder"``).

    Frozen towers are also put in ``eval()`` mode. Example:
        >>> from sdclip.testing import random_clip_model
        >>> model = random_clip_model().train()
        >>> apply_lock(model, "image")
        >>> model.vision_model.embeddings.patch_embedding.weight.requires_grad, model.logit_scale.requires_grad
        (False, True)
    """
    if lock == "none":
        return
    for _, parameter in tower_parameters(model, lock):
        parameter.requires_grad_(False)
    (model.vision_model if lock == "image" else model.text_model).eval()


def save_model_folder(start: StartingModel, model: CLIPModel, out: str | Path) -> Path:
    """Write ``model`` as an HF CLIP folder every sdclip loader takes: ``config.json``, ``model.safetensors``,
    the tokenizer's files and ``preprocessor_config.json`` (the source's, or CLIP's at the image size).

    Example:
        >>> import tempfile
        >>> from sdclip.testing import random_clip_model
        >>> start = starting_model(random_clip_model())
        >>> folder = save_model_folder(start, start.model, tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir() if p.suffix != ".txt")[:3]
        ['config.json', 'model.safetensors', 'preprocessor_config.json']
    """
    from transformers import CLIPImageProcessorPil
    from transformers.utils import logging as hf_logging

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one file of a small model: transformers' shard bar is noise
    try:
        model.save_pretrained(folder)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    start.tokenizer.save_pretrained(folder)
    if start.preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(start.preprocessor, indent=2) + "\n")
    else:
        size = int(model.config.vision_config.image_size)
        processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        processor.save_pretrained(folder)
    return folder

