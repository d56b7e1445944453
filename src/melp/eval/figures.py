"""Figures (matplotlib, Agg backend): ROC curves per class and beat/sentence attention over an ECG."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["roc_points", "roc_figure", "attention_figure", "probe_curve_figure"]

LEAD_NAMES = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


def _save(fig, path, **savefig_kw) -> Path:
    """Write ``fig`` to ``path`` (creating its folder), close it and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **savefig_kw)
    _plt().close(fig)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr) of one class; thresholds at every distinct score (ties form one step)."""
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    last = np.r_[ss[:-1] != ss[1:], True]
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(1 - ys)[last]
    p, n = max(ys.sum(), 1), max(len(ys) - ys.sum(), 1)
    return np.r_[0.0, fp / n], np.r_[0.0, tp / p]


def roc_figure(
    y: np.ndarray, scores: np.ndarray, classes: list[str], path: str | Path, title: str = "", ncols: int = 5
) -> Path:
    """One small ROC panel per class (AUROC and positives in each title); constant classes are marked.

    y, scores: (N, K). Writes a PNG at ``path`` and returns it.
    """
    from melp.eval.metrics import auroc_per_class

    plt = _plt()
    k = len(classes)
    ncols = min(ncols, k)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows + 0.5), squeeze=False)
    auc = auroc_per_class(y, scores)
    for j, ax in enumerate(axes.flat):
        if j >= k:
            ax.axis("off")
            continue
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8, ls="--")
        n_pos = int(y[:, j].sum())
        if np.isfinite(auc[j]):
            fpr, tpr = roc_points(y[:, j], scores[:, j])
            ax.plot(fpr, tpr, color="C0", lw=1.6)
            ax.set_title(f"{classes[j]}  AUROC {auc[j]:.3f}\n(n+ = {n_pos})", fontsize=9)
        else:
            ax.text(0.5, 0.5, "constant labels\n(no AUROC)", ha="center", va="center", fontsize=8)
            ax.set_title(f"{classes[j]}  (n+ = {n_pos})", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        if j % ncols == 0:
            ax.set_ylabel("true positive rate", fontsize=8)
        if j // ncols == nrows - 1 or j + ncols >= k:
            ax.set_xlabel("false positive rate", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def attention_figure(
    ecg: np.ndarray,
    maps: dict[str, Any],
    rate: float,
    path: str | Path,
    title: str = "",
    leads: list[str] | None = None,
) -> Path:
    """A 12-lead ECG with the beat queries' attention over time and each sentence's beat alignment.

    Args:
        ecg: (12, T) signal (any units; each lead is scaled for display).
        maps: ``model.attention_maps`` output: ``beat_time`` (Q, N_frames) attention of each beat
            query over encoder frames, ``sentence_beat`` (n_s, Q), ``sentences``, ``frame_rate`` (Hz).
        rate: sampling rate of ``ecg`` in Hz.
    Layout: left, the 12 leads stacked with the total beat attention shaded behind them, a heat
    map of the Q queries over time, and each sentence's attention over time (sentence_beat @
    beat_time); right, the sentence x query alignment.
    """
    plt = _plt()
    ecg = np.asarray(ecg, dtype=np.float64)
    beat_time = np.asarray(maps["beat_time"], dtype=np.float64)  # (Q, F)
    sent_beat = np.asarray(maps["sentence_beat"], dtype=np.float64)  # (n_s, Q)
    sentences = list(maps["sentences"])
    frame_rate = float(maps["frame_rate"])
    names = leads or LEAD_NAMES
    n_leads, t_len = ecg.shape
    seconds = t_len / rate
    q, n_frames = beat_time.shape

    n_s = len(sentences)
    fig = plt.figure(figsize=(15, 10.5))
    grid = fig.add_gridspec(
        3,
        2,
        width_ratios=[3.2, 1.1],
        height_ratios=[3.2, 1, 0.25 + 0.22 * max(n_s, 1)],
        wspace=0.12,
        hspace=0.18,
    )
    ax_ecg = fig.add_subplot(grid[0, 0])
    ax_q = fig.add_subplot(grid[1, 0], sharex=ax_ecg)
    ax_t = fig.add_subplot(grid[2, 0], sharex=ax_ecg)
    ax_s = fig.add_subplot(grid[:, 1])

    t = np.arange(t_len) / rate
    total = beat_time.sum(axis=0)
    total = (total - total.min()) / (total.max() - total.min() + 1e-12)  # white = least attended
    frame_edges = np.arange(n_frames + 1) / frame_rate
    ax_ecg.pcolormesh(
        frame_edges,
        [-0.5, n_leads - 0.5],
        total[None, :],
        cmap="Oranges",
        alpha=0.55,
        shading="flat",
        vmin=0,
        vmax=1,
    )
    for i in range(n_leads):
        x = ecg[i]
        span = np.percentile(np.abs(x - np.median(x)), 99.5) + 1e-9
        ax_ecg.plot(t, n_leads - 1 - i + 0.42 * (x - np.median(x)) / span, color="k", lw=0.7)
    ax_ecg.set_yticks(range(n_leads))
    ax_ecg.set_yticklabels(names[:n_leads][::-1], fontsize=8)
    ax_ecg.set_ylim(-0.7, n_leads - 0.3)
    ax_ecg.set_xlim(0, seconds)
    ax_ecg.set_title("12-lead ECG; shading = attention of all beat queries over time", fontsize=10)
    plt.setp(ax_ecg.get_xticklabels(), visible=False)

    im = ax_q.pcolormesh(frame_edges, np.arange(q + 1) - 0.5, beat_time, cmap="viridis", shading="flat")
    ax_q.set_ylabel("beat query", fontsize=9)
    ax_q.set_yticks(range(q))
    ax_q.tick_params(labelsize=7)
    plt.setp(ax_q.get_xticklabels(), visible=False)
    fig.colorbar(im, ax=ax_q, fraction=0.02, pad=0.01)

    # where in time each sentence looks: its beat attention (n_s, Q) times the queries' time maps (Q, F)
    if n_s:
        sent_time = sent_beat @ beat_time  # (n_s, F)
        im3 = ax_t.pcolormesh(
            frame_edges, np.arange(n_s + 1) - 0.5, sent_time, cmap="Purples", shading="flat"
        )
        ax_t.set_yticks(range(n_s))
        ax_t.set_yticklabels([textwrap.shorten(s, 32, placeholder="...") for s in sentences], fontsize=7)
        ax_t.invert_yaxis()
        fig.colorbar(im3, ax=ax_t, fraction=0.02, pad=0.01)
        ax_t.set_title("each sentence's attention over time (via the beat queries)", fontsize=9)
    ax_t.set_xlabel("time (s)", fontsize=9)
    ax_t.tick_params(labelsize=7)

    if len(sentences):
        lo, hi, uniform = float(sent_beat.min()), float(sent_beat.max()), ""
        if hi - lo < 1e-3:  # (near-)uniform alignment: say so instead of showing a flat colour
            uniform = f"\n(uniform: every weight {lo:.3f}-{hi:.3f})"
            hi = lo + 1e-3
        im2 = ax_s.imshow(sent_beat, aspect="auto", cmap="magma", vmin=lo, vmax=hi)
        ax_s.yaxis.tick_right()
        ax_s.set_yticks(range(len(sentences)))
        ax_s.set_yticklabels(["\n".join(textwrap.wrap(s, 26)) for s in sentences], fontsize=8)
        ax_s.set_xticks(range(q))
        ax_s.set_xlabel("beat query", fontsize=9)
        ax_s.set_title("each sentence's attention over the beat queries" + uniform, fontsize=10)
        fig.colorbar(
            im2, ax=ax_s, orientation="horizontal", fraction=0.04, pad=0.08, label="attention weight"
        )
    else:
        ax_s.axis("off")
        ax_s.text(0.5, 0.5, "report has no sentence", ha="center")
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 140)), fontsize=11)
    return _save(fig, path, dpi=100, bbox_inches="tight")


def probe_curve_figure(results: dict[str, dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Macro AUROC against label fraction for several encoders: ``{label: {fraction: auroc}}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for j, (label, points) in enumerate(results.items()):
        xs = sorted(points, key=float)
        ax.plot([float(x) * 100 for x in xs], [points[x] for x in xs], marker="o", label=label, color=f"C{j}")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training records (%)")
    ax.set_ylabel("test macro AUROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi=110)
