"""Torch datasets over a prepared store: pretraining (signal + report) and downstream (signal + labels).

Per item (fix of defect D9): read the raw float16 signal, apply random lead masking (training
only; each lead zeroed with probability ``lead_mask_p``, at least one lead always kept), *then*
normalise over the valid samples only; the padded tail stays exactly 0.

Randomness uses torch's global generator (or the ``generator`` given), so a DataLoader's
per-worker seeding makes workers draw different masks and ``torch.manual_seed`` makes a run
reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from melp.data import signal as sig
from melp.data.store import ECGStore

N_LEADS = len(sig.CANONICAL_LEADS)


def split_rows(store: ECGStore, split: str | None = None, folds: list[int] | None = None) -> np.ndarray:
    """Manifest positions of ``store`` in ``split`` and/or ``folds`` (None = no filter), ascending."""
    return store.select(split=split, folds=folds)


def label_fraction(labels: np.ndarray, fraction: float, seed: int = 42) -> np.ndarray:
    """Pick ``round(fraction * N)`` (at least 1) of the N rows of multi-hot ``labels (N, K)``.

    Every class with a positive in ``labels`` keeps at least one positive: first, in class order,
    one random positive is drawn for each class not yet covered; the rest is filled at random.
    (When there are more classes than the budget, the result is larger than the budget.)
    Returns sorted row indices (int64). ``fraction >= 1`` returns all rows.
    """
    labels = np.asarray(labels) > 0
    n = labels.shape[0]
    if not 0 < fraction:
        raise ValueError(f"fraction must be > 0, got {fraction}")
    if fraction >= 1 or n == 0:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    target = max(1, int(round(fraction * n)))
    chosen = np.zeros(n, dtype=bool)
    for k in range(labels.shape[1]):
        positives = np.flatnonzero(labels[:, k])
        if positives.size and not chosen[positives].any():
            chosen[rng.choice(positives)] = True
    rest = np.flatnonzero(~chosen)
    extra = max(0, target - int(chosen.sum()))
    chosen[rng.choice(rest, size=min(extra, rest.size), replace=False)] = True
    return np.flatnonzero(chosen).astype(np.int64)


def lead_mask(p: float, generator: torch.Generator | None = None, n_leads: int = N_LEADS) -> torch.Tensor:
    """Bool ``(n_leads,)``: True = keep. Each lead is dropped with probability ``p``; a draw that
    drops every lead is redrawn (so the result is uniform over the masks keeping >= 1 lead)."""
    if not 0 <= p < 1:
        raise ValueError(f"lead_mask_p must be in [0, 1), got {p}")
    while True:
        keep = torch.rand(n_leads, generator=generator) >= p
        if keep.any():
            return keep


def prepare_ecg(
    x: np.ndarray, length: int, *, normalize: str = "minmax", keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Raw ``x (12, T)`` -> model input: zero the leads not in ``keep`` (bool (12,)), then
    normalise over the first ``length`` samples. Returns float32 tensor (12, T), padding = 0."""
    x = np.array(x, dtype=np.float32, copy=True)
    if keep is not None:
        x[~keep.numpy()] = 0.0
    return torch.from_numpy(sig.normalize(x, length, normalize))


class PretrainDataset(Dataset):
    """ECG-report pairs. ``rows``: manifest positions (None = every record with a non-empty report).

    item -> ``{"ecg": float32 (12, T), "report": str, "id": str, "patient": str}``

    Training augmentation (``train=True``), all drawn from ``generator`` (or torch's global RNG):

    * ``lead_mask_p``: each lead zeroed with this probability (never all 12), before normalising;
    * ``max_shift``: the record starts a random 0..``max_shift`` samples later (the skipped start
      is dropped, the end is zero-padded and the valid length shrinks accordingly, so the
      normalisation ignores the padding). Rates and intervals are unchanged, unlike time
      stretching, which would turn a normal rate into a brady- or tachycardia;
    * ``noise_std``: Gaussian noise of this standard deviation added to the valid samples after
      normalising (in units of the normalised signal).
    """

    def __init__(
        self,
        store: ECGStore,
        rows: np.ndarray | None = None,
        *,
        lead_mask_p: float = 0.5,
        normalize: str = "minmax",
        train: bool = True,
        generator: torch.Generator | None = None,
        max_shift: int = 0,
        noise_std: float = 0.0,
    ) -> None:
        self.store = store
        reports = store.manifest["report"].fillna("").astype(str).to_numpy()
        if rows is None:
            rows = np.flatnonzero(np.char.str_len(reports.astype(str)) > 0)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.reports = reports
        self.ids = store.manifest["id"].astype(str).to_numpy()
        self.patients = store.manifest["patient"].fillna("").astype(str).to_numpy()
        self.lead_mask_p, self.normalize, self.train, self.generator = (
            lead_mask_p,
            normalize,
            train,
            generator,
        )
        if max_shift < 0 or noise_std < 0:
            raise ValueError(f"max_shift ({max_shift}) and noise_std ({noise_std}) must be >= 0")
        self.max_shift, self.noise_std = int(max_shift), float(noise_std)
        if train:
            lead_mask(lead_mask_p, torch.Generator())  # validate p early

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        i = int(self.rows[index])
        x, length = self.store.signal(i)
        keep = lead_mask(self.lead_mask_p, self.generator) if self.train and self.lead_mask_p > 0 else None
        if self.train and self.max_shift > 0:
            # keep at least half of the valid samples
            shift = int(
                torch.randint(0, min(self.max_shift, length // 2) + 1, (1,), generator=self.generator)
            )
            if shift:
                x = np.concatenate([x[:, shift:], np.zeros_like(x[:, :shift])], axis=1)
                length -= shift
        ecg = prepare_ecg(x, length, normalize=self.normalize, keep=keep)
        if self.train and self.noise_std > 0:
            noise = torch.randn(ecg.shape, generator=self.generator) * self.noise_std
            ecg[:, :length] += noise[:, :length]
            if keep is not None:
                ecg[~keep] = 0.0  # masked leads stay silent
        return {"ecg": ecg, "report": self.reports[i], "id": self.ids[i], "patient": self.patients[i]}


class DownstreamDataset(Dataset):
    """Multi-label classification on ``task`` (a key of ``store.tasks``).

    rows: manifest positions (None = all). Records with no positive class for the task are
    dropped when ``drop_unlabeled`` (the PTB-XL benchmark's convention: e.g. form and rhythm are
    evaluated only on records that have such a statement). ``fraction`` < 1 keeps a seeded
    subset with >= 1 positive per class (:func:`label_fraction`). No augmentation.

    item -> ``{"ecg": float32 (12, T), "labels": float32 (K,), "id": str}``; ``.classes`` = names.
    """

    def __init__(
        self,
        store: ECGStore,
        task: str,
        rows: np.ndarray | None = None,
        *,
        normalize: str = "minmax",
        fraction: float = 1.0,
        seed: int = 42,
        drop_unlabeled: bool = True,
    ) -> None:
        if task not in store.tasks:
            raise KeyError(
                f"{store.path}: no task {task!r}; the store has {', '.join(store.tasks) or 'no tasks'}"
            )
        self.store, self.task, self.normalize = store, task, normalize
        self.classes = list(store.tasks[task])
        col = store.manifest[f"labels_{task}"]
        index = {c: k for k, c in enumerate(self.classes)}
        labels = np.zeros((len(col), len(self.classes)), dtype=np.float32)
        for r, names in enumerate(col):
            for name in names:
                if name not in index:
                    raise ValueError(
                        f"{store.path}: record {store.manifest['id'].iat[r]} has label {name!r} "
                        f"which is not a class of task {task!r}"
                    )
                labels[r, index[name]] = 1.0
        rows = np.arange(len(col)) if rows is None else np.asarray(rows, dtype=np.int64)
        if drop_unlabeled:
            rows = rows[labels[rows].any(axis=1)]
        rows = rows[label_fraction(labels[rows], fraction, seed)]
        self.rows, self.labels = rows.astype(np.int64), labels
        self.ids = store.manifest["id"].astype(str).to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def label_matrix(self) -> np.ndarray:
        """Multi-hot labels of the selected rows, ``(len(self), K)`` float32."""
        return self.labels[self.rows]

    def __getitem__(self, index: int) -> dict:
        i = int(self.rows[index])
        x, length = self.store.signal(i)
        return {
            "ecg": prepare_ecg(x, length, normalize=self.normalize),
            "labels": torch.from_numpy(self.labels[i].copy()),
            "id": self.ids[i],
        }
