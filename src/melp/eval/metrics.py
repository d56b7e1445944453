"""Multi-label classification metrics: AUROC, max-F1, accuracy, bootstrap intervals.

Conventions (N records, K classes):
* ``y_true`` (N, K) in {0, 1}; ``scores`` (N, K) real-valued (cosines, logits or probabilities;
  only the order within a class matters).
* A class whose labels are constant (no positive or no negative) has no AUROC: it is NaN in the
  per-class output and skipped by the macro average (fix of D27).
* max-F1 is the best F1 over the precision-recall curve: the class is predicted positive when
  ``score >= threshold``, for every distinct score as threshold; accuracy is measured at the
  threshold giving the max-F1. A class without positives has max-F1 NaN.

All kernels are vectorised over a leading batch axis, so the bootstrap evaluates many resamples
in one call (chunked to bound memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "as_numpy",
    "auroc_per_class",
    "macro_auroc",
    "max_f1_per_class",
    "classification_metrics",
    "bootstrap_metrics",
    "bootstrap_mean_auroc",
]


def as_numpy(x: Any) -> np.ndarray:
    """A float64 numpy copy of an array-like or torch tensor (detached, on CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y, s = as_numpy(y_true), as_numpy(scores)
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must both be (N, K)")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or Inf; check the model outputs")
    return y, s


def _auroc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUROC (..., K) of labels/scores (..., N, K) by the rank-sum (Mann-Whitney) formula, ties = 1/2."""
    ranks = rankdata(s, axis=-2)  # (..., N, K), average ranks for ties
    n_pos = y.sum(axis=-2)  # (..., K)
    n_neg = y.shape[-2] - n_pos
    rank_sum = (ranks * y).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _max_f1(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-F1, its threshold and the accuracy there; each (..., K), from (..., N, K) inputs."""
    n = y.shape[-2]
    order = np.argsort(-s, axis=-2, kind="stable")  # (..., N, K) descending scores
    s_sorted = np.take_along_axis(s, order, axis=-2)
    y_sorted = np.take_along_axis(y, order, axis=-2)
    tp = np.cumsum(y_sorted, axis=-2)  # predicted positive = the first i+1 records
    fp = np.arange(1, n + 1).reshape((n, 1)) - tp
    n_pos = y.sum(axis=-2, keepdims=True)  # (..., 1, K)
    # only thresholds at the end of a run of tied scores are valid cut points
    last_of_tie = np.ones_like(s_sorted, dtype=bool)
    last_of_tie[..., :-1, :] = s_sorted[..., :-1, :] != s_sorted[..., 1:, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (tp + fp + n_pos)
    f1 = np.where(last_of_tie & (n_pos > 0), f1, -1.0)
    best = np.argmax(f1, axis=-2)[..., None, :]  # (..., 1, K)
    best_f1 = np.take_along_axis(f1, best, axis=-2)[..., 0, :]
    thr = np.take_along_axis(s_sorted, best, axis=-2)[..., 0, :]
    tp_b = np.take_along_axis(tp, best, axis=-2)[..., 0, :]
    fp_b = np.take_along_axis(fp, best, axis=-2)[..., 0, :]
    acc = (tp_b + (n - n_pos[..., 0, :] - fp_b)) / n
    no_pos = n_pos[..., 0, :] == 0
    return (
        np.where(no_pos, np.nan, best_f1),
        np.where(no_pos, np.nan, thr),
        np.where(no_pos, np.nan, acc),
    )


def auroc_per_class(y_true: Any, scores: Any) -> np.ndarray:
    """Per-class AUROC, shape (K,); NaN for classes whose labels are constant."""
    y, s = _check(y_true, scores)
    return _auroc(y, s)


def macro_auroc(y_true: Any, scores: Any) -> float:
    """Mean AUROC over classes with both labels present (constant classes skipped).

    Args:
        y_true: (N, K) multi-hot labels (numpy or torch).
        scores: (N, K) scores, higher = more likely.
    Returns:
        float in [0, 1]; NaN when no class has both labels.
    """
    auc = auroc_per_class(y_true, scores)
    return float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")


def max_f1_per_class(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (max-F1, threshold, accuracy at that threshold), each (K,)."""
    y, s = _check(y_true, scores)
    return _max_f1(y, s)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    ok = np.isfinite(x)
    cnt = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.where(ok, x, 0).sum(axis=axis) / cnt, np.nan)


def classification_metrics(y_true: Any, scores: Any, classes: list[str] | None = None) -> dict[str, Any]:
    """Per-class and macro AUROC, max-F1 and accuracy (point estimates).

    Returns ``{"macro_auroc", "macro_f1", "macro_accuracy", "per_class": {name: {...}}}``;
    macro values average the classes where the metric is defined.
    """
    y, s = _check(y_true, scores)
    names = classes if classes is not None else [str(k) for k in range(y.shape[1])]
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} class names for {y.shape[1]} score columns")
    auc = _auroc(y, s)
    f1, thr, acc = _max_f1(y, s)
    per_class = {
        name: {
            "auroc": float(auc[k]),
            "f1": float(f1[k]),
            "threshold": float(thr[k]),
            "accuracy": float(acc[k]),
            "n_pos": int(y[:, k].sum()),
        }
        for k, name in enumerate(names)
    }
    return {
        "macro_auroc": float(_nanmean(auc, 0)),
        "macro_f1": float(_nanmean(f1, 0)),
        "macro_accuracy": float(_nanmean(acc, 0)),
        "n": int(y.shape[0]),
        "per_class": per_class,
    }


def bootstrap_metrics(
    y_true: Any,
    scores: Any,
    n_boot: int = 1000,
    seed: int = 42,
    alpha: float = 0.05,
    chunk: int | None = None,
) -> dict[str, Any]:
    """Bootstrap (resampling records with replacement) intervals for AUROC, max-F1, accuracy.

    Vectorised: ``chunk`` resamples are evaluated at once as a (chunk, N, K) array (chunk chosen
    to keep that array near 4 M values). Seeded: the same inputs and seed give identical results.

    Returns ``{"macro_auroc": {"mean", "lo", "hi"}, "macro_f1": ..., "macro_accuracy": ...,
    "per_class_auroc": {"lo": (K,), "hi": (K,)}, ...}``; ``lo``/``hi`` are the alpha/2 and
    1-alpha/2 quantiles over resamples (NaN resamples of a class are ignored).
    """
    y, s = _check(y_true, scores)
    n, k = y.shape
    rng = np.random.default_rng(seed)
    idx_all = rng.integers(0, n, size=(n_boot, n))  # (n_boot, N)
    if chunk is None:
        chunk = max(1, min(n_boot, 4_000_000 // max(1, n * k)))
    auc_b, f1_b, acc_b = [], [], []
    for start in range(0, n_boot, chunk):
        idx = idx_all[start : start + chunk]  # (c, N)
        yb, sb = y[idx], s[idx]  # (c, N, K)
        auc_b.append(_auroc(yb, sb))
        f1, _, acc = _max_f1(yb, sb)
        f1_b.append(f1)
        acc_b.append(acc)
    per = {"auroc": np.concatenate(auc_b), "f1": np.concatenate(f1_b), "accuracy": np.concatenate(acc_b)}
    q = [alpha / 2, 1 - alpha / 2]
    out: dict[str, Any] = {"n_boot": n_boot, "seed": seed, "alpha": alpha}
    for name, vals in per.items():  # vals (n_boot, K)
        macro = _nanmean(vals, 1)  # (n_boot,)
        macro = macro[np.isfinite(macro)]
        lo, hi = np.quantile(macro, q) if macro.size else (np.nan, np.nan)
        out[f"macro_{name}"] = {
            "mean": float(np.mean(macro)) if macro.size else float("nan"),
            "lo": float(lo),
            "hi": float(hi),
        }
        with np.errstate(invalid="ignore"):
            finite_any = np.isfinite(vals).any(axis=0)
            lo_k = np.full(k, np.nan)
            hi_k = np.full(k, np.nan)
            if finite_any.any():
                qk = np.nanquantile(vals[:, finite_any], q, axis=0)  # (2, K')
                lo_k[finite_any], hi_k[finite_any] = qk[0], qk[1]
        out[f"per_class_{name}"] = {"lo": lo_k, "hi": hi_k}
    return out


def bootstrap_mean_auroc(
    y_true: Any,
    scores: Sequence[Any],
    baseline: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 42,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Interval of the mean macro AUROC of several score matrices of the same records (one per
    training seed, say), resampling the records: each resample is applied to every matrix, so the
    interval covers test-set sampling of the seed average. With ``baseline`` (another list of
    matrices for the same records) the paired difference ``mean(scores) - mean(baseline)`` is
    resampled instead: the same records in every term, so a shared hard resample cancels.

    Args:
        y_true: (N, K) labels; scores, baseline: lists of (N, K) scores.
    Returns:
        ``{"value", "lo", "hi", "n_boot"}``: ``value`` on the full set; ``lo``/``hi`` the alpha/2 and
        1-alpha/2 quantiles over the resamples where every class average is defined.
    """
    if not scores:
        raise ValueError("bootstrap_mean_auroc: no score matrix")
    y = _check(y_true, scores[0])[0]
    mats = [_check(y, s)[1] for s in scores]
    base = [_check(y, s)[1] for s in baseline or []]
    n, k = y.shape

    def stat(idx: np.ndarray | None) -> np.ndarray:
        # (c,) mean macro AUROC of the group(s) under resamples idx (c, N); idx None = the full set
        yb = y[None] if idx is None else y[idx]

        def mean_of(group: list[np.ndarray]) -> np.ndarray:
            macros = [_nanmean(_auroc(yb, s[None] if idx is None else s[idx]), -1) for s in group]
            return np.mean(macros, axis=0)

        return mean_of(mats) - (mean_of(base) if base else 0.0)

    rng = np.random.default_rng(seed)
    idx_all = rng.integers(0, n, size=(n_boot, n))
    chunk = max(1, min(n_boot, 4_000_000 // max(1, n * k * (len(mats) + len(base)))))
    vals = np.concatenate([stat(idx_all[s : s + chunk]) for s in range(0, n_boot, chunk)])
    vals = vals[np.isfinite(vals)]
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2]) if vals.size else (np.nan, np.nan)
    return {"value": float(stat(None)[0]), "lo": float(lo), "hi": float(hi), "n_boot": n_boot}
