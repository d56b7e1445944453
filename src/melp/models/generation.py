"""Report generation (spec §8) with greedy, top-k, top-p sampling and beam search.

The ECG is encoded once (caption tokens C). Each step feeds only the newest token through the
causal text tower and the decoder, re-using per-layer key/value caches (``use_cache=True``), so a
step costs one incremental pass; ``use_cache=False`` recomputes the whole prefix (reference
behaviour, used to test the cache). Decoding runs in eval mode (no dropout).

Scores are log-probabilities (fix of D23). Sequences start with ``[BOS]``, end with the
tokenizer's ``[SEP]``; the EOS logit is suppressed while the sequence (``[BOS]`` included) is
shorter than ``min_length``, other special tokens are never generated, and the last allowed
position forces EOS. Beam search keeps finished beams in the beam set with a frozen score
(they emit pad at log-prob 0) and picks the best beam by ``score / length**length_penalty``.

Dimensions: ``B`` ECGs, ``K`` beams, ``N`` = B*K rows, ``t`` current length, ``V`` vocabulary.
"""

from __future__ import annotations

import torch

MAX_LENGTH = 64
"""Default maximum generated length in tokens, ``[BOS]`` and EOS included (every entry point)."""


class _Stepper:
    """Next-token log-probabilities for growing sequences, with or without KV caches."""

    def __init__(self, model, ctx: torch.Tensor, use_cache: bool):
        self.model, self.ctx = model, ctx
        self.use_cache = use_cache and model.text.causal
        n_text, n_dec = len(model.text.bert.encoder.layer), len(model.decoder.layers)
        self.text_caches = [{} for _ in range(n_text)]
        self.dec_caches = [{} for _ in range(n_dec)]

    def __call__(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (N, t) -> log-probabilities (N, V) of token t+1 (float32/64)."""
        m = self.model
        if self.use_cache:
            past = self.text_caches[0]["k"].shape[2] if "k" in self.text_caches[0] else 0
            new = seq[:, past:]  # (N, t - past), usually one token
            feats = m.text.step(new, self.text_caches)  # (N, new, H)
            if new.shape[1] > 1:  # first call with a longer prompt: feed the decoder one by one
                for i in range(new.shape[1]):
                    logits = m.decoder(feats[:, i : i + 1], self.ctx, caches=self.dec_caches)
            else:
                logits = m.decoder(feats, self.ctx, caches=self.dec_caches)
        else:
            feats = m.text(seq, torch.ones_like(seq))  # (N, t, H), causal
            logits = m.decoder(feats, self.ctx)
        return (
            logits[:, -1].float().log_softmax(-1)
            if logits.dtype != torch.float64
            else logits[:, -1].log_softmax(-1)
        )

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (N,) of every cache (beam search)."""
        for cache in self.text_caches:
            if "k" in cache:
                cache["k"], cache["v"] = cache["k"][index], cache["v"][index]
        for cache in self.dec_caches:
            sc = cache.get("self", {})
            if "k" in sc:
                sc["k"], sc["v"] = sc["k"][index], sc["v"][index]
            # cross-attention caches are identical for all beams of an ECG: no reorder needed


def _process(model, lp: torch.Tensor, cur_len: int, min_length: int, max_length: int) -> torch.Tensor:
    """Apply special-token suppression, min length and forced EOS at the last position."""
    banned = model.special_ids[: lp.shape[1]].clone()
    banned[model.eos_id] = cur_len < min_length
    lp = lp.masked_fill(banned, float("-inf"))
    if cur_len + 1 >= max_length:  # last allowed token: EOS
        forced = torch.full_like(lp, float("-inf"))
        forced[:, model.eos_id] = 0.0
        lp = forced
    return lp


def _sample(
    lp: torch.Tensor, strategy: str, top_k: int, top_p: float, temperature: float, generator
) -> torch.Tensor:
    """Pick next tokens (N,) from log-probabilities (N, V)."""
    if strategy == "greedy":
        return lp.argmax(-1)
    logits = lp / temperature
    if strategy == "top_k":
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    else:  # top_p: keep the smallest set whose probability reaches top_p (at least one token)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # (N, V) in sorted order
        drop[:, 0] = False
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs.float(), 1, generator=generator).squeeze(1)


def _sample_loop(model, stepper, seq, strategy, min_length, max_length, top_k, top_p, temperature, generator):
    finished = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
    while seq.shape[1] < max_length:
        lp = _process(model, stepper(seq), seq.shape[1], min_length, max_length)
        nxt = _sample(lp, strategy, top_k, top_p, temperature, generator)
        nxt = torch.where(finished, torch.full_like(nxt, model.pad_id), nxt)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        finished |= nxt == model.eos_id
        if bool(finished.all()):
            break
    return seq


def _beam_loop(model, stepper, seq, num_beams, min_length, max_length, length_penalty):
    n = seq.shape[0]
    b, k = n // num_beams, num_beams
    scores = torch.full((b, k), float("-inf"), device=seq.device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished = torch.zeros(n, dtype=torch.bool, device=seq.device)
    lengths = torch.zeros(n, device=seq.device)
    while seq.shape[1] < max_length:
        lp = _process(model, stepper(seq), seq.shape[1], min_length, max_length).to(scores.dtype)
        done_row = torch.full_like(lp[0], float("-inf"))
        done_row[model.pad_id] = 0.0
        lp = torch.where(finished[:, None], done_row, lp)  # finished beams keep their score
        v = lp.shape[1]
        cand = (scores.view(n, 1) + lp).view(b, k * v)  # (B, K*V)
        scores, flat = cand.topk(k, dim=1)  # (B, K)
        origin = (torch.arange(b, device=seq.device)[:, None] * k + flat // v).view(n)  # (N,)
        tok = (flat % v).view(n)
        was_done = finished[origin]
        seq = torch.cat([seq[origin], tok[:, None]], dim=1)
        lengths = lengths[origin] + (~was_done).to(lengths.dtype)
        finished = was_done | (tok == model.eos_id)
        stepper.reorder(origin)
        if bool(finished.all()):
            break
    final = scores.view(n) / lengths.clamp_min(1) ** length_penalty
    best = final.view(b, k).argmax(1) + torch.arange(b, device=seq.device) * k  # (B,)
    return seq[best]


@torch.no_grad()
def generate_ids(
    model,
    ecg: torch.Tensor,
    strategy: str = "beam",
    max_length: int = MAX_LENGTH,
    min_length: int = 5,
    num_beams: int = 3,
    top_k: int = 1,
    top_p: float = 0.1,
    temperature: float = 1.0,
    length_penalty: float = 1.0,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate token ids (B, <= max_length) starting with ``[BOS]`` (pads after EOS).

    Args:
        model: a :class:`melp.models.melp.MELPModel`.
        ecg: (B, L, T) signals.
        strategy: ``"beam"``, ``"greedy"``, ``"top_k"`` or ``"top_p"``.
        max_length: maximum sequence length including ``[BOS]`` and EOS.
        min_length: EOS is suppressed while the length ([BOS] included) is below this.
        num_beams, length_penalty: beam search settings.
        top_k, top_p, temperature, generator: sampling settings.
        use_cache: incremental decoding with KV caches (same result as recomputation).
        lengths: (B,) valid samples per ECG (None = all valid).
    """
    if strategy not in ("beam", "greedy", "top_k", "top_p"):
        raise ValueError(f"unknown generation strategy {strategy!r}; use beam, greedy, top_k or top_p")
    if not model.text.causal:
        raise ValueError("generation needs a causal text tower (text.causal=true)")
    if max_length > model.text.max_positions:
        raise ValueError(
            f"max_length={max_length} exceeds the text model's {model.text.max_positions} positions"
        )
    was_training = model.training
    model.eval()
    try:
        ctx = model.caption_context(*model.ecg_tokens(ecg, lengths))  # (B, n, H)
        b = ctx.shape[0]
        k = num_beams if strategy == "beam" else 1
        ctx = ctx.repeat_interleave(k, dim=0)  # (B*K, n, H)
        seq = torch.full((b * k, 1), model.bos_id, dtype=torch.long, device=ctx.device)
        stepper = _Stepper(model, ctx, use_cache)
        if strategy == "beam":
            return _beam_loop(model, stepper, seq, k, min_length, max_length, length_penalty)
        return _sample_loop(
            model, stepper, seq, strategy, min_length, max_length, top_k, top_p, temperature, generator
        )
    finally:
        model.train(was_training)


def generate(
    model, ecg: torch.Tensor, strategy: str = "beam", max_length: int = MAX_LENGTH, **kwargs
) -> list[str]:
    """Generate one report string per ECG (special tokens removed); kwargs as :func:`generate_ids`."""
    ids = generate_ids(model, ecg, strategy=strategy, max_length=max_length, **kwargs)
    return model.tokenizer.batch_decode(ids[:, 1:].tolist(), skip_special_tokens=True)
