"""Aggregate CLIP metrics as a functional core: per-pair cosines in, one number out.

Each metric keeps its state as a (sum, count) pair, so partial states from batches, files or
processes merge by adding (``merge``, or an all-reduce of the two numbers) and ``compute`` gives the
same value as one pass over everything:

* ``clip_score``: torchmetrics' ``CLIPScore``: ``max(100 * mean(cos), 0)``: the mean over pairs
  first, the clamp on the mean.
* ``clip_s``: Hessel et al.'s CLIP-S (2021): ``mean(w * max(cos, 0))``, ``w = 2.5``: the clamp per pair.

Example:
    >>> import torch
    >>> cos = torch.tensor([0.30, -0.10, 0.25])
    >>> whole = ClipScoreState.from_cosines(cos)
    >>> parts = ClipScoreState.from_cosines(cos[:1]).merge(ClipScoreState.from_cosines(cos[1:]))
    >>> round(whole.compute(), 4), round(parts.compute(), 4)
    (15.0, 15.0)
    >>> round(ClipSState.from_cosines(cos).compute(), 4)
    0.4583
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _float64(cosines: torch.Tensor) -> torch.Tensor:
    """(N,) float64 on the CPU: sums of many pairs stay exact to float32's last bit."""
    import torch

    return cosines.detach().to("cpu", dtype=torch.float64).reshape(-1)


@dataclass(frozen=True)
class ClipScoreState:
    """State of torchmetrics' CLIP score: the sum of ``100 * cos`` over pairs, and the number of pairs.

    Attributes:
        total: sum of ``100 * cos`` (float64 accumulation).
        count: pairs seen.
    """

    total: float = 0.0
    count: int = 0

    @classmethod
    def from_cosines(cls, cosines: torch.Tensor) -> ClipScoreState:
        """The state of one batch: (N,) cosines (any float dtype, any device)."""
        return cls().update(cosines)

    def update(self, cosines: torch.Tensor) -> ClipScoreState:
        """This state with (N,) more cosines added."""
        values = _float64(cosines)
        return replace(self, total=self.total + float(100 * values.sum()), count=self.count + values.numel())

    def merge(self, other: ClipScoreState) -> ClipScoreState:
        """The state of both parts together (what an all-reduce of ``total`` and ``count`` gives)."""
        return replace(self, total=self.total + other.total, count=self.count + other.count)

    def compute(self) -> float:
        """``max(total / count, 0)``: torchmetrics' value; NaN for no pairs."""
        return max(self.total / self.count, 0.0) if self.count else float("nan")


@dataclass(frozen=True)
class ClipSState:
    """State of Hessel et al.'s CLIP-S: the sum of ``w * max(cos, 0)`` over pairs, and their number.

    Attributes:
        total: sum of ``w * max(cos, 0)`` (float64 accumulation).
        count: pairs seen.
        w: the scale (2.5 in the paper); states with different ``w`` do not merge.
    """

    total: float = 0.0
    count: int = 0
    w: float = 2.5

    @classmethod
    def from_cosines(cls, cosines: torch.Tensor, *, w: float = 2.5) -> ClipSState:
        """The state of one batch: (N,) cosines."""
        return cls(w=w).update(cosines)

    def update(self, cosines: torch.Tensor) -> ClipSState:
        """This state with (N,) more cosines added."""
        values = _float64(cosines)
        total = float((self.w * values.clamp(min=0)).sum())
        return replace(self, total=self.total + total, count=self.count + values.numel())

    def merge(self, other: ClipSState) -> ClipSState:
        """The state of both parts together."""
        if other.w != self.w:
            raise ValueError(f"clip_s: cannot merge states with w={self.w} and w={other.w}")
        return replace(self, total=self.total + other.total, count=self.count + other.count)

    def compute(self) -> float:
        """``total / count``: the mean of ``w * max(cos, 0)``; NaN for no pairs."""
        return self.total / self.count if self.count else float("nan")


def clip_score(cosines: torch.Tensor) -> torch.Tensor:
    """torchmetrics' CLIP score of (N,) cosines: ``max(100 * mean(cos), 0)``, a () float32 tensor.

    Example:
        >>> import torch
        >>> clip_score(torch.tensor([0.30, -0.10, 0.25]))
        tensor(15.)
    """
    import torch

    return torch.tensor(ClipScoreState.from_cosines(cosines).compute(), dtype=torch.float32)


def clip_s(cosines: torch.Tensor, *, w: float = 2.5) -> torch.Tensor:
    """Hessel et al.'s CLIP-S of (N,) cosines: ``mean(w * max(cos, 0))``, a () float32 tensor.

    Example:
        >>> import torch
        >>> clip_s(torch.tensor([0.30, -0.10, 0.25]))
        tensor(0.4583)
    """
    import torch

    return torch.tensor(ClipSState.from_cosines(cosines, w=w).compute(), dtype=torch.float32)
