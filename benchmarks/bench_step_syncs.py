"""Host-device syncs and op count of one training step (torch profiler, CPU).

One full library step (:func:`melp.train.step.train_step`: forward, the three losses, backward,
fused AdamW, logit-scale clamp, device-side loss monitor) of the paper config ``melp-small``
(500 Hz x 5000 samples, 8 x 768 wav2vec2 encoder, 6 x 768 caption decoder) with a randomly
initialised BERT-base text tower (``text.from_config``; the paper's ``fuyingw/heart_bert`` is not
available offline), on batches collated as the training loader does (tokens and caption indices
built on the host, outside the step). Counted profiler events inside the step:

* ``aten::item`` / ``aten::_local_scalar_dense``: a device value read by the host (a sync on GPU);
* ``aten::nonzero``: a data-dependent shape (a sync on GPU; boolean-mask indexing calls it);
* all ``aten::`` ops (each one at least one kernel launch on GPU).

Goals: 0 syncs, and an op count that does not grow with the batch. Each batch size is profiled
after one warm-up step. ``--sparse`` also measures ``decoder.sparse_logits``.

One CPU-only exception is reported on its own line and not counted: the CPU kernel of the fused
AdamW (``aten::_fused_adamw_``) reads each parameter's CPU step counter with ``item()`` inside the
kernel. These are host reads of host memory; on CUDA the fused kernel reads the counters on the
device (no ``item()`` at all), which is why the library uses the fused optimizer.

    python benchmarks/bench_step_syncs.py [--batches 4 16] [--sparse]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_train_step import BERT_BASE, reports

import melp
from melp.losses import MELPLoss
from melp.train.datamodule import PretrainCollate
from melp.train.optim import build_optimizer
from melp.train.step import StepMonitor, train_step
from melp.train.syncs import count_syncs


def build(sparse: bool):
    """``melp-small`` with a random BERT-base text tower, its loss, optimizer and collate."""
    model = melp.create_model(
        "melp-small",
        text={"name_or_path": "minilm", "from_config": BERT_BASE},
        decoder={"sparse_logits": sparse},
    )
    model.train()
    loss_fn = MELPLoss()  # the paper's weights 1 / 2 / 0.2: all three terms
    opt = build_optimizer(model, 2e-4, 0.2, (0.9, 0.95), 1e-8)
    return model, loss_fn, opt, PretrainCollate.for_model(model)


def batch_of(collate: PretrainCollate, b: int, n_samples: int) -> dict:
    g = torch.Generator().manual_seed(b)
    # as the pretraining dataset gives them; every 4th record is 6 s of 10 (the padding mask is on)
    items = [
        {
            "ecg": torch.randn(12, n_samples, generator=g),
            "length": n_samples * 6 // 10 if i % 4 == 3 else n_samples,
            "report": r,
        }
        for i, r in enumerate(reports(b, seed=b))
    ]
    return collate(items)


def count_step(model, loss_fn, opt, batch: dict, step: int):
    """Profile one :func:`train_step` (after a warm-up step); returns (SyncCount, seconds)."""
    monitor = StepMonitor()
    train_step(model, loss_fn, opt, batch, monitor, step)  # warm-up (optimizer state, allocator)
    t = time.perf_counter()
    r = count_syncs(lambda: train_step(model, loss_fn, opt, batch, monitor, step + 1))
    return r, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    p.add_argument("--sparse", action="store_true", help="also measure decoder.sparse_logits")
    args = p.parse_args()
    torch.manual_seed(0)
    worst = 0
    for sparse in (False, True) if args.sparse else (False,):
        model, loss_fn, opt, collate = build(sparse)
        n = model.config["ecg"]["n_samples"]
        ops = {}
        for b in args.batches:
            r, seconds = count_step(model, loss_fn, opt, batch_of(collate, b, n), 2 * b)
            worst = max(worst, r.syncs)
            ops[b] = r.ops
            detail = ", ".join(f"{k} {v}" for k, v in r.by_op.items())
            print(
                f"melp-small sparse_logits={sparse} B={b:3d}: {detail}; aten ops {r.ops}; "
                f"step {seconds:.1f} s under the profiler (CPU, {torch.get_num_threads()} threads)"
            )
            if r.where:
                print(f"  syncs inside: {sorted(set(r.where))}")
            print(
                f"  not counted: {r.cpu_optimizer_reads} step-counter reads inside the CPU fused AdamW kernel"
            )
        first, last = args.batches[0], args.batches[-1]
        print(f"  op count B={first} -> B={last}: {ops[first]} -> {ops[last]} ({ops[last] - ops[first]:+d})")
    # aten::item dispatches to aten::_local_scalar_dense: a sync is counted once
    print(f"result: host syncs per training step = {worst}")


if __name__ == "__main__":
    main()
