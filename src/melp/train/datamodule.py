"""Data for pretraining: resumable sharded sampling, deterministic augmentation, zero-shot val sets.

Exact resume needs the data position and the augmentation to be reproducible:

* :class:`ResumableSampler` shuffles with a generator seeded by ``(seed, epoch)``, shards the
  permutation over ranks itself (so Lightning must not insert a ``DistributedSampler``), counts
  epochs itself and can start at any (epoch, offset). For training it shards by *global batch*:
  global batch k is the contiguous block ``[k*B*W, (k+1)*B*W)`` of the epoch's permutation and
  rank r takes the r-th slice of B. The data position is therefore one number per epoch (global
  samples consumed), the same for any world size W and per-rank batch B, which is what lets a
  run resume exactly (same W) or continue the same sample order (another W); see
  :func:`advance_position`. The LightningModule stores the position in its checkpoints.
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

from melp.text.tokenizer import tokenize_reports


class IndexedDataset(Dataset):
    """Wrap a dataset: add ``"index"`` to each item and seed its randomness per (epoch, index).

    Keys ``k >= len(dataset)`` encode an epoch: ``epoch, i = divmod(k, len(dataset))`` (see
    :class:`ResumableSampler` with ``encode_epoch``), so the augmentation of record ``i`` in
    ``epoch`` is fixed whatever the worker, prefetching or resume point.

    A dataset with a ``generator`` attribute (:class:`melp.data.datasets.PretrainDataset`) draws
    from a ``torch.Generator`` seeded for the item (the global RNGs are left alone and cost
    nothing); any other dataset runs with torch's CPU, numpy's and Python's global RNGs seeded
    for the item inside a forked state. Both give the same draws for a dataset using torch.

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
        if hasattr(self.dataset, "generator"):
            owned = self.dataset.generator
            self.dataset.generator = torch.Generator().manual_seed(s)
            try:
                item = dict(self.dataset[i])
            finally:
                self.dataset.generator = owned
        else:
            item = self._seeded_globally(i, s)
        item["index"] = i
        return item

    def _seeded_globally(self, i: int, s: int) -> dict:
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                # the CPU generator only: torch.manual_seed would also (re)seed every CUDA device,
                # outside the fork, and costs ~0.3 ms a call on a machine without CUDA
                torch.default_generator.manual_seed(s)
                np.random.seed(s)
                random.seed(s)
                return dict(self.dataset[i])
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffle, sharded over ``world_size`` ranks, resumable mid-epoch.

    The sampler counts epochs itself: every ``iter()`` yields the next epoch (from ``offset`` for
    the first one after :meth:`start`), independent of the trainer's epoch counter. With
    ``encode_epoch`` it yields ``epoch * n + i`` for :class:`IndexedDataset`.

    Two shardings:

    * ``batch_size=None`` (validation): rank r takes every ``world_size``-th index; every rank
      gets ``floor(n / world)`` (``drop_last``) or ``ceil(n / world)`` indices, padded by
      wrapping as ``DistributedSampler`` does; ``offset`` counts this rank's samples.
    * ``batch_size=B`` (training): global batch k is positions ``[k*B*W, (k+1)*B*W)`` of the
      permutation, rank r takes ``[k*B*W + r*B, k*B*W + (r+1)*B)``; ``offset`` is the number of
      *global* positions already consumed in the epoch (a multiple of nothing in particular: any
      offset continues the same order). Without ``drop_last`` the last, shorter global batch is
      split evenly, padded by wrapping to ``W * ceil(R / W)`` samples.
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
        batch_size: int | None = None,
    ) -> None:
        if n <= 0:
            raise ValueError("ResumableSampler: the dataset is empty (check the store and its row selection)")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.encode_epoch = encode_epoch
        self.batch_size = batch_size
        self.epoch, self.offset = 0, 0
        per = n // world_size if drop_last else math.ceil(n / world_size)
        if per == 0:
            raise ValueError(f"ResumableSampler: {n} records cannot be sharded over {world_size} ranks")
        self.num_samples = per

    def start(self, epoch: int, offset: int = 0) -> None:
        """Make the next ``iter()`` yield ``epoch``, skipping ``offset`` samples (this rank's without
        ``batch_size``, global positions with it)."""
        self.epoch, self.offset = epoch, offset

    def _order(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + 1_000_003 * epoch)
            return torch.randperm(self.n, generator=g).tolist()
        return list(range(self.n))

    def indices(self, epoch: int, offset: int = 0) -> list[int]:
        """This rank's index list for ``epoch`` (from ``offset``, see :meth:`start`)."""
        order = self._order(epoch)
        if self.batch_size is None:
            total = self.num_samples * self.world_size
            if total > len(order):  # pad by wrapping around
                order = (order * math.ceil(total / len(order)))[:total]
            return order[:total][self.rank : total : self.world_size][offset:]
        b, w = self.batch_size, self.world_size
        out: list[int] = []
        pos = offset
        while pos < self.n:
            size = min(b * w, self.n - pos)
            if size < b * w:
                if self.drop_last:
                    break
                share = math.ceil(size / w)
                block = [order[pos + (j % size)] for j in range(share * w)]  # pad by wrapping
                out.extend(block[self.rank * share : (self.rank + 1) * share])
                break
            out.extend(order[pos + self.rank * b : pos + (self.rank + 1) * b])
            pos += b * w
        return out

    def __iter__(self) -> Iterator[int]:
        epoch, offset = self.epoch, self.offset
        self.epoch, self.offset = epoch + 1, 0
        idx = self.indices(epoch, offset)
        if self.encode_epoch:
            idx = [epoch * self.n + i for i in idx]
        return iter(idx)

    def __len__(self) -> int:
        if self.batch_size is None:
            return self.num_samples
        g = self.batch_size * self.world_size  # a full epoch on this rank
        full, rest = divmod(self.n, g)
        return full * self.batch_size + (
            0 if self.drop_last or not rest else math.ceil(rest / self.world_size)
        )


class StreamBatchSampler(Sampler[list[int]]):
    """This rank's training batches for a whole run: consecutive epochs of ``sampler`` (a
    :class:`ResumableSampler` with ``batch_size``), cut into per-rank batches, from the sampler's
    start position for ``total - done`` batches.

    Lightning sees the whole run as one epoch of ``total`` batches (``len``). So a checkpoint is
    always restored by Lightning's mid-epoch path (it counts the ``done`` batches as fetched), and
    an epoch boundary of the data, which the sampler counts itself, never coincides with one of
    Lightning's: resuming a checkpoint written at the end of a data epoch is as exact as any other.
    An iterator that is stopped and re-created continues the stream where the last one stopped
    (the batch sampler runs in the main process, also with loader workers).
    """

    def __init__(self, sampler: ResumableSampler, total: int, done: int = 0) -> None:
        if sampler.batch_size is None:
            raise ValueError("StreamBatchSampler needs a ResumableSampler with batch_size")
        if not 0 <= done <= total:
            raise ValueError(f"StreamBatchSampler: {done} batches done of {total}")
        self.sampler, self.total, self.left = sampler, total, total - done

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[list[int]]:
        s, b = self.sampler, self.sampler.batch_size
        while self.left > 0:
            epoch, offset = s.epoch, s.offset
            idx = s.indices(epoch, offset)
            if not idx:
                raise ValueError(f"StreamBatchSampler: epoch {epoch} has no batch from offset {offset}")
            if s.encode_epoch:
                idx = [epoch * s.n + i for i in idx]
            for k in range(0, len(idx), b):
                if self.left == 0:
                    return
                # the position the next batch starts from (global samples of the epoch)
                s.epoch, s.offset = epoch, offset + (k // b + 1) * b * s.world_size
                if k + b >= len(idx):
                    s.epoch, s.offset = epoch + 1, 0
                self.left -= 1
                yield idx[k : k + b]


def batches_per_epoch(n: int, batch_size: int, world_size: int, drop_last: bool, offset: int = 0) -> int:
    """Global batches (= batches per rank) in an epoch of ``n`` records from global ``offset``."""
    rest, g = max(n - offset, 0), batch_size * world_size
    return rest // g if drop_last else math.ceil(rest / g)


def advance_position(
    position: tuple[int, int], batches: int, n: int, batch_size: int, world_size: int, drop_last: bool
) -> tuple[int, int]:
    """The data position ``(epoch, global offset)`` after ``batches`` more global batches of
    ``batch_size * world_size`` from ``position`` (the sharding of :class:`ResumableSampler`);
    an epoch that is used up gives ``(epoch + 1, 0)``."""
    epoch, offset = position
    first = batches_per_epoch(n, batch_size, world_size, drop_last, offset)
    if batches < first:
        return epoch, offset + batches * batch_size * world_size
    batches -= first
    full = batches_per_epoch(n, batch_size, world_size, drop_last)
    epoch += 1 + batches // full
    return epoch, (batches % full) * batch_size * world_size


def collate(items: list[dict]) -> dict:
    """``default_collate``; string fields (report, id, patient) stay lists of str."""
    return default_collate(items)


class PretrainCollate:
    """Collate pretraining items and tokenise their reports (in the loader's worker, off the step).

    Adds ``input_ids`` / ``attention_mask`` (B, S) as :meth:`MELPModel.tokenize` would and, for
    a model with ``decoder.sparse_logits``, ``caption_index`` (N,) (the flat non-pad target
    positions, :func:`melp.models.melp.caption_positions`), so that the training forward needs no
    host-device sync. Picklable (holds the tokenizer, not the model).
    """

    def __init__(self, tokenizer, max_length: int, padding: str, sparse_logits: bool, pad_id: int) -> None:
        self.tokenizer, self.max_length, self.padding = tokenizer, max_length, padding
        self.sparse_logits, self.pad_id = sparse_logits, pad_id

    @classmethod
    def for_model(cls, model) -> PretrainCollate:
        t = model.config["text"]
        return cls(
            model.tokenizer,
            t["max_length"],
            t["padding"],
            model.config["decoder"]["sparse_logits"],
            model.pad_id,
        )

    def __call__(self, items: list[dict]) -> dict:
        from melp.models.melp import caption_positions

        batch = collate(items)
        enc = tokenize_reports(self.tokenizer, list(batch["report"]), self.max_length, self.padding)
        batch.update(enc)
        if self.sparse_logits:
            batch["caption_index"] = caption_positions(enc["input_ids"], enc["attention_mask"], self.pad_id)
        return batch


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
    collate_fn=None,
) -> DataLoader:
    """A DataLoader over ``dataset`` driven by ``sampler`` (persistent workers when > 0); a
    :class:`StreamBatchSampler` gives the batches itself."""
    common = {"num_workers": num_workers, "pin_memory": pin_memory, "collate_fn": collate_fn or collate,
              "persistent_workers": num_workers > 0}  # fmt: skip
    if isinstance(sampler, StreamBatchSampler):
        return DataLoader(dataset, batch_sampler=sampler, **common)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)
