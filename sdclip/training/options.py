"""Training options as data: one frozen ``TrainConfig``, checked once when it is made."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import TrainingError

MIXED_PRECISION = ("no", "bf16", "fp16")
LOCK_MODES = ("none", "image", "text", "text_encoder")


@dataclass(frozen=True)
class TrainConfig:
    """How a CLIP model is trained; every field has a default, so ``TrainConfig()`` is a valid run.

    Attributes:
        epochs: passes over the training pairs (``max_steps`` stops earlier when set).
        max_steps: stop after this many optimizer steps (None: ``epochs`` decides).
        batch_size: pairs per process per micro-batch; the contrastive batch is ``batch_size`` times the
            number of processes (features of all processes are gathered).
        lr, weight_decay, betas, eps: AdamW; biases, norms, embeddings' gains and ``logit_scale`` get no
            weight decay (as OpenCLIP).
        warmup_steps: linear warm-up, then cosine decay to 0 over the run.
        seed: seeds the initial weights of a model built from a config, the shuffling and the split.
        image_size: pixels the vision tower sees. For a model built from a config it sets
            ``vision_config.image_size``; for a loaded model it must equal the model's (None: the model's).
        lock: ``"none"``; ``"image"`` (LiT: vision tower and its projection frozen); ``"text"`` (text tower
            and its projection frozen); ``"text_encoder"`` (only ``text_model`` frozen, so the SD conditioning
            encoder stays bit-identical while the projection, vision tower and temperature train).
        val_fraction: share of the pairs held out for evaluation (seeded split), 0 for none.
        eval_every: evaluate every N optimizer steps (None: at the end of each epoch when there is a
            validation set); 0: never.
        labels: class names for zero-shot accuracy; an image's class is the label its caption contains
            (the longest one), or the ``label`` field of a CSV / JSONL row.
        label_template: prompt each label is put in for zero-shot classification.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"`` (accelerate's autocast; weights stay float32).
        grad_accum: micro-batches per optimizer step (each micro-batch is its own contrastive batch).
        group_size: keep groups of this many consecutive pairs together: shuffling moves whole groups, so
            a pair and the hard negatives made next to it (the same scene with another shape, say) always
            meet in one contrastive batch; it must divide ``batch_size``. 1: plain shuffling.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        save_every: write a resumable checkpoint (``out/checkpoints/step_N``) every N steps; 0: never.
        resume: continue from the newest checkpoint in ``out/checkpoints`` when there is one.
        max_length: longest caption in tokens (None: the text tower's ``max_position_embeddings``).
        num_workers: DataLoader worker processes decoding images (0: in the training process).
        progress: show a tqdm bar on stderr.
        plot: draw ``train_curves.png`` from the log at the end (matplotlib).

    Example:
        >>> TrainConfig(epochs=2, lock="image").lock
        'image'
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 0
    seed: int = 0
    image_size: int | None = None
    lock: str = "none"
    val_fraction: float = 0.0
    eval_every: int | None = None
    labels: tuple[str, ...] = ()
    label_template: str = "a photo of a {}."
    mixed_precision: str = "no"
    grad_accum: int = 1
    group_size: int = 1
    gradient_checkpointing: bool = False
    save_every: int = 0
    resume: bool = False
    max_length: int | None = None
    num_workers: int = 0
    progress: bool = True
    plot: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "betas", tuple(self.betas))
        for name in ("epochs", "batch_size", "grad_accum", "group_size"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.batch_size % self.group_size:
            raise TrainingError(f"group_size={self.group_size}: expected a divisor of batch_size ({self.batch_size}), "
                                "so that groups are never cut between batches")
        for name in ("warmup_steps", "save_every", "num_workers", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("max_steps", "image_size", "max_length"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        if self.eval_every is not None:
            _check_int("eval_every", self.eval_every, minimum=0)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise TrainingError(f"lr: expected a positive finite number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise TrainingError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise TrainingError(f"val_fraction: expected a number in [0, 1), got {self.val_fraction!r}")
        if self.lock not in LOCK_MODES:
            raise TrainingError(f"lock: expected one of {', '.join(LOCK_MODES)}, got {self.lock!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise TrainingError(
                f"mixed_precision: expected one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}"
            )
        if "{}" not in self.label_template:
            raise TrainingError(f"label_template: expected a '{{}}' where the label goes, got {self.label_template!r}")
        if any(not isinstance(label, str) or not label.strip() for label in self.labels):
            raise TrainingError("labels: expected non-empty strings")

    @classmethod
    def from_options(cls, config: TrainConfig | None = None, **options: Any) -> TrainConfig:
        """``config`` (default: ``TrainConfig()``) with ``options`` replacing its fields.

        Example:
            >>> TrainConfig.from_options(TrainConfig(epochs=3), batch_size=4).epochs
            3
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TrainingError(f"train(): unknown option(s) {', '.join(unknown)}; expected fields of TrainConfig")
        return cls(**{**asdict(config or cls()), **options})

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (written next to checkpoints)."""
        return {**asdict(self), "labels": list(self.labels), "betas": list(self.betas)}


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainingError(f"{name}: expected an integer >= {minimum}, got {value!r}")
