"""Beat alignment loss: vectorised (melp.losses.beat) vs a per-report Python loop (reference style).

The loop baseline follows the research code's structure: for each report i, its ragged sentence
list e_i (n_i, D) is scored against all B ECGs at once, then the (B, B) similarity matrix goes
through the two cross-entropies. Timed: forward + backward, median of repeats.

    python benchmarks/bench_beat_loss.py [--batches 64 256] [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from melp.losses.beat import beat_loss, pad_ragged


def loop_beat_loss(beats, sent_list, t1=4.0, t2=5.0, t3=10.0):
    """Per-report loop; each iteration vectorised over the B ECGs (like the reference)."""
    cols = []
    for e in sent_list:  # e: (n_i, D)
        a = torch.einsum("jqd,sd->jqs", beats, e).softmax(-1)  # (B, Q, n_i), softmax over sentences
        beta = (t1 * a).transpose(1, 2).softmax(-1)  # (B, n_i, Q)
        c = beta @ beats  # (B, n_i, D)
        cos = F.cosine_similarity(e[None].expand_as(c), c, dim=-1)  # (B, n_i)
        cols.append(t3 * torch.log(torch.exp(t2 * cos).sum(-1)))  # (B,)
    sim = torch.stack(cols, 1)  # (B_ecg, B_report)
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats):
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(batch: int, device: torch.device, repeats: int, q: int = 12, d: int = 256, max_sent: int = 16):
    g = torch.Generator().manual_seed(batch)
    counts = torch.randint(1, 9, (batch,), generator=g)  # 1..8 sentences per report
    beats = torch.randn(batch, q, d, generator=g).to(device).requires_grad_(True)
    flat = torch.randn(int(counts.sum()), d, generator=g).to(device).requires_grad_(True)
    padded, mask = pad_ragged(flat.detach(), counts.to(device), max_len=max_sent)
    padded.requires_grad_(True)
    sent_list = list(torch.split(flat, counts.tolist()))

    def vec():
        beats.grad = padded.grad = None
        beat_loss(beats, padded, mask).backward()

    def loop():
        beats.grad = flat.grad = None
        loop_beat_loss(beats, sent_list).backward()

    ref = loop_beat_loss(beats, sent_list).item()
    got = beat_loss(beats, padded, mask).item()
    assert abs(ref - got) < 1e-3 * max(1.0, abs(ref)), (ref, got)
    tv, tl = _time(vec, device, repeats), _time(loop, device, repeats)
    print(
        f"batch {batch:4d} on {device.type}: vectorised {tv * 1e3:8.2f} ms  loop {tl * 1e3:8.2f} ms  speed-up {tl / tv:6.1f}x"
    )
    return tl / tv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, Q=12, D=256, 1-8 sentences/report, M=16"
    )
    ratios = {b: run(b, device, args.repeats) for b in args.batches}
    head = max(ratios)
    print(
        f"result: beat-loss fwd+bwd speed-up vectorised vs loop at batch {head} ({device.type}) = {ratios[head]:.1f}x"
    )


if __name__ == "__main__":
    main()
