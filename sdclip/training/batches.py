"""From pairs to model inputs: the seeded split, each process's share of every global batch, and collation.

The order depends only on the seed and the epoch, never on the number of processes: every epoch is one
seeded permutation cut into global batches of ``batch_size * world_size`` pairs, and process ``r`` takes
slice ``r`` of each. So 2 processes x batch 8 see exactly the pairs of 1 process x batch 16, and a resumed
run skips exactly the batches it already did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .data import PairSource, Subset

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTokenizer

    from ..scoring.preprocess import PreprocessConfig


def split_pairs(pairs: PairSource, val_fraction: float, *, seed: int,
                group_size: int = 1) -> tuple[PairSource, PairSource | None]:
    """(train, validation) by a seeded permutation; ``val_fraction=0`` gives ``(pairs, None)``.

    With ``group_size`` = k, consecutive groups of k pairs go to the same side (a pair and the hard
    negatives made next to it never end up split between training and validation).

    Example:
        >>> from PIL import Image
        >>> from sdclip.training.data import load_pairs
        >>> train, val = split_pairs(load_pairs([(Image.new("RGB", (4, 4)), str(i)) for i in range(10)]), 0.2, seed=0)
        >>> len(train), len(val)
        (8, 2)
    """
    import torch

    if val_fraction <= 0:
        return pairs, None
    groups = _groups(len(pairs), group_size)
    n_val = min(max(1, round(len(groups) * val_fraction)), len(groups) - 1)
    order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
    return (Subset(pairs, sorted(i for g in order[n_val:] for i in groups[g])),
            Subset(pairs, sorted(i for g in order[:n_val] for i in groups[g])))  # fmt: skip


def _groups(count: int, group_size: int) -> list[range]:
    """Pairs ``0 .. count - 1`` as consecutive groups of ``group_size`` (the last one may be shorter)."""
    return [range(start, min(start + group_size, count)) for start in range(0, count, group_size)]


def epoch_batches(count: int, batch_size: int, *, epoch: int, seed: int, world_size: int = 1,
                  rank: int = 0, shuffle: bool = True, group_size: int = 1) -> list[list[int]]:
    """This process's indices for each global batch of one epoch.

    Global batches hold ``batch_size * world_size`` pairs; the last, incomplete one is dropped (a
    contrastive batch needs its negatives), except when the data is smaller than one global batch, which
    is then the only batch. Shuffling uses ``seed + epoch``. With ``group_size`` = k, the permutation moves
    whole groups of k consecutive pairs (a shorter last group goes last), so when k divides the global batch,
    pairs made side by side as each other's hard negatives always meet in one contrastive batch; k = 1 is the
    plain permutation.

    Example:
        >>> epoch_batches(6, 2, epoch=0, seed=0, shuffle=False, world_size=2, rank=1)
        [[2, 3]]
        >>> epoch_batches(8, 4, epoch=1, seed=0, group_size=2)  # (0, 1), (2, 3) ... stay together
        [[2, 3, 6, 7], [4, 5, 0, 1]]
    """
    import torch

    groups = _groups(count, group_size)
    whole = len(groups) - (count % group_size != 0)  # the shorter last group is not permuted
    generator = torch.Generator().manual_seed(seed + epoch)
    group_order = torch.randperm(whole, generator=generator).tolist() if shuffle else list(range(whole))
    order = [i for g in group_order + list(range(whole, len(groups))) for i in groups[g]]
    size = batch_size * world_size
    n_batches = max(1, count // size)
    size = min(size, count)
    batches = []
    for b in range(n_batches):
        chunk = order[b * size:(b + 1) * size]
        per_rank = -(-len(chunk) // world_size)
        batches.append(chunk[rank * per_rank:(rank + 1) * per_rank])
    return batches


@dataclass
class Batch:
    """Model inputs of one micro-batch.

    Attributes:
        pixel_values: (N, 3, H, W) float32.
        input_ids: (N, T) int64, padded to the longest caption of the batch (T <= ``max_length``).
        indices: the pairs' indices (in the source) that made it in.
        bad: how many pairs were dropped because their image could not be read.
        labels: each pair's label when the source gives one, else None.
    """

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    indices: list[int]
    bad: int
    labels: list[str | None]


class Collator:
    """Turns a list of pair indices into a ``Batch``: decode, preprocess (CLIP's pixels), tokenize.

    Example:
        >>> from PIL import Image
        >>> from sdclip.models.tokenizer import load_tokenizer
        >>> from sdclip.scoring.preprocess import PreprocessConfig
        >>> from sdclip.training.data import load_pairs
        >>> pairs = load_pairs([(Image.new("RGB", (80, 64)), "a cat"), ("missing.png", "a dog")])
        >>> config = PreprocessConfig(shortest_edge=32, crop=(32, 32))
        >>> batch = Collator(pairs, load_tokenizer(), config, max_length=77)([0, 1])
        >>> batch.pixel_values.shape, batch.input_ids.tolist(), batch.bad
        (torch.Size([1, 3, 32, 32]), [[49406, 320, 2368, 49407]], 1)
    """

    def __init__(self, pairs: PairSource, tokenizer: CLIPTokenizer, preprocess: PreprocessConfig, *,
                 max_length: int) -> None:
        self.pairs, self.tokenizer, self.preprocess, self.max_length = pairs, tokenizer, preprocess, max_length

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, T) token ids, truncated to ``max_length`` (ending with the end token) and padded to the longest."""
        return self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                              return_tensors="pt").input_ids  # fmt: skip

    def __call__(self, indices: Sequence[int]) -> Batch:
        import torch

        from ..scoring.preprocess import preprocess_pil

        pixels, kept = [], []
        for index in indices:
            try:
                pixels.append(preprocess_pil(self.pairs.open_image(index), self.preprocess))
            except Exception:  # any undecodable image costs one pair, never the run  # noqa: BLE001
                continue
            kept.append(index)
        height, width = self.preprocess.output_size
        return Batch(
            pixel_values=torch.stack(pixels) if pixels else torch.zeros(0, 3, height, width),
            input_ids=(self.tokenize([self.pairs.caption(i) for i in kept]) if kept
                       else torch.zeros(0, 1, dtype=torch.long)),  # fmt: skip
            indices=kept,
            bad=len(indices) - len(kept),
            labels=[self.pairs.label(i) for i in kept],
        )


class _Batches:
    """A map-style dataset of ready batches, so a DataLoader's workers can build them in parallel."""

    def __init__(self, batches: list[list[int]], collate: Callable[[Sequence[int]], Batch]) -> None:
        self.batches, self.collate = batches, collate

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Batch:
        return self.collate(self.batches[index])


def batch_loader(batches: list[list[int]], collate: Collator, *, num_workers: int = 0) -> Any:
    """An iterable of ``Batch`` in order (a ``DataLoader`` with ``num_workers`` decoding ahead).

    Example:
        >>> list(batch_loader([], None))
        []
    """
    from torch.utils.data import DataLoader

    return DataLoader(_Batches(batches, collate), batch_size=None, shuffle=False, num_workers=num_workers,
                      collate_fn=_identity)  # fmt: skip


def _identity(batch: Batch) -> Batch:
    return batch
