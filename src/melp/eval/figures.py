"""Figures fit for a paper (matplotlib, Agg backend): ROC curves with bootstrap bands, label-fraction
curves with intervals, and a 12-lead ECG on the standard grid with the beat level's attention.

Every writer takes ``formats`` (any of ``png``, ``pdf``, ``svg``; PNG at 200 dpi) and writes one
file per format next to ``path`` (same stem); it returns the paths written.

ECG grid: the usual paper layout, 25 mm/s and 10 mm/mV: minor lines every 0.04 s and 0.1 mV,
major lines every 0.2 s and 0.5 mV, and a 1 mV x 0.2 s calibration mark. Signals in normalised
units (``NU``) are drawn on the same grid with 1 NU in place of 1 mV (the label says so).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["roc_points", "roc_band", "roc_figure", "attention_figure", "probe_curve_figure", "FORMATS"]

LEAD_NAMES = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
FORMATS = ("png", "pdf", "svg")
DPI = 200


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, formats: Sequence[str] = ("png",), **savefig_kw) -> list[Path]:
    """Write ``fig`` as ``path`` with each suffix in ``formats`` (folders created), close it."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(
            f"figure formats {bad or list(formats)} not supported; use any of {', '.join(FORMATS)}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target, dpi=DPI, **savefig_kw)
        written.append(target)
    _plt().close(fig)
    return written


def roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr) of one class; thresholds at every distinct score (ties form one step)."""
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    last = np.r_[ss[:-1] != ss[1:], True]
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(1 - ys)[last]
    p, n = max(ys.sum(), 1), max(len(ys) - ys.sum(), 1)
    return np.r_[0.0, fp / n], np.r_[0.0, tp / p]


def roc_band(
    y: np.ndarray, s: np.ndarray, n_boot: int = 200, seed: int = 42, grid: int = 101, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise bootstrap band of one class's ROC curve: ``(fpr grid, tpr lo, tpr hi)``.

    Records are resampled with replacement; each resample's ROC is interpolated (step-wise, the
    upper value at each fpr) on ``grid`` fpr points; resamples without both labels are skipped."""
    fpr = np.linspace(0, 1, grid)
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        yb = y[idx]
        if yb.min() == yb.max():
            continue
        f, t = roc_points(yb, s[idx])
        curves.append(np.interp(fpr, f, t, right=1.0))
    if not curves:
        return fpr, np.full(grid, np.nan), np.full(grid, np.nan)
    lo, hi = np.quantile(np.stack(curves), [alpha / 2, 1 - alpha / 2], axis=0)
    return fpr, lo, hi


def roc_figure(
    y: np.ndarray,
    scores: np.ndarray,
    classes: list[str],
    path: str | Path,
    title: str = "",
    ncols: int = 5,
    n_boot: int = 200,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """One ROC panel per class with a 95 % bootstrap band (``n_boot`` resamples, 0 = none).

    y, scores: (N, K). Classes whose labels are constant have no ROC curve and get no panel; they
    are named under the title. Returns the files written."""
    from melp.eval.metrics import auroc_per_class

    plt = _plt()
    auc = auroc_per_class(y, scores)
    shown = [k for k in range(len(classes)) if np.isfinite(auc[k])]
    skipped = [classes[k] for k in range(len(classes)) if not np.isfinite(auc[k])]
    if not shown:  # nothing to draw: one panel that says why
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no class has both positive and negative records", ha="center", va="center")
        return _save(fig, path, formats, bbox_inches="tight")
    ncols = min(ncols, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.5 * ncols, 2.5 * nrows + 0.6), squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= len(shown):
            ax.remove()
            continue
        k = shown[j]
        ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls="--")
        if n_boot:
            f, lo, hi = roc_band(y[:, k], scores[:, k], n_boot=n_boot)
            ax.fill_between(f, lo, hi, color="C0", alpha=0.2, lw=0, step="post")
        fpr, tpr = roc_points(y[:, k], scores[:, k])
        ax.step(fpr, tpr, where="post", color="C0", lw=1.4)
        ax.set_title(f"{classes[k]}: AUROC {auc[k]:.3f} (n+ = {int(y[:, k].sum())})", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        ax.tick_params(labelsize=7)
        if j % ncols == 0:
            ax.set_ylabel("sensitivity", fontsize=8)
        if j >= len(shown) - ncols:
            ax.set_xlabel("1 - specificity", fontsize=8)
    note = f"no ROC (constant labels): {', '.join(skipped)}" if skipped else ""
    band = f"; shaded: 95 % bootstrap band ({n_boot} resamples)" if n_boot else ""
    fig.suptitle("\n".join(x for x in (title + band, note) if x), fontsize=10)
    fig.tight_layout()
    return _save(fig, path, formats)


def probe_curve_figure(
    results: dict[str, dict[str, Any]],
    path: str | Path,
    title: str = "",
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Macro AUROC against the label fraction for several encoders.

    ``results``: ``{label: {fraction: auroc}}`` or ``{label: {fraction: {"auroc", "lo", "hi"}}}``
    (the bootstrap interval, drawn as a band). The x axis is logarithmic with ticks at the fractions
    used, labelled as percentages (1 %, 10 %, 100 %)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ticks: set[float] = set()
    for j, (label, points) in enumerate(results.items()):
        xs = sorted(points, key=float)
        pct = np.array([float(x) * 100 for x in xs])
        vals = [points[x] for x in xs]
        mid = np.array([v["auroc"] if isinstance(v, dict) else v for v in vals], dtype=float)
        ax.plot(pct, mid, marker="o", label=label, color=f"C{j}")
        if all(isinstance(v, dict) and v.get("lo") is not None for v in vals):
            lo = np.array([v["lo"] for v in vals], float)
            hi = np.array([v["hi"] for v in vals], float)
            ax.fill_between(pct, lo, hi, color=f"C{j}", alpha=0.18, lw=0)
        ticks.update(pct.tolist())
    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([f"{t:g} %" for t in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("labelled training records")
    ax.set_ylabel("test macro AUROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, formats)


def _ecg_grid(ax, seconds: float, n_rows: int, row_height_mv: float) -> None:
    """Standard ECG paper: minor 0.04 s / 0.1 mV, major 0.2 s / 0.5 mV (the y unit is mV)."""
    top = n_rows * row_height_mv
    for x in np.arange(0, seconds + 1e-9, 0.04):
        major = abs(x / 0.2 - round(x / 0.2)) < 1e-6
        ax.axvline(x, color="#e8a0a0" if major else "#f6d6d6", lw=0.6 if major else 0.3, zorder=1)
    for yv in np.arange(0, top + 1e-9, 0.1):
        major = abs(yv / 0.5 - round(yv / 0.5)) < 1e-6
        ax.axhline(yv, color="#e8a0a0" if major else "#f6d6d6", lw=0.6 if major else 0.3, zorder=1)


def attention_figure(
    ecg: np.ndarray,
    maps: dict[str, Any],
    rate: float,
    path: str | Path,
    title: str = "",
    leads: list[str] | None = None,
    units: str = "mV",
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """A 12-lead ECG on the standard grid with the beat level's attention.

    Args:
        ecg: (12, T) signal in ``units`` (mV; ``NU`` is drawn with 1 NU per mV square).
        maps: :func:`melp.eval.beats.attention_maps` output: ``beat_time`` (Q, N_frames) attention of
            each beat query over encoder frames, ``sentence_beat`` (n_s, Q), ``sentences``,
            ``frame_rate`` (Hz).
        rate: sampling rate of ``ecg`` in Hz.
    Layout: left, the leads on ECG paper with the total beat attention shaded behind them, a heat
    map of the Q queries over time and each sentence's attention over time (sentence_beat @
    beat_time); right, the sentence x query alignment.
    """
    ecg = np.asarray(ecg, dtype=np.float64)
    beat_time = np.asarray(maps["beat_time"], dtype=np.float64)  # (Q, F)
    fig, axes = _attention_layout(len(maps["sentences"]), ecg.shape[0], ecg.shape[1] / rate)
    _draw_leads(axes["ecg"], ecg, beat_time, rate, float(maps["frame_rate"]), leads or LEAD_NAMES, units)
    _draw_time_maps(fig, axes, beat_time, np.asarray(maps["sentence_beat"], float), list(maps["sentences"]),
                    float(maps["frame_rate"]))  # fmt: skip
    _draw_alignment(fig, axes["align"], np.asarray(maps["sentence_beat"], float), list(maps["sentences"]))
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 140)), fontsize=11)
    return _save(fig, path, formats, bbox_inches="tight")


_ROW_MV = 2.0  # mV per lead row (large complexes may overlap the next row, as on printed ECGs)


def _attention_layout(n_sentences: int, n_leads: int, seconds: float):
    plt = _plt()
    width, ecg_share = 15.0, 3.2 / 4.3
    ecg_in = n_leads * _ROW_MV * (width * ecg_share * 0.9 / seconds) * 10 / 25  # 25 mm/s and 10 mm/mV
    rows = [ecg_in, 1.3, 0.3 + 0.22 * max(n_sentences, 1)]
    fig = plt.figure(figsize=(width, sum(rows) + 1.6))
    grid = fig.add_gridspec(3, 2, width_ratios=[3.2, 1.1], height_ratios=rows, wspace=0.12, hspace=0.15)
    ax_ecg = fig.add_subplot(grid[0, 0])
    axes = {
        "ecg": ax_ecg,
        "queries": fig.add_subplot(grid[1, 0], sharex=ax_ecg),
        "sentences": fig.add_subplot(grid[2, 0], sharex=ax_ecg),
        "align": fig.add_subplot(grid[:, 1]),
    }
    return fig, axes


def _draw_leads(ax, ecg, beat_time, rate, frame_rate, names, units) -> None:
    n_leads, t_len = ecg.shape
    seconds = t_len / rate
    row = _ROW_MV
    _ecg_grid(ax, seconds, n_leads, row)
    total = beat_time.sum(axis=0)
    total = (total - total.min()) / (total.max() - total.min() + 1e-12)
    edges = np.arange(len(total) + 1) / frame_rate
    ax.pcolormesh(edges, [0, n_leads * row], total[None, :], cmap="Blues", alpha=0.25, shading="flat",
                  vmin=0, vmax=1, zorder=0)  # fmt: skip
    t = np.arange(t_len) / rate
    for i in range(n_leads):
        base = (n_leads - i - 0.5) * row
        ax.plot(t, base + ecg[i] - np.median(ecg[i]), color="k", lw=0.6, zorder=2)
        ax.text(0.02, base + 0.35 * row, names[i] if i < len(names) else str(i), fontsize=8, zorder=3)
    # calibration mark: 1 mV (1 NU) high, 0.2 s wide
    ax.plot([0.05, 0.05, 0.25, 0.25], [0.2, 1.2, 1.2, 0.2], color="C3", lw=1.2, zorder=3)
    ax.text(0.27, 0.5, f"1 {units} / 0.2 s", color="C3", fontsize=7, zorder=3)
    ax.set(xlim=(0, seconds), ylim=(0, n_leads * row), yticks=[])  # the layout sizes it at 25 mm/s, 10 mm/mV
    ax.set_title(f"12-lead ECG, 25 mm/s, 10 mm/{units}; shading = attention of all beat queries", fontsize=10)
    ax.tick_params(labelbottom=False)


def _draw_time_maps(fig, axes, beat_time, sent_beat, sentences, frame_rate) -> None:
    q, n_frames = beat_time.shape
    edges = np.arange(n_frames + 1) / frame_rate
    im = axes["queries"].pcolormesh(edges, np.arange(q + 1) - 0.5, beat_time, cmap="viridis", shading="flat")
    axes["queries"].set_ylabel("beat query", fontsize=9)
    axes["queries"].set_yticks(range(q))
    axes["queries"].tick_params(labelsize=7, labelbottom=False)
    fig.colorbar(im, ax=axes["queries"], fraction=0.02, pad=0.01)
    ax_t = axes["sentences"]
    if sentences:
        sent_time = sent_beat @ beat_time  # (n_s, F): where each sentence looks, via the beat queries
        im3 = ax_t.pcolormesh(
            edges, np.arange(len(sentences) + 1) - 0.5, sent_time, cmap="Purples", shading="flat"
        )
        ax_t.set_yticks(range(len(sentences)))
        ax_t.set_yticklabels([textwrap.shorten(s, 32, placeholder="...") for s in sentences], fontsize=7)
        ax_t.invert_yaxis()
        fig.colorbar(im3, ax=ax_t, fraction=0.02, pad=0.01)
        ax_t.set_title("each sentence's attention over time (via the beat queries)", fontsize=9)
    ax_t.set_xlabel("time (s)", fontsize=9)
    ax_t.tick_params(labelsize=7)


def _draw_alignment(fig, ax, sent_beat, sentences) -> None:
    if not sentences:
        ax.axis("off")
        ax.text(0.5, 0.5, "report has no sentence", ha="center")
        return
    lo, hi, uniform = float(sent_beat.min()), float(sent_beat.max()), ""
    if hi - lo < 1e-3:  # (near-)uniform alignment: say so instead of showing a flat colour
        uniform = f"\n(uniform: every weight {lo:.3f}-{hi:.3f})"
        hi = lo + 1e-3
    im = ax.imshow(sent_beat, aspect="auto", cmap="magma", vmin=lo, vmax=hi)
    ax.yaxis.tick_right()
    ax.set_yticks(range(len(sentences)))
    ax.set_yticklabels(["\n".join(textwrap.wrap(s, 26)) for s in sentences], fontsize=8)
    ax.set_xticks(range(sent_beat.shape[1]))
    ax.set_xlabel("beat query", fontsize=9)
    ax.set_title("each sentence's attention over the beat queries" + uniform, fontsize=10)
    fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.04, pad=0.08, label="attention weight")
