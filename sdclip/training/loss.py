"""CLIP's contrastive loss: symmetric InfoNCE over the features of every process.

As OpenAI's and OpenCLIP's training (``open_clip/loss.py``, ``ClipLoss`` with ``local_loss=False`` and
``gather_with_grad=True``): each process gathers the features of all processes *with* their gradient,
computes the loss over the global batch, and the data-parallel wrapper averages the gradients, so
2 processes x batch 8 give the gradients of 1 process x batch 16.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's initial temperature, as a log (2.6593)
LOGIT_SCALE_MAX = math.log(100)  # logits are never scaled by more than 100


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate ``features`` (N_rank, D) of every process in rank order, keeping the gradient path.

    Processes may hold different numbers of rows (a batch that lost a bad image): rows are padded to
    the largest count for the collective and the padding is cut off again. One process: returned as is.

    Example:
        >>> import torch
        >>> gather_with_grad(torch.ones(2, 3)).shape
        torch.Size([2, 3])
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    count = torch.tensor([features.shape[0]], device=features.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = torch.nn.functional.pad(features, (0, 0, 0, max(sizes) - features.shape[0]))
    gathered = _all_gather_function().apply(padded)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)])


@functools.cache
def _all_gather_function() -> type:
    """An all-gather whose backward sums each process's gradient for this process's rows over all processes
    (what ``torch.distributed.nn.functional.all_gather`` does; that one is deprecated in torch 2.13)."""
    import torch
    import torch.distributed as dist

    class AllGather(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
            parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, tensor.contiguous())
            return tuple(parts)

        @staticmethod
        def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
            stacked = torch.stack(grads)  # (world, N, D): this process's gradient for every process's rows
            dist.all_reduce(stacked)
            return stacked[dist.get_rank()]

    return AllGather


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: mean of image->text and text->image cross-entropy on ``exp(logit_scale) * cos``.

    Args:
        image_features, text_features: (N, D) projections, pair ``i`` matching pair ``i`` (normalized here).
        logit_scale: the model's learnable log temperature (scalar); clamped at ``ln(100)``.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> features = torch.eye(4)
        >>> float(clip_loss(features, features, torch.tensor(LOGIT_SCALE_MAX))) < 1e-6
        True
    """
    import torch
    import torch.nn.functional as F

    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    scale = logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()
    logits_per_image = scale * image_features @ text_features.T  # (N, N)
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


class ClipLoss:
    """The loss of one training step: gather features across processes, then ``clip_loss``.

    Callable as ``loss(image_features, text_features, logit_scale)``; with one process it is
    ``clip_loss`` itself.

    Example:
        >>> import torch
        >>> features = torch.eye(3, requires_grad=True)
        >>> ClipLoss()(features, features, torch.tensor(0.0)).backward()
        >>> features.grad.shape
        torch.Size([3, 3])
    """

    def __call__(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        return clip_loss(gather_with_grad(image_features), gather_with_grad(text_features), logit_scale)


def clamp_logit_scale_(logit_scale: torch.Tensor) -> None:
    """Clamp the parameter in place to [0, ln(100)] after an optimizer step, as OpenCLIP does."""
    import torch

    with torch.no_grad():
        logit_scale.clamp_(0, LOGIT_SCALE_MAX)
