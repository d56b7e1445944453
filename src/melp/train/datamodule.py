"""Data for pretraining: resumable sharded sampling, deterministic augmentation, zero-shot val sets.

Exact resume needs the data position and the augmentation to be reproducible:

* :class:`ResumableSampler` shuffles with a generator seeded by ``(seed, epoch)``, shards the
  permutation over ranks itself (so Lightning must not insert a ``DistributedSampler``) and can
  start an epoch at an offset (the batches already consumed before a checkpoint).
* :class:`IndexedDataset` draws each item's random lead mask from RNGs seeded by
  ``(seed, epoch, index)`` inside a forked RNG scope, so the augmentation of a record does not
  depend on worker count, prefetching or where a run was resumed, and loading data never consumes
  the global RNG (dropout stays reproducible too). It also adds the record ``index`` used to drop
  the duplicates that pad the last validation shard.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate


class IndexedDataset(Dataset):
    """Wrap a dataset: add ``"index"`` to each item and seed its randomness per (epoch, index).

    Args:
        dataset: any map-style dataset returning dicts.
        seed: base seed; item ``i`` in epoch ``e`` uses seed ``hash((seed, e, i))``.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        s = int(np.random.SeedSequence([self.seed, self.epoch, int(i)]).generate_state(1)[0])
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                np.random.seed(s)
                random.seed(s)
                item = dict(self.dataset[i])
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        item["index"] = int(i)
        return item


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffle, sharded over ``world_size`` ranks, resumable mid-epoch.

    Every rank gets ``num_samples = floor(n / world)`` (``drop_last``) or ``ceil(n / world)``
    indices (the permutation is padded by wrapping, as ``DistributedSampler`` does).
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        dataset: IndexedDataset | None = None,
    ) -> None:
        if n <= 0:
            raise ValueError("ResumableSampler: the dataset is empty (check the store and its row selection)")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.dataset = dataset
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples already consumed on this rank)
        per = n // world_size if drop_last else math.ceil(n / world_size)
        if per == 0:
            raise ValueError(f"ResumableSampler: {n} records cannot be sharded over {world_size} ranks")
        self.num_samples = per

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch
        if self.dataset is not None:
            self.dataset.epoch = epoch

    def resume(self, epoch: int, consumed: int) -> None:
        """Skip the first ``consumed`` samples of this rank's shard the next time ``epoch`` starts."""
        self._resume = (epoch, consumed)

    def indices(self) -> list[int]:
        """This rank's full index list for the current epoch."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.num_samples * self.world_size
        if total > len(order):  # pad by wrapping around
            order = (order * math.ceil(total / len(order)))[:total]
        return order[:total][self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        idx = self.indices()
        if self._resume is not None and self._resume[0] == self.epoch:
            idx = idx[self._resume[1] :]
        self._resume = None
        return iter(idx)

    def __len__(self) -> int:
        return self.num_samples


def collate(items: list[dict]) -> dict:
    """``default_collate``; string fields (report, id, patient) stay lists of str."""
    return default_collate(items)


@dataclass
class ValSet:
    """One zero-shot validation set, ready to iterate."""

    name: str
    classes: list[str]
    dataset: IndexedDataset


def make_loader(
    dataset: IndexedDataset,
    sampler: Sampler,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    drop_last: bool,
) -> DataLoader:
    """A DataLoader over ``dataset`` driven by ``sampler`` (persistent workers when > 0)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=collate,
        persistent_workers=num_workers > 0,
    )
