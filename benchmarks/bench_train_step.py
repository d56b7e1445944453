"""Training-step and inference throughput of the library step (pairs/s, ECG/s, peak memory).

The step is :func:`melp.train.step.train_step` (forward, the three losses, backward, fused AdamW,
logit-scale clamp, device-side monitor) on batches collated as the training loader does, under
bf16 autocast on CUDA, eager and with ``torch.compile`` (inductor; the compile time is reported
apart). Inference is ``encode_ecg`` (bf16, no grad), eager and compiled.

CUDA (the default when a GPU is present): the paper config ``melp-small`` (500 Hz x 5000, 8 x 768
encoder, 6 x 768 decoder, random BERT-base text tower from ``text.from_config``) at B = 64 and
256; ``encode_ecg`` at B = 256. Anchors, the paper's code on one H100: 106 pairs/s at B = 64
(18.2 GiB), 133 pairs/s at B = 256 (61.4 GiB), 2,285 ECG/s inference. Goals: >= 530 pairs/s at
B = 64 within 18 GiB; >= 7,000 ECG/s.

``--tiny``: ``melp-test`` at B = 4 in fp32 (a CPU smoke run of the same code path).
``--naive``: also the reference-style per-sample sentence pooling and beat loss (the ratio of
the vectorised heads to it, forward + backward only).

    python benchmarks/bench_train_step.py                       # CUDA: the full set of figures
    python benchmarks/bench_train_step.py --device cpu --tiny --steps 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import melp
from melp.losses import MELPLoss
from melp.losses.caption import caption_loss
from melp.losses.clip import clip_loss
from melp.train.datamodule import PretrainCollate
from melp.train.optim import build_optimizer
from melp.train.step import StepMonitor, compile_forward, train_step

WORDS = "sinus rhythm left axis deviation atrial fibrillation abnormal normal ecg borderline t wave changes".split()
BERT_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
}


def reports(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        sents = []
        for _ in range(int(torch.randint(1, 9, (1,), generator=g))):
            k = int(torch.randint(2, 6, (1,), generator=g))
            sents.append(" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (k,), generator=g)))
        out.append(". ".join(sents) + ".")
    return out


def loop_pool_sentences(model, feats, ids, mask):
    """Reference-style pooling: per sample, find '.' positions, average non-special tokens per span."""
    special = model.special_ids.tolist()
    m = model.config["max_sentences"]
    out = feats.new_zeros(feats.shape[0], m, feats.shape[-1])
    out_mask = torch.zeros(feats.shape[0], m, dtype=torch.bool, device=feats.device)
    for b in range(ids.shape[0]):
        row, valid = ids[b].tolist(), mask[b].tolist()
        cuts = [0] + [t + 1 for t, i in enumerate(row) if i == model.dot_id]
        k = 0
        for s, e in zip(cuts, cuts[1:] + [len(row)]):
            keep = [t for t in range(s, e) if valid[t] and not special[row[t]]]
            if keep and k < m:
                out[b, k] = feats[b, keep].mean(0)
                out_mask[b, k] = True
                k += 1
    return out, out_mask


def loop_beat_loss(beats, sentences, mask, t1=4.0, t2=5.0, t3=10.0):
    """Per-report loop over ragged sentence lists (reference structure)."""
    beats = beats.float()
    cols = []
    for i in range(sentences.shape[0]):
        e = sentences[i][mask[i]].float()  # (n_i, D): host sync, like the reference
        a = torch.einsum("jqd,sd->jqs", beats, e).softmax(-1)
        beta = (t1 * a).transpose(1, 2).softmax(-1)
        c = beta @ beats
        cos = F.cosine_similarity(e[None].expand_as(c), c, dim=-1)
        cols.append(t3 * torch.log(torch.exp(t2 * cos).sum(-1)))
    sim = torch.stack(cols, 1)
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))


def naive_step(model, x, ids, mask):
    """Forward + loss with the naive pooling and beat loss (same model, same weights)."""
    tokens, frame_mask = model.ecg_tokens(x)
    _, beats = model.beat_embeddings(tokens, frame_mask)
    ctx = model.caption_context(tokens, frame_mask)
    feats, cls = model.text_features(ids, mask)
    sent, smask = loop_pool_sentences(model, feats, ids, mask)
    sentences = model.sent_proj(sent)
    logits = model.decoder(feats[:, :-1], ctx)
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, model.pad_id)
    ze, zt = F.normalize(beats.mean(1), dim=-1), F.normalize(model.text_proj(cls), dim=-1)
    return (
        clip_loss(ze, zt, model.logit_scale.exp())
        + 2.0 * caption_loss(logits, targets, model.pad_id)
        + 0.2 * loop_beat_loss(beats, sentences, smask)
    )


def vector_step(model, x, ids, mask, loss_fn):
    return loss_fn(**model(ecg=x, input_ids=ids, attention_mask=mask))["total"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else "n/a on CPU"


def build(name: str, device: torch.device):
    if name == "melp-small":
        model = melp.create_model(name, text={"name_or_path": "minilm", "from_config": BERT_BASE})
    else:
        model = melp.create_model(name)
    return model.to(device).train()


def make_batch(model, b: int, device: torch.device) -> dict:
    """A training batch as the loader collates it (every 4th record 6 s of 10), on ``device``."""
    n = model.config["ecg"]["n_samples"]
    g = torch.Generator().manual_seed(b)
    items = [
        {"ecg": torch.randn(12, n, generator=g), "length": n * 6 // 10 if i % 4 == 3 else n, "report": r}
        for i, r in enumerate(reports(b, seed=b))
    ]
    batch = PretrainCollate.for_model(model)(items)
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train_rate(model, b: int, device: torch.device, steps: int, amp: bool, compiled: bool) -> dict:
    """Pairs/s of :func:`train_step` (median over ``steps`` after warm-up), peak memory, compile time."""
    loss_fn = MELPLoss()  # the paper's weights 1 / 2 / 0.2
    opt = build_optimizer(model, 2e-4, 0.2, (0.9, 0.95), 1e-8)
    forward = compile_forward(model, loss_fn) if compiled else None
    batch, monitor = make_batch(model, b, device), StepMonitor()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, warm = [], 0.0
    for i in range(steps + 2):  # two warm-ups: compilation, then the recompile-free path
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            train_step(model, loss_fn, opt, batch, monitor, i, forward=forward)
        _sync(device)
        if i < 2:
            warm += time.perf_counter() - t
        else:
            times.append(time.perf_counter() - t)
    monitor.read()
    return {"pairs_s": b / statistics.median(times), "peak": _peak(device), "warmup_s": warm}


def encode_rate(model, b: int, device: torch.device, steps: int, amp: bool, compiled: bool) -> float:
    """ECG/s of ``encode_ecg`` (inference, no grad)."""
    n = model.config["ecg"]["n_samples"]
    x = torch.randn(b, 12, n, device=device)
    lengths = torch.full((b,), n, device=device)
    model.eval()
    fn = torch.compile(model.encode_ecg) if compiled else model.encode_ecg
    times = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(steps + 2):
            _sync(device)
            t = time.perf_counter()
            fn(x, lengths)
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - t)
    model.train()
    return b / statistics.median(times)


def naive_ratio(model, b: int, device: torch.device, steps: int, amp: bool) -> float:
    """Forward + backward pairs/s of the vectorised heads over the reference-style loops."""
    n = model.config["ecg"]["n_samples"]
    x = torch.randn(b, 12, n, device=device)
    enc = model.tokenize(reports(b))
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    rates = []
    for naive in (False, True):
        times = []
        for i in range(steps + 1):
            model.zero_grad(set_to_none=True)
            _sync(device)
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = (
                    naive_step(model, x, ids, mask) if naive else vector_step(model, x, ids, mask, MELPLoss())
                )
            loss.backward()
            _sync(device)
            if i:
                times.append(time.perf_counter() - t)
        rates.append(b / statistics.median(times))
    return rates[0] / rates[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="melp-test at B=4, fp32 (CPU smoke run)")
    p.add_argument("--batches", type=int, nargs="+", default=None)
    p.add_argument("--encode-batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--naive", action="store_true", help="also the vectorised/naive heads ratio")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name, amp = ("melp-test", False) if args.tiny else ("melp-small", device.type == "cuda")
    batches = args.batches or ([4] if args.tiny else [64, 256])
    encode_b = args.encode_batch or (4 if args.tiny else 256)
    modes = (False,) if args.no_compile else (False, True)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"{name} on {where}; bf16 autocast={amp}; torch {torch.__version__}")
    headline = None
    for compiled in modes:
        model = build(name, device)  # a fresh model per mode (compiled graphs hold references)
        for b in batches:
            r = train_rate(model, b, device, args.steps, amp, compiled)
            tag = "compiled" if compiled else "eager"
            print(
                f"train step B={b:4d} {tag:8s}: {r['pairs_s']:9.1f} pairs/s, peak memory {r['peak']}, "
                f"first two steps {r['warmup_s']:.1f} s"
            )
            if b == batches[0]:
                headline = (b, tag, r["pairs_s"])
        rate = encode_rate(model, encode_b, device, args.steps, amp, compiled)
        print(f"encode_ecg B={encode_b:4d} {'compiled' if compiled else 'eager':8s}: {rate:9.1f} ECG/s")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.naive:
        model = build(name, device)
        ratio = naive_ratio(model, batches[-1], device, args.steps, amp)
        print(f"vectorised/naive heads, forward + backward, B={batches[-1]}: {ratio:.2f}x")
    b, tag, rate = headline
    print(
        f"result: {name} train step ({'bf16' if amp else 'fp32'}, {tag}) at batch {b} ({device.type}) = {rate:.1f} pairs/s"
    )


if __name__ == "__main__":
    main()
