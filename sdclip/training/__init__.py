"""Contrastive training and fine-tuning of CLIP models (CLIP's own objective), on accelerate.

The API (stable; later additions are keyword options with defaults)::

    from sdclip.training import train, TrainConfig

    result = train(
        data,                      # pairs, see below
        model=...,                 # where the weights start, see below
        out="runs/my-clip",        # the HF CLIPModel folder written at the end (+ log, curves, checkpoints/)
        config=None,               # a TrainConfig; keyword options override its fields:
        epochs=1, max_steps=None, batch_size=32, lr=5e-4, weight_decay=0.2, warmup_steps=0, seed=0,
        image_size=None,           # e.g. 64 for a small model built from a config
        lock="none",               # "image" / "text" (LiT), "text_encoder" (SD conditioning encoder bit-identical)
        val_fraction=0.0, val_data=None, eval_every=None, labels=(), label_template="a photo of a {}.",
        mixed_precision="no", grad_accum=1, gradient_checkpointing=False, save_every=0, resume=False,
        max_length=None, num_workers=0, progress=True, plot=True, overwrite=False,
    )
    result.out, result.steps, result.samples, result.bad_images, result.val_bad_images, result.metrics

``data`` is a sequence of ``(PIL.Image or path, caption)`` (or ``(image, caption, label)``) pairs in memory,
a folder of images with same-name ``.txt`` captions, a ``.csv`` / ``.tsv`` / ``.jsonl`` file (columns
``image`` + ``caption``, optional ``label``; paths relative to the file), a WebDataset ``.tar`` shard
(``{key}.jpg`` + ``{key}.txt`` / ``.json``) or a folder of shards, or a list of such paths (``load_pairs``).
Images that cannot be decoded are skipped and counted (``result.bad_images``), never crash a run.

``model`` is a ``transformers.CLIPConfig``, a config dict (``{"text_config": ..., "vision_config": ...,
"projection_dim": ...}``) or the path of such a ``.json`` file (trained from scratch, weights seeded by
``seed``, with the real CLIP tokenizer sdclip ships; the text tower needs the 49408-token vocabulary and
77 positions), a ``CLIPModel`` instance, or any source ``load_clip_model`` takes (hub id, CLIP folder,
single-file checkpoint).

``out`` ends as ``config.json`` + ``model.safetensors`` + tokenizer files + ``preprocessor_config.json``,
which ``ClipScorer.from_pretrained``, ``TextConditioner.from_pretrained`` and ``sdclip.clip.load`` take
as is, with ``train_log.csv`` (one row per optimizer step: loss, lr, ``scale`` = exp(logit_scale), and the evaluation
columns zero_shot_acc, i2t_r1/5/10, t2i_r1/5/10 every ``eval_every`` steps) and ``train_curves.png``.

On the CPU in one process a run is reproducible bit for bit for a given seed (and torch thread count):
shuffling is seeded per epoch, the split is seeded, nothing random happens in a step. Under
``accelerate launch`` (or ``torchrun``) each process takes its slice of every global batch of
``batch_size * processes`` pairs and the loss sees the features of all processes (gathered with their
gradient), so a run's batches and gradients do not depend on the number of processes.

Losses are averaged per micro-batch with ``grad_accum`` (each micro-batch is its own contrastive batch, as
accelerate's accumulation does; OpenCLIP's feature cache is not implemented). The optimizer is AdamW
(fused where torch has the kernel) with a linear warm-up and cosine decay to 0.

Pieces, for custom loops: ``clip_loss`` / ``ClipLoss`` / ``gather_with_grad`` (``loss``), ``load_pairs``
(``data``), ``recall_at_k`` / ``zero_shot_accuracy`` / ``evaluate`` (``evaluate``), ``read_log`` / ``plot_log``
(``logs``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "train": "sdclip.training.trainer",
    "TrainResult": "sdclip.training.trainer",
    "TrainConfig": "sdclip.training.options",
    "clip_loss": "sdclip.training.loss",
    "ClipLoss": "sdclip.training.loss",
    "gather_with_grad": "sdclip.training.loss",
    "LOGIT_SCALE_INIT": "sdclip.training.loss",
    "LOGIT_SCALE_MAX": "sdclip.training.loss",
    "load_pairs": "sdclip.training.data",
    "PairSource": "sdclip.training.data",
    "recall_at_k": "sdclip.training.evaluate",
    "zero_shot_accuracy": "sdclip.training.evaluate",
    "evaluate": "sdclip.training.evaluate",
    "read_log": "sdclip.training.logs",
    "plot_log": "sdclip.training.logs",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .data import PairSource, load_pairs
    from .evaluate import evaluate, recall_at_k, zero_shot_accuracy
    from .logs import plot_log, read_log
    from .loss import LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, ClipLoss, clip_loss, gather_with_grad
    from .options import TrainConfig
    from .trainer import TrainResult, train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sdclip.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
