"""Evaluation of a CLIP model on validation pairs: retrieval recall@K both ways, zero-shot accuracy.

Functional: features in, numbers out (``recall_at_k``, ``zero_shot_accuracy``), and ``evaluate`` that
embeds a validation set batch by batch and returns one flat dict of metrics for the CSV log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import CLIPModel

    from .batches import Batch, Collator

RECALL_KS = (1, 5, 10)


def recall_at_k(image_features: torch.Tensor, text_features: torch.Tensor,
                ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Retrieval recall of N matched pairs: image ``i`` belongs with text ``i``.

    ``i2t_rK``: share of images whose own text is among the K most similar texts; ``t2i_rK`` the reverse.
    A tie with the own item counts against it (rank = number of items scoring at least as high, minus one).

    Args:
        image_features, text_features: (N, D), normalized or not (cosine similarity is used).

    Example:
        >>> import torch
        >>> recall_at_k(torch.eye(3), torch.eye(3), ks=(1,))
        {'i2t_r1': 1.0, 't2i_r1': 1.0}
    """
    import torch.nn.functional as F

    sims = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T  # (N, N)
    result = {}
    for direction, matrix in (("i2t", sims), ("t2i", sims.T)):
        own = matrix.diagonal().unsqueeze(1)
        rank = (matrix >= own).sum(dim=1) - 1  # (N,) how many others score at least as high
        for k in ks:
            result[f"{direction}_r{k}"] = float((rank < k).float().mean())
    return result


def zero_shot_accuracy(image_features: torch.Tensor, label_features: torch.Tensor, targets: Sequence[int]) -> float:
    """Share of images whose most similar label prompt is their own class (``targets[i]``; -1 = no class, left out).

    Example:
        >>> import torch
        >>> zero_shot_accuracy(torch.eye(2), torch.eye(2), [1, -1])
        0.0
    """
    import torch

    keep = [i for i, t in enumerate(targets) if t >= 0]
    if not keep:
        return float("nan")
    sims = image_features[keep].float() @ label_features.float().T
    predicted = sims.argmax(dim=1)
    return float((predicted == torch.tensor([targets[i] for i in keep])).float().mean())


def label_of(caption: str, labels: Sequence[str], given: str | None = None) -> int:
    """Index of the pair's class: ``given`` when the data names one, else the longest label the caption contains.

    Example:
        >>> label_of("a small red circle", ["circle", "red circle", "square"])
        1
    """
    if given is not None:
        return list(labels).index(given) if given in labels else -1
    lowered = caption.lower()
    found = [(len(label), -i) for i, label in enumerate(labels) if label.lower() in lowered]
    return -max(found)[1] if found else -1


def evaluate(model: CLIPModel, batches: Iterable[Batch], collate: Collator, *, labels: Sequence[str] = (),
             template: str = "a photo of a {}.", device: torch.device | None = None) -> dict[str, float]:
    """Embed the validation batches and compute recall@1/5/10 both ways and, with ``labels``, zero-shot accuracy.

    Returns:
        ``{"val_pairs", "i2t_r1", ..., "t2i_r10"[, "zero_shot_acc"]}``.

    Example:
        >>> from PIL import Image
        >>> from sdclip.models.tokenizer import load_tokenizer
        >>> from sdclip.scoring.preprocess import PreprocessConfig
        >>> from sdclip.testing import random_clip_model
        >>> from sdclip.training.batches import Collator
        >>> from sdclip.training.data import load_pairs
        >>> pairs = load_pairs([(Image.new("RGB", (32, 32), c), f"a {c} square") for c in ("red", "blue")])
        >>> collate = Collator(pairs, load_tokenizer(), PreprocessConfig(), max_length=77)
        >>> metrics = evaluate(random_clip_model(), [collate([0, 1])], collate, labels=["red", "blue"])
        >>> sorted(metrics)[:3], metrics["val_pairs"]
        (['i2t_r1', 'i2t_r10', 'i2t_r5'], 2.0)
    """
    import torch
    import torch.nn.functional as F

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    images, texts, captions, given = [], [], [], []
    with torch.no_grad():
        for batch in batches:
            if not batch.indices:
                continue
            images.append(model.get_image_features(pixel_values=batch.pixel_values.to(device)).pooler_output.float())
            texts.append(model.get_text_features(input_ids=batch.input_ids.to(device)).pooler_output.float())
            captions += [collate.pairs.caption(i) for i in batch.indices]
            given += batch.labels
        if not images:
            model.train(was_training)
            return {"val_pairs": 0.0}
        image_features, text_features = F.normalize(torch.cat(images), dim=-1), F.normalize(torch.cat(texts), dim=-1)
        metrics = {"val_pairs": float(len(captions)), **recall_at_k(image_features, text_features)}
        if labels:
            prompts = collate.tokenize([template.format(label) for label in labels]).to(device)
            label_features = F.normalize(model.get_text_features(input_ids=prompts).pooler_output.float(), dim=-1)
            targets = [label_of(c, labels, g) for c, g in zip(captions, given)]
            metrics["zero_shot_acc"] = zero_shot_accuracy(image_features, label_features, targets)
    model.train(was_training)
    return metrics
