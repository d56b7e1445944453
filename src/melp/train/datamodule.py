"""Data for pretraining: resumable sharded sampling, deterministic augmentation, zero-shot val sets.

Exact resume needs the data position and the augmentation to be reproducible:

* :class:`ResumableSampler` shuffles with a generator seeded by ``(seed, epoch)``, shards the
  permutation over ranks itself (so Lightning must not insert a ``DistributedSampler``), counts
  epochs itself and can start at any (epoch, offset): the position is derived from the number of
  training batches consumed, which the LightningModule stores in its checkpoints.
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

    Keys ``k >= len(dataset)`` encode an epoch: ``epoch, i = divmod(k, len(dataset))`` (see
    :class:`ResumableSampler` with ``encode_epoch``), so the augmentation of record ``i`` in
    ``epoch`` is fixed whatever the worker, prefetching or resume point.

    Args:
        dataset: any map-style dataset returning dicts.
        seed: base seed; item ``i`` in epoch ``e`` uses ``SeedSequence([seed, e, i])``.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int) -> dict:
        epoch, i = divmod(int(key), len(self.dataset))
        s = int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0])
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
        item["index"] = i
        return item


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffle, sharded over ``world_size`` ranks, resumable mid-epoch.

    The sampler counts epochs itself: every ``iter()`` yields the next epoch (from ``offset`` for
    the first one after :meth:`start`), independent of the trainer's epoch counter. Every rank gets
    ``num_samples = floor(n / world)`` (``drop_last``) or ``ceil(n / world)`` indices (padded by
    wrapping, as ``DistributedSampler`` does). With ``encode_epoch`` it yields ``epoch * n + i`` for
    :class:`IndexedDataset`.
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
        encode_epoch: bool = False,
    ) -> None:
        if n <= 0:
            raise ValueError("ResumableSampler: the dataset is empty (check the store and its row selection)")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.encode_epoch = encode_epoch
        self.epoch, self.offset = 0, 0
        per = n // world_size if drop_last else math.ceil(n / world_size)
        if per == 0:
            raise ValueError(f"ResumableSampler: {n} records cannot be sharded over {world_size} ranks")
        self.num_samples = per

    def start(self, epoch: int, offset: int = 0) -> None:
        """Make the next ``iter()`` yield ``epoch``, skipping its first ``offset`` samples on this rank."""
        self.epoch, self.offset = epoch, offset

    def indices(self, epoch: int) -> list[int]:
        """This rank's full index list for ``epoch``."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + 1_000_003 * epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.num_samples * self.world_size
        if total > len(order):  # pad by wrapping around
            order = (order * math.ceil(total / len(order)))[:total]
        return order[:total][self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = self.epoch, self.offset
        self.epoch, self.offset = epoch + 1, 0
        idx = self.indices(epoch)[offset:]
        if self.encode_epoch:
            idx = [epoch * self.n + i for i in idx]
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
    task: str | None = None  # the store's task name (task-scoped prompts)


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
