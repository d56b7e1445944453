"""The data feed at MIMIC-IV-ECG scale, on a synthetic MIMIC layout (melp.data.synthetic).

Measures, for the paper's setting (500 Hz x 10 s, 12 leads):

1. ``melp prepare mimic`` throughput (records/s, and per core) with 1 and 2 workers, on the
   fast WFDB path of the MIMIC reader; each run is a fresh process, the faster of two is kept
   (the raw files are in the page cache: this is the CPU cost, not the disk's).
2. Peak memory (max RSS of the prepare process and its workers) at N = 2,000 and N = 20,000:
   it should not grow with N beyond the index itself.
3. Store size per record (signals.npy + manifest + rejects).
4. Training-pipeline throughput, one process, one thread: store -> lead mask -> normalisation
   -> collate (items/s per core), and the same with the reports tokenised in the collate
   (what the training loader does, :class:`melp.train.datamodule.PretrainCollate`).

Goals: prepare >= 2,000 records/s/core; pipeline >= 5,000 items/s/core; memory flat in N.

    python benchmarks/bench_scale.py [--dir /tmp/melp-scale] [--sizes 2000 20000] [--items 3000]

The synthetic folders are kept in ``--dir`` and reused (120 KB per record at 500 Hz; 20,000
records are 2.4 GB, plus the same again for the store).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

RATE, SECONDS = 500, 10

_PREPARE = textwrap.dedent(
    """
    import json, resource, sys, time
    from melp.data.store import prepare
    root, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t = time.perf_counter()
    counts = prepare("mimic", root, out, rate={rate}, seconds={seconds}, workers=workers, progress=False,
                     overwrite=True)
    seconds = time.perf_counter() - t
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({{"seconds": seconds, "kept": counts["kept"], "rejected": counts["rejected"],
                      "rss_mib": me / 1024, "worker_rss_mib": kids / 1024}}))
    """
).format(rate=RATE, seconds=SECONDS)


def layout(folder: Path, n: int) -> Path:
    """The synthetic MIMIC folder of ``n`` records (written once, then reused)."""
    from melp.data.synthetic import write_mimic_layout

    root = folder / f"mimic-{n}"
    done = root / ".complete"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        write_mimic_layout(root, n, seed=n)
        done.write_text("ok")
        print(f"wrote a synthetic MIMIC-IV-ECG folder of {n} records in {time.perf_counter() - t:.0f} s")
    return root


def prepare_run(root: Path, out: Path, workers: int) -> dict:
    """One ``prepare`` in a fresh process; returns its timing, counts and peak memory."""
    res = subprocess.run(
        [sys.executable, "-c", _PREPARE, str(root), str(out), str(workers)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode:
        raise RuntimeError(f"prepare failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def store_size(out: Path, kept: int) -> dict:
    sizes = {
        name: (out / name).stat().st_size for name in ("signals.npy", "manifest.parquet", "rejects.parquet")
    }
    return {"per_record_kib": sum(sizes.values()) / kept / 1024, **sizes}


def pipeline(store_dir: Path, n_items: int, batch_size: int = 64) -> dict:
    """Items/s of store -> lead mask -> normalisation -> collate (and + tokenisation), 1 thread."""
    import torch

    torch.set_num_threads(1)
    from melp.data.datasets import PretrainDataset
    from melp.data.store import ECGStore
    from melp.text.tokenizer import load_tokenizer
    from melp.train.datamodule import IndexedDataset, PretrainCollate, collate

    store = ECGStore(store_dir)
    ds = IndexedDataset(PretrainDataset(store, None, lead_mask_p=0.5, normalize="minmax"), seed=0)
    n = min(n_items, len(ds))
    tok = load_tokenizer("minilm")
    with_tokens = PretrainCollate(tok, 128, "longest", sparse_logits=True, pad_id=int(tok.pad_token_id))
    out = {}
    for name, fn in (("collate", collate), ("collate+tokenize", with_tokens)):
        for i in range(min(64, n)):  # warm the page cache and the allocator
            ds[i]
        t = time.perf_counter()
        for start in range(0, n, batch_size):
            fn([ds[i] for i in range(start, min(n, start + batch_size))])
        out[name] = n / (time.perf_counter() - t)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/melp-scale"))
    p.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000], metavar=("SMALL", "LARGE"))
    p.add_argument("--items", type=int, default=3000, help="items read in the pipeline test")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    small, large = args.sizes
    print(f"synthetic MIMIC-IV-ECG, {RATE} Hz x {SECONDS} s; timings on this machine's CPU")

    rates, mem, kept = {}, {}, 0
    root = layout(args.dir, small)
    for workers in (1, 2):  # the faster of two runs (the first one also warms caches)
        runs = [prepare_run(root, args.dir / f"store-{small}-w{workers}", workers) for _ in range(2)]
        r = min(runs, key=lambda x: x["seconds"])
        kept = r["kept"]
        rates[workers] = small / r["seconds"]
        mem[(small, workers)] = max(r["rss_mib"], r["worker_rss_mib"])
        print(
            f"prepare N={small} workers={workers}: {r['seconds']:.1f} s, {rates[workers]:.0f} records/s "
            f"({rates[workers] / workers:.0f} /s/core), kept {r['kept']}, rejected {r['rejected']}, "
            f"peak RSS {r['rss_mib']:.0f} MiB (workers {r['worker_rss_mib']:.0f} MiB)"
        )
    size = store_size(args.dir / f"store-{small}-w1", kept)
    print(
        f"store size: {size['per_record_kib']:.1f} KiB per record (signals.npy {size['signals.npy'] / 2**20:.0f} MiB, "
        f"manifest {size['manifest.parquet'] / 2**10:.0f} KiB, rejects {size['rejects.parquet'] / 2**10:.0f} KiB)"
    )

    big = layout(args.dir, large)
    r = prepare_run(big, args.dir / f"store-{large}-w2", 2)
    mem[(large, 2)] = max(r["rss_mib"], r["worker_rss_mib"])
    print(
        f"prepare N={large} workers=2: {r['seconds']:.1f} s, {large / r['seconds']:.0f} records/s, "
        f"peak RSS {r['rss_mib']:.0f} MiB (workers {r['worker_rss_mib']:.0f} MiB)"
    )
    growth = mem[(large, 2)] / mem[(small, 2)]
    print(
        f"peak memory N={small} -> N={large} (2 workers): {mem[(small, 2)]:.0f} -> {mem[(large, 2)]:.0f} MiB (x{growth:.2f})"
    )
    shutil.rmtree(args.dir / f"store-{large}-w2", ignore_errors=True)  # 2.4 GB

    items = pipeline(args.dir / f"store-{small}-w1", args.items)
    for name, rate in items.items():
        print(f"pipeline store -> lead mask -> normalise -> {name}: {rate:.0f} items/s per core")
    print(f"result: prepare throughput (1 worker) = {rates[1]:.0f} records/s/core")


if __name__ == "__main__":
    main()
