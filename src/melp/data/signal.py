"""Signal operations shared by every source: lead names, resampling, crop/pad, normalisation, checks.

Arrays are ``(L, T)``: L leads, T samples (the last axis is time). Units are whatever the source
stores (mV for most datasets); nothing here changes units except the normalisation functions.

Decisions (documented here once):

* Leads are matched **by name**, case-insensitively (``AVR`` == ``aVR``), never by position.
  Only unambiguous aliases are accepted (``D1``/``D2``/``D3`` for the Einthoven leads, a leading
  ``lead`` word, ``-aVR`` is *not* accepted because it is the inverted lead). ``MLII`` (modified
  limb lead II of ambulatory recordings) is *not* mapped to ``II``: its electrode placement differs.
* :func:`reorder_leads` raises on missing leads by default; ``missing="zero"`` zero-fills them
  and reports which were filled (the store rejects records with fewer than 12 leads unless told).
* Resampling uses an anti-aliased polyphase filter (``scipy.signal.resample_poly``) with a
  rational approximation of ``rate_out / rate_in`` (denominator <= 1000, so 257 Hz -> 100 Hz is
  exact: up 100, down 257; up to 10000 when that is not within 1e-6, e.g. 499.7 Hz).
* Crop keeps the **first** samples (as the reference does); pad appends zeros at the end. The
  valid length is returned so that normalisation and models can ignore the padding.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

CANONICAL_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVF",
    "aVL",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)
"""Model lead order (MIMIC-IV-ECG), compatible with the paper's released weights."""

FLOAT16_MAX = 65504.0

_ALIASES: dict[str, str] = {name.lower(): name for name in CANONICAL_LEADS}
_ALIASES.update({"d1": "I", "d2": "II", "d3": "III", "di": "I", "dii": "II", "diii": "III"})


def canonical_lead_name(name: str) -> str | None:
    """Canonical spelling of a lead name (``"AVR"`` -> ``"aVR"``), or None if not a standard lead.

    Case, surrounding spaces and a leading ``lead`` word are ignored (``"Lead II"`` -> ``"II"``).
    """
    key = str(name).strip().lower()
    if key.startswith("lead"):
        key = key[4:].strip(" _-")
    return _ALIASES.get(key.replace(" ", ""))


def lead_permutation(leads: list[str]) -> tuple[list[int | None], list[str]]:
    """For each canonical lead, the index of that lead in ``leads`` (None when absent).

    Returns ``(positions, missing)`` where ``positions`` has 12 entries in canonical order and
    ``missing`` lists the canonical names not found. Raises ValueError on a duplicated lead.
    """
    where: dict[str, int] = {}
    for i, raw in enumerate(leads):
        name = canonical_lead_name(raw)
        if name is None:
            continue  # extra channels (e.g. a respiration trace) are ignored
        if name in where:
            raise ValueError(f"lead {name} appears twice (as {leads[where[name]]!r} and {raw!r})")
        where[name] = i
    positions = [where.get(name) for name in CANONICAL_LEADS]
    missing = [name for name, pos in zip(CANONICAL_LEADS, positions) if pos is None]
    return positions, missing


def reorder_leads(
    data: np.ndarray, leads: list[str], *, missing: str = "error"
) -> tuple[np.ndarray, list[str]]:
    """Reorder ``data (L, T)`` with lead names ``leads`` into canonical order ``(12, T)``.

    ``missing="error"`` raises ValueError naming the absent leads; ``missing="zero"`` fills
    them with zeros. Returns ``(out (12, T), names of zero-filled leads)``.
    """
    if data.ndim != 2 or data.shape[0] != len(leads):
        raise ValueError(f"data has shape {data.shape} but {len(leads)} lead names were given")
    if missing not in ("error", "zero"):
        raise ValueError(f"missing must be 'error' or 'zero', not {missing!r}")
    positions, absent = lead_permutation(leads)
    if absent and missing == "error":
        raise ValueError(f"missing leads {', '.join(absent)} (record has {', '.join(map(str, leads))})")
    out = np.zeros((len(CANONICAL_LEADS), data.shape[1]), dtype=data.dtype)
    for k, pos in enumerate(positions):
        if pos is not None:
            out[k] = data[pos]
    return out, absent


def resample_ratio(
    rate_in: float, rate_out: float, max_denominator: int = 10_000, tolerance: float = 1e-6
) -> tuple[int, int]:
    """``(up, down)`` with ``up / down`` ~= ``rate_out / rate_in``.

    The simplest fraction with a denominator <= 1000 whose relative error is at most ``tolerance``
    (exact for integer rates <= 1000: 257 -> 100 Hz is up 100, down 257); when there is none (e.g.
    499.7 -> 500 Hz, exactly 5000/4997), the closest with a denominator <= ``max_denominator``.
    Without this second step 499.7 Hz would be read as 500 Hz: a 0.04 % error of every interval."""
    if not (rate_in > 0 and rate_out > 0) or not (math.isfinite(rate_in) and math.isfinite(rate_out)):
        raise ValueError(f"sampling rates must be positive (got {rate_in} -> {rate_out})")
    target = Fraction(float(rate_out) / float(rate_in))
    frac = target.limit_denominator(1000)
    if abs(frac / target - 1) > tolerance:
        frac = target.limit_denominator(max(max_denominator, 1000))
    return frac.numerator, frac.denominator


def resample(data: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """Resample ``data (L, T)`` from ``rate_in`` to ``rate_out`` Hz along the last axis.

    Anti-aliased polyphase filtering (Kaiser window, scipy's default); content above the new
    Nyquist frequency is removed when downsampling. Output length is ``ceil(T * up / down)``.
    The signal is extended by its linear trend at both ends (``padtype="line"``) so that a DC
    offset does not ring at the edges. Returns float64; identity when the rates are equal.
    """
    up, down = resample_ratio(rate_in, rate_out)
    x = np.asarray(data, dtype=np.float64)
    if up == down:
        return x.copy()
    return resample_poly(x, up, down, axis=-1, padtype="line")


def crop_or_pad(data: np.ndarray, n_samples: int) -> tuple[np.ndarray, int]:
    """Keep the first ``n_samples`` of ``data (L, T)``, or zero-pad at the end.

    Returns ``(out (L, n_samples), valid_length)`` with ``valid_length = min(T, n_samples)``.
    """
    length = min(data.shape[-1], n_samples)
    out = np.zeros(data.shape[:-1] + (n_samples,), dtype=data.dtype)
    out[..., :length] = data[..., :length]
    return out, length


def valid_mask(n_samples: int, length: int) -> np.ndarray:
    """Boolean ``(n_samples,)`` that is True on the first ``length`` samples."""
    return np.arange(n_samples) < length


def normalize_minmax(x: np.ndarray, length: int | None = None, eps: float = 1e-8) -> np.ndarray:
    """The paper's per-record min-max: ``(x - min) / (max - min + eps)``, one min/max per record.

    ``x (L, T)``; min and max are taken over all leads and the first ``length`` samples only
    (None = all). The padded tail stays exactly 0. Returns float32.
    """
    x = np.asarray(x, dtype=np.float32)
    length = x.shape[-1] if length is None else int(length)
    out = np.zeros_like(x)
    if length <= 0:
        return out
    valid = x[..., :length]
    lo, hi = valid.min(), valid.max()
    out[..., :length] = (valid - lo) / (hi - lo + eps)
    return out


def normalize_zscore(x: np.ndarray, length: int | None = None, eps: float = 1e-8) -> np.ndarray:
    """Per-lead z-score ``(x - mean) / (std + eps)`` over the first ``length`` samples.

    ``x (L, T)``; a constant (or masked, all-zero) lead becomes 0. The padded tail stays 0.
    Returns float32.
    """
    x = np.asarray(x, dtype=np.float32)
    length = x.shape[-1] if length is None else int(length)
    out = np.zeros_like(x)
    if length <= 0:
        return out
    valid = x[..., :length]
    mean = valid.mean(axis=-1, keepdims=True)
    std = valid.std(axis=-1, keepdims=True)
    out[..., :length] = (valid - mean) / (std + eps)
    return out


NORMALIZERS = {"minmax": normalize_minmax, "zscore": normalize_zscore}


def normalize(x: np.ndarray, length: int | None = None, mode: str = "minmax") -> np.ndarray:
    """Apply the normalisation ``mode`` ("minmax", "zscore" or "none") to ``x (L, T)``."""
    if mode == "none":
        return np.asarray(x, dtype=np.float32)
    try:
        return NORMALIZERS[mode](x, length)
    except KeyError:
        raise ValueError(f"unknown normalisation {mode!r}; use one of minmax, zscore, none") from None


def check_signal(
    data: np.ndarray, leads: list[str] | None = None, *, allow_flat_leads: bool = False
) -> str | None:
    """Return why ``data (L, T)`` is unusable, or None if it is fine.

    Reasons (the text before the colon is the category used in summaries):
    ``empty``, ``non-finite`` (NaN/Inf, with counts), ``flat record`` (every sample equal, e.g.
    all zeros), ``flat lead`` (a lead that is constant; skipped when ``allow_flat_leads``).
    """
    if data.size == 0 or data.shape[-1] == 0:
        return f"empty: signal has shape {tuple(data.shape)}"
    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(data.size - finite.sum() - n_nan)
        return f"non-finite: {n_nan} NaN and {n_inf} Inf samples"
    lo, hi = data.min(axis=-1), data.max(axis=-1)
    if lo.min() == hi.max():
        return f"flat record: every sample equals {float(lo.min()):g}"
    if not allow_flat_leads:
        flat = np.flatnonzero(lo == hi)
        if flat.size:
            names = [leads[i] if leads else str(i) for i in flat]
            return f"flat lead: lead(s) {', '.join(names)} constant"
    return None
