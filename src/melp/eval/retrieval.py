"""Cross-modal retrieval (ECG -> report, report -> ECG) and patient identification.

Ranking metric: for a query, rank = 1 + the number of WRONG candidates scoring at least as high as
the best correct candidate (ties count against the model). Several candidates can be correct:
identical report texts are merged into one candidate (many ECGs share "sinus rhythm. normal ecg."),
and in patient identification any gallery record of the same patient is correct.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melp.eval.features import FeatureBank, eval_mode, progress
from melp.eval.outputs import write_json
from melp.eval.zeroshot import require_text_tower

log = logging.getLogger(__name__)

__all__ = ["ranks", "retrieval_metrics", "encode_pairs", "run_retrieval", "patient_identification"]


def ranks(sim: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of the best correct candidate for each query.

    Args:
        sim: (Q, C) similarity, higher = better.
        truth: (Q, C) bool, True where the candidate is correct (>= 1 per row).
    Returns:
        (Q,) int array.
    """
    sim = np.asarray(sim, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    if sim.shape != truth.shape:
        raise ValueError(f"similarity {sim.shape} and truth {truth.shape} must have the same shape")
    if not truth.any(axis=1).all():
        raise ValueError("every query needs at least one correct candidate")
    best_correct = np.where(truth, sim, -np.inf).max(axis=1, keepdims=True)  # (Q, 1)
    wrong_above = ((sim >= best_correct) & ~truth).sum(axis=1)
    return 1 + wrong_above


def retrieval_metrics(
    sim: np.ndarray, truth: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k (fraction of queries whose rank <= k), median and mean rank."""
    r = ranks(sim, truth)
    out = {f"R@{k}": float(np.mean(r <= k)) for k in ks}
    out["median_rank"] = float(np.median(r))
    out["mean_rank"] = float(np.mean(r))
    out["n_queries"] = int(len(r))
    out["n_candidates"] = int(np.asarray(sim).shape[1])
    return out


def encode_pairs(
    model: Any,
    store: Any,
    rows: np.ndarray,
    batch_size: int = 128,
    normalize: str | None = None,
    bank: FeatureBank | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """ECG latents (N, D), text latents of the UNIQUE reports (U, D), those reports and the N reports.
    Records without a report are left out."""
    require_text_tower(model, "retrieval")
    if bank is None or not bank.matches(normalize, None):
        bank = FeatureBank(model, store, batch_size, normalize)
    reports_all = store.manifest["report"].fillna("").astype(str).to_numpy()
    rows = np.asarray(rows)[np.char.str_len(reports_all[np.asarray(rows)].astype(str)) > 0]
    if len(rows) == 0:
        raise ValueError(
            f"store {store.path}: none of the chosen records has a report; retrieval needs reports"
        )
    z_e = bank.z_e(rows)  # (N, D) = encode_ecg
    reports = store.manifest["report"].iloc[rows].fillna("").astype(str).tolist()
    unique = sorted(set(reports))
    starts = range(0, len(unique), batch_size)
    with eval_mode(model):
        z_t = [
            model.encode_text(unique[i : i + batch_size]).float().cpu()
            for i in progress(starts, len(starts), "encode reports", "batch")
        ]
    return z_e, torch.cat(z_t).numpy(), unique, reports


def run_retrieval(
    model: Any,
    store: Any,
    rows: np.ndarray,
    out: str | Path | None = None,
    batch_size: int = 128,
    normalize: str | None = None,
    bank: FeatureBank | None = None,
) -> dict[str, Any]:
    """ECG->report and report->ECG retrieval on ``rows`` (identical reports merged).

    Returns ``{"ecg_to_report": {...}, "report_to_ecg": {...}}`` (R@1/5/10, median/mean rank);
    written to ``OUT/retrieval.json`` when ``out`` is given.
    """
    z_e, z_t, unique, reports = encode_pairs(model, store, rows, batch_size, normalize, bank)
    pos = {t: u for u, t in enumerate(unique)}
    truth = np.zeros((len(reports), len(unique)), dtype=bool)  # (N, U)
    truth[np.arange(len(reports)), [pos[t] for t in reports]] = True
    sim = z_e @ z_t.T  # (N, U) cosine
    res = {
        "ecg_to_report": retrieval_metrics(sim, truth),
        "report_to_ecg": retrieval_metrics(sim.T, truth.T),
        "n_records": len(reports),
        "n_unique_reports": len(unique),
    }
    if out is not None:
        write_json(Path(out) / "retrieval.json", res)
    log.info(
        "retrieval: ECG->report R@1 %.3f R@10 %.3f; report->ECG R@1 %.3f R@10 %.3f (%d unique reports)",
        res["ecg_to_report"]["R@1"],
        res["ecg_to_report"]["R@10"],
        res["report_to_ecg"]["R@1"],
        res["report_to_ecg"]["R@10"],
        len(unique),
    )
    return res


def patient_identification(
    model: Any,
    store: Any,
    rows: np.ndarray,
    out: str | Path | None = None,
    batch_size: int = 128,
    normalize: str | None = None,
    seed: int = 42,
    bank: FeatureBank | None = None,
) -> dict[str, Any]:
    """Find a record's patient among other patients' records with rhythm embeddings.

    For every patient with >= 2 records in ``rows``, one record (seeded choice) goes to the
    gallery and the others are probes; records of single-record patients join the gallery as
    distractors. Similarity = cosine of the rhythm embeddings. Returns top-1/5/10 recall and
    median rank (written to ``OUT/patient_identification.json``).
    """
    from melp.eval.probe import extract_features

    pat = store.manifest["patient"].iloc[np.asarray(rows)]
    known = (pat.notna() & (pat.astype(str).str.strip() != "")).to_numpy()
    rows = np.asarray(rows)[known]  # records without a patient id cannot be matched to anyone
    patients = pat[known].astype(str).to_numpy()
    uniq, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    gallery_pick = np.full(len(uniq), -1)
    for p in range(len(uniq)):
        members = np.flatnonzero(inverse == p)
        gallery_pick[p] = rng.choice(members)
    is_gallery = np.zeros(len(rows), dtype=bool)
    is_gallery[gallery_pick] = True
    probes = np.flatnonzero(~is_gallery)  # only patients with >= 2 records have probes
    if len(probes) == 0:
        raise ValueError(f"store {store.path}: no patient has two records in the chosen rows")
    gallery = np.flatnonzero(is_gallery)
    feats = extract_features(model, store, rows, batch_size, normalize, key="rhythm", bank=bank)
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-12)
    sim = feats[probes] @ feats[gallery].T  # (P, G)
    truth = inverse[probes][:, None] == inverse[gallery][None, :]
    res = retrieval_metrics(sim, truth, ks=(1, 5, 10))
    res.update(
        {
            "n_patients_with_probes": int((counts >= 2).sum()),
            "n_gallery": int(len(gallery)),
            "n_probes": int(len(probes)),
            "embedding": "rhythm",
        }
    )
    if out is not None:
        write_json(Path(out) / "patient_identification.json", res)
    log.info(
        "patient identification: top-1 %.3f, top-5 %.3f (%d probes, %d gallery)",
        res["R@1"],
        res["R@5"],
        len(probes),
        len(gallery),
    )
    return res
