"""Cost of the per-record CRC-32 that ``ECGStore.signal`` checks at every read.

Prepares a store of N random 12-lead records at 500 Hz x 10 s (the paper's input, 120 kB of
float16 per record), then times, over every record (page cache warm, best of 3 passes):

* ``store.signal(i)``: the checked read (CRC-32 of the record's bytes, float32 copy, finite check)
* the same read without the CRC (memmap slice -> float32 copy -> finite check)

    python benchmarks/bench_store_read.py [--n 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from melp.data import signal as sig
from melp.data.store import ECGStore, prepare


def _best(fn, n: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - start)
    return best / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="records in the store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "raw"
        root.mkdir()
        rng = np.random.default_rng(0)
        for k in range(args.n):
            np.save(root / f"r{k}.npy", rng.standard_normal((12, 5000)).astype(np.float32))
        files = [f"r{k}.npy" for k in range(args.n)]
        pd.DataFrame({"file": files, "report": ["x"] * args.n}).to_csv(root / "records.csv", index=False)
        prepare(
            "generic",
            root,
            Path(tmp) / "store",
            rate=500,
            seconds=10,
            progress=False,
            leads=",".join(sig.CANONICAL_LEADS),
            sample_rate=500,
        )
        store = ECGStore(Path(tmp) / "store")
        rows = store.manifest["row"].to_numpy()

        def unchecked(i: int) -> None:
            x = np.asarray(store.signals[rows[i]], dtype=np.float32)
            np.isfinite(x).all()

        _best(store.signal, len(store), 1)  # warm the page cache
        checked_s = _best(store.signal, len(store))
        plain_s = _best(unchecked, len(store))
    extra = (checked_s - plain_s) * 1e6
    print(f"records: {len(store)} x (12, 5000) float16")
    print(f"checked read (store.signal): {checked_s * 1e6:.1f} us/record")
    print(f"unchecked read:             {plain_s * 1e6:.1f} us/record")
    print(f"result: crc32 check per record = {extra:.1f}us ({extra / (plain_s * 1e6) * 100:.0f}% of a read)")


if __name__ == "__main__":
    main()
