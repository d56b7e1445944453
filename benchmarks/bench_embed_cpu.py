"""What the benchmark's feature pass costs on a CPU: ``model.embed`` throughput of a paper-size
ECG encoder (``melp-small``'s ECG side, random weights, no text tower) at 500 Hz x 10 s.

``melp benchmark`` embeds every record of each store once (the probe heads then train on cached
features), so records / (ECG/s) is its running time on a full dataset, to within the head fits.

    python benchmarks/bench_embed_cpu.py [--threads 2] [--batch 16] [--seconds 60]
"""

from __future__ import annotations

import argparse
import time

import torch

from melp.models import create_model

# published record counts the benchmark embeds (all records of the store: probes train on them)
DATASETS = {"PTB-XL": 21_799, "CPSC 2018": 6_877, "Chapman / CSN": 10_646}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0, help="time budget of the measurement")
    p.add_argument("--model", default="melp-small")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # the ECG side only: the timed pass never touches the text tower
    model = create_model(args.model, text=None, decoder=None, heads={"caption_dim": 768}).eval()
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.randn(args.batch, 12, 5000)
    with torch.inference_mode():
        model.embed(x[:2])  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            model.embed(x)
            done += len(x)
        rate = done / (time.perf_counter() - start)
    print(
        f"{args.model} ECG side: {n_params / 1e6:.1f} M parameters, {args.threads} threads, batch {args.batch}"
    )
    for name, n in DATASETS.items():
        print(f"  {name}: {n:,} records -> about {n / rate / 60:.0f} min for the feature pass")
    print(f"result: {args.model} embed on CPU ({args.threads} threads, 500 Hz x 10 s) = {rate:.1f} ECG/s")


if __name__ == "__main__":
    main()
