"""What the beat level looks at: attention maps of one ECG and its report, and diagnostics.

``attention_maps`` gives, for one record, each beat query's attention over the ECG frames and each
report sentence's attention over the beat queries (the beta of the beat-level loss).
``beat_diagnostics`` summarises whether the beat level does something over a set of records: are
the Q beat vectors different from each other, is a sentence's attention over them non-uniform, is
each query's attention over time local, and does it peak at the QRS complexes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from melp.losses.beat import beat_attention

__all__ = ["attention_maps", "r_peaks", "half_mass_frames", "record_diagnostics", "beat_diagnostics"]


@torch.no_grad()
def attention_maps(model: Any, ecg: torch.Tensor, report: str, length: int | None = None) -> dict:
    """Attention maps of one ECG (L, T) or (1, L, T) (``length`` valid samples, None = all) and its report.

    Returns ``beat_time`` (Q, N) head-averaged attention of each beat query over the ECG tokens (0 on
    padded frames), ``sentence_beat`` (n_s, Q) the beat-loss attention beta of each sentence over the
    beats, ``sentences`` (n_s decoded sentences), ``frame_rate`` (tokens per second).
    """
    x = ecg if ecg.ndim == 3 else ecg[None]
    lengths = None if length is None else torch.tensor([int(length)], device=model.device)
    tokens, mask = model.ecg_tokens(x[:1], lengths)
    beat_time = model.beat_pooler.attention_weights(tokens, mask)[0]  # (Q, N)
    _, beats = model.beat_embeddings(tokens, mask)
    sentences, texts = model.sentence_embeddings(report)
    return {
        "beat_time": beat_time,
        "sentence_beat": beat_attention(beats[0], sentences),
        "sentences": texts,
        "frame_rate": model.frame_rate,
    }


def r_peaks(lead: np.ndarray, rate: float) -> np.ndarray:
    """Sample positions of the R peaks of one lead (``scipy.signal.find_peaks``): the lead is centred on
    its median and flipped when its largest deflection is negative; peaks are at least 0.3 s apart
    (200 bpm) with a prominence of at least 35 % of the 1-99 % amplitude range."""
    from scipy.signal import find_peaks

    x = np.asarray(lead, dtype=np.float64)
    x = x - np.median(x)
    if np.abs(x.min()) > np.abs(x.max()):
        x = -x
    spread = np.percentile(x, 99) - np.percentile(x, 1)
    if spread <= 0:
        return np.zeros(0, dtype=np.int64)
    peaks, _ = find_peaks(x, distance=max(1, int(0.3 * rate)), prominence=0.35 * spread)
    return peaks.astype(np.int64)


def half_mass_frames(weights: np.ndarray) -> np.ndarray:
    """For each row of attention ``weights`` (Q, N), the fewest frames holding half its mass."""
    w = np.sort(np.asarray(weights, dtype=np.float64), axis=1)[:, ::-1]
    cum = np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True).clip(1e-12)
    return (cum < 0.5).sum(axis=1) + 1


def record_diagnostics(maps: dict, beats: np.ndarray, peaks: np.ndarray, rate: float, length: int,
                       tolerance_s: float = 0.05) -> dict:  # fmt: skip
    """The beat level of one record. ``beats`` (Q, D) after P; ``peaks`` R-peak samples; ``length``
    valid samples. Returns ``beat_cosine`` (mean pairwise cosine of the Q beat vectors, 1 = all alike),
    ``attention_entropy`` (mean over sentences of the sentence->beat attention's entropy / ln Q, 1 =
    uniform), ``attention_ratio`` (largest / smallest sentence->beat weight), ``half_mass_frames``
    (median over queries), ``qrs_hit`` (share of queries whose attention peak lies within
    ``tolerance_s`` of an R peak) and ``qrs_chance`` (the share of valid frames that do: what a query
    attending anywhere would score)."""
    v = beats / np.linalg.norm(beats, axis=1, keepdims=True).clip(1e-12)
    q = len(v)
    cos = v @ v.T
    off = cos[~np.eye(q, dtype=bool)]
    sb = np.asarray(maps["sentence_beat"], dtype=np.float64)  # (n_s, Q)
    out = {"beat_cosine": float(off.mean()) if q > 1 else 1.0}
    if len(sb):
        ent = -(sb * np.log(sb.clip(1e-12))).sum(1) / np.log(q)
        out["attention_entropy"] = float(ent.mean())
        out["attention_ratio"] = float(sb.max() / max(sb.min(), 1e-12))
    bt = np.asarray(maps["beat_time"], dtype=np.float64)  # (Q, N)
    frame_rate = float(maps["frame_rate"])
    n_valid = max(1, min(bt.shape[1], int(np.ceil(length / rate * frame_rate))))
    out["half_mass_frames"] = float(np.median(half_mass_frames(bt[:, :n_valid])))
    out["frames"] = n_valid
    if len(peaks):
        centres = (np.arange(n_valid) + 0.5) / frame_rate  # frame centre times (s)
        near = np.min(np.abs(centres[:, None] - peaks[None, :] / rate), axis=1) <= tolerance_s  # (N,)
        top = bt[:, :n_valid].argmax(1)
        out["qrs_hit"] = float(near[top].mean())
        out["qrs_chance"] = float(near.mean())
    return out


def beat_diagnostics(
    model: Any, store: Any, rows: np.ndarray, normalize: str | None = None, tolerance_s: float = 0.05
) -> dict:
    """The beat level over the records ``rows`` that have a report: the medians of
    :func:`record_diagnostics`, and the sentence->beat attention of the median record (by
    ``attention_ratio``: "clearly non-uniform" means a ratio >= 2 there). R peaks are found on lead II
    of the stored signal (:func:`r_peaks`)."""
    from melp.data.datasets import PretrainDataset
    from melp.data.signal import CANONICAL_LEADS
    from melp.eval.features import eval_mode, model_normalize

    ds = PretrainDataset(store, np.asarray(rows), normalize=model_normalize(model, normalize), train=False)
    lead_ii = CANONICAL_LEADS.index("II")
    per: list[dict] = []
    with eval_mode(model):
        for k in range(len(ds)):
            item = ds[k]
            if not item["report"].strip():
                continue
            maps = attention_maps(model, item["ecg"], item["report"], length=item["length"])
            lengths = torch.tensor([item["length"]], device=model.device)
            beats = (
                model.embed(item["ecg"][None].to(model.device), lengths=lengths)["beats"][0]
                .float()
                .cpu()
                .numpy()
            )
            raw, length = store.signal(int(ds.rows[k]))
            peaks = r_peaks(raw[lead_ii, :length], store.rate)
            per.append(
                {"id": item["id"], **record_diagnostics(maps, beats, peaks, store.rate, length, tolerance_s)}
            )
    if not per:
        raise ValueError(f"store {store.path}: none of the chosen records has a report")
    keys = [
        "beat_cosine",
        "attention_entropy",
        "attention_ratio",
        "half_mass_frames",
        "qrs_hit",
        "qrs_chance",
    ]
    summary = {k: float(np.median([p[k] for p in per if k in p])) for k in keys if any(k in p for p in per)}
    ratios = [p.get("attention_ratio", 1.0) for p in per]
    median_rec = per[int(np.argsort(ratios)[len(ratios) // 2])]
    summary.update(n_records=len(per), median_record=median_rec["id"],
                   median_record_ratio=median_rec.get("attention_ratio"), frames=per[0]["frames"])  # fmt: skip
    return summary
