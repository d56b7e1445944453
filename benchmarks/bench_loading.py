"""Loading speed: store-backed datasets vs reading each WFDB record per sample (the paper's way).

Both paths produce the same model input for the same PTB-XL records (checked before timing):
a float32 (12, T) tensor in canonical lead order, min-max normalised per record.

* store:    ``DownstreamDataset`` / ``PretrainDataset`` over a store prepared once (float16 memmap)
* baseline: per item ``wfdb.rdrecord`` + lead reorder + min-max (as the reference datasets do)
* fast-read baseline: the same per item, but with melp's format-16 reader instead of wfdb (wfdb's
  header parser is slow under pandas 3, so this shows how much of the gap is wfdb itself)

Both run at the files' own rate (100 Hz; the shipped PTB-XL copy has no 500 Hz files), so the
baseline does no resampling; ``--rate 500`` makes the baseline resample too (then the store also
stores 500 Hz). One warm-up pass each (page cache warm for both), then timed passes in a plain
loop (no DataLoader) and optionally through a DataLoader with workers.

    python benchmarks/bench_loading.py [--root data/ptbxl-mini] [--n 1625] [--rate 100] [--loader-workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import wfdb
from torch.utils.data import DataLoader, Dataset

from melp.data import signal as sig
from melp.data.datasets import DownstreamDataset, PretrainDataset
from melp.data.formats.wfdb import read_record
from melp.data.store import ECGStore, prepare


class WfdbDataset(Dataset):
    """The paper's way: read the WFDB record for every item, reorder leads, min-max normalise."""

    def __init__(self, root: Path, paths: list[str], rate: float, n_samples: int, fast: bool = False) -> None:
        self.root, self.paths, self.rate, self.n_samples, self.fast = root, paths, rate, n_samples, fast

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        record = str(self.root / self.paths[i].removesuffix(".hea"))
        if self.fast:
            s = read_record(record)
            data, names, fs = s.data, s.leads, s.rate
        else:
            rec = wfdb.rdrecord(record)
            data, names, fs = rec.p_signal.T, rec.sig_name, rec.fs
        x, _ = sig.reorder_leads(data, names)  # (12, T)
        if fs != self.rate:
            x = sig.resample(x, fs, self.rate)
        x, length = sig.crop_or_pad(x, self.n_samples)
        return {"ecg": torch.from_numpy(sig.normalize_minmax(x, length))}


def _rate(ds: Dataset, n: int, passes: int) -> float:
    """Items per second over ``passes`` full loops of the first ``n`` items (plain loop)."""
    t0 = time.perf_counter()
    for _ in range(passes):
        for i in range(n):
            ds[i]
    return passes * n / (time.perf_counter() - t0)


def _rate_loader(ds: Dataset, workers: int, batch: int = 64) -> float:
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False)
    for _ in loader:  # warm-up (worker start-up)
        pass
    t0 = time.perf_counter()
    n = sum(b["ecg"].shape[0] for b in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).parents[1] / "data" / "ptbxl-mini")
    ap.add_argument("--n", type=int, default=1625, help="records used (first n of the store)")
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--store", type=Path, default=None, help="reuse/prepare this store (default: temp dir)")
    ap.add_argument(
        "--loader-workers", type=int, default=0, help="also time DataLoaders with this many workers"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)

    tmp = tempfile.TemporaryDirectory()
    out = args.store or Path(tmp.name) / "store"
    t0 = time.perf_counter()
    prepare("ptbxl", args.root, out, rate=args.rate, seconds=10, progress=False)
    t_prep = time.perf_counter() - t0
    store = ECGStore(out)
    n = min(args.n, len(store))
    down = DownstreamDataset(store, "super_class", np.arange(n), drop_unlabeled=False)
    pre = PretrainDataset(store, np.arange(n), generator=torch.Generator().manual_seed(0))
    paths = store.manifest["path"].tolist()[:n]
    base = WfdbDataset(args.root, paths, args.rate, store.n_samples)
    fast = WfdbDataset(args.root, paths, args.rate, store.n_samples, fast=True)

    # same input both ways (float16 storage: ~1e-3 relative)
    for i in (0, n // 2, n - 1):
        np.testing.assert_allclose(down[i]["ecg"].numpy(), base[i]["ecg"].numpy(), atol=2e-3)
        np.testing.assert_array_equal(fast[i]["ecg"].numpy(), base[i]["ecg"].numpy())

    for ds in (down, pre, base, fast):  # warm-up (the files are already in the page cache: prepare read them)
        _rate(ds, min(n, 100), 1)
    r_base = _rate(base, n, 1)
    r_fast = _rate(fast, n, 1)
    r_down = _rate(down, n, 3)
    r_pre = _rate(pre, n, 3)
    print(f"records: {n}, rate {args.rate:g} Hz, T = {store.n_samples}; prepare (one-off): {t_prep:.1f} s")
    print(f"baseline  wfdb per item        : {r_base:10.0f} samples/s")
    print(f"baseline  fast read per item   : {r_fast:10.0f} samples/s  ({r_fast / r_base:.1f}x)")
    print(f"store     DownstreamDataset    : {r_down:10.0f} samples/s  ({r_down / r_base:.1f}x)")
    print(f"store     PretrainDataset+mask : {r_pre:10.0f} samples/s  ({r_pre / r_base:.1f}x)")
    print(
        f"store vs fast-read baseline    : {r_down / r_fast:.1f}x (DownstreamDataset), {r_pre / r_fast:.1f}x (Pretrain)"
    )
    if args.loader_workers:
        w = args.loader_workers
        lb, ld = _rate_loader(base, w), _rate_loader(down, w)
        print(f"DataLoader({w} workers, batch 64): baseline {lb:.0f}/s, store {ld:.0f}/s ({ld / lb:.1f}x)")
    print(
        f"result: store-backed DownstreamDataset speed-up over per-sample WFDB reading = {r_down / r_base:.1f}x"
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
