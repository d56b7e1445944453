"""Training-step throughput: MELP forward + backward (pairs/s), vectorised vs naive heads.

"vectorised" = the library path (segment-id sentence pooling + fully vectorised beat loss).
"naive" = the same model with reference-style per-sample sentence pooling (Python loop over
samples/tokens with host syncs) and a per-report loop beat loss. Both run in the same process on
the same batches, so the headline is a ratio.

CPU: `melp-tiny` (100 Hz x 1000, MiniLM text tower). CUDA (if available): the paper config
`melp-small` (500 Hz x 5000; BERT-base text tower randomly initialised from config when no
weights are available) at batch 64 and 256 under bf16 autocast, with peak memory.

    python benchmarks/bench_train_step.py [--device cpu|cuda] [--batches 32] [--steps 3]
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


def measure(
    model, batch: int, device: torch.device, steps: int, naive: bool, amp: bool
) -> tuple[float, float]:
    n = model.config["ecg"]["n_samples"]
    x = torch.randn(batch, 12, n, device=device)
    enc = model.tokenize(reports(batch))
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    loss_fn = MELPLoss()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 1):
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = naive_step(model, x, ids, mask) if naive else vector_step(model, x, ids, mask, loss_fn)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # first step = warm-up
            times.append(time.perf_counter() - t)
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else "n/a on CPU"
    return batch / statistics.median(times), peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="+", default=None)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        name, batches, amp = "melp-small", args.batches or [64, 256], True
        model = melp.create_model(name, text={"name_or_path": "minilm", "from_config": BERT_BASE})
    else:
        name, batches, amp = "melp-tiny", args.batches or [32], False
        model = melp.create_model(name)
    model.to(device).train()
    print(f"{name} on {device.type} (threads {torch.get_num_threads()}), bf16 autocast={amp}")
    ratios = {}
    for b in batches:
        vec, vmem = measure(model, b, device, args.steps, naive=False, amp=amp)
        nai, nmem = measure(model, b, device, args.steps, naive=True, amp=amp)
        ratios[b] = vec / nai
        print(
            f"batch {b:4d}: vectorised {vec:8.1f} pairs/s (peak {vmem}) | naive {nai:8.1f} pairs/s "
            f"(peak {nmem}) | ratio {vec / nai:.2f}x"
        )
    b = max(batches)
    print(
        f"result: {name} train-step throughput vectorised/naive at batch {b} ({device.type}) = {ratios[b]:.2f}x"
    )


if __name__ == "__main__":
    main()
