"""The one way records leave a store: row selection, the model-input check, items and batches.

Training (pretraining batches and zero-shot validation) and every evaluation command read
through this module, so the same store, rows and task always give the same records, labels and
normalised signals.

Per item (fix of defect D9): read the raw float16 signal, zero the leads that are masked (random
lead masking in training, or leads absent at evaluation, ``leads=``), *then* normalise over the
valid samples only; the padded tail stays exactly 0 and the valid ``length`` travels with the item
to the model (padding mask).

Labels: a record whose ``labels_<task>`` is None is *not labelled* for the task and is left out
of the task's rows everywhere; ``[]`` is a labelled record that is negative for every class.

Randomness uses torch's global generator (or the ``generator`` given), so a DataLoader's
per-worker seeding makes workers draw different masks and ``torch.manual_seed`` makes a run
reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from melp.data import signal as sig
from melp.data.store import ECGStore

N_LEADS = len(sig.CANONICAL_LEADS)

__all__ = [
    "N_LEADS",
    "check_input",
    "select_rows",
    "task_labels",
    "label_fraction",
    "lead_mask",
    "leads_kept",
    "prepare_ecg",
    "SignalDataset",
    "PretrainDataset",
    "DownstreamDataset",
    "batches",
]


def check_input(store: ECGStore, ecg_config: dict, where: str = "") -> None:
    """The one compatibility check between a store and a model's input contract.

    ``ecg_config``: the model config's ``ecg`` section (``sample_rate``, ``n_samples``, optional
    ``lead_order``). Raises ValueError saying how to prepare a matching store."""
    rate, n = float(ecg_config["sample_rate"]), int(ecg_config["n_samples"])
    order = ecg_config.get("lead_order")
    prefix = f"{where}: " if where else ""
    if abs(store.rate - rate) > 1e-6 or store.n_samples != n:
        raise ValueError(
            f"{prefix}store {store.path} holds {store.rate:g} Hz x {store.n_samples} samples but the model expects "
            f"{rate:g} Hz x {n}; prepare the data again with `melp prepare ... --rate {rate:g} --seconds {n / rate:g}`"
        )
    if order is not None and list(order) != list(store.meta.get("leads", sig.CANONICAL_LEADS)):
        raise ValueError(
            f"{prefix}the model expects leads {', '.join(order)} but store {store.path} holds "
            f"{', '.join(store.meta.get('leads', sig.CANONICAL_LEADS))}"
        )


def select_rows(
    store: ECGStore, split: str | None = None, folds: list[int] | None = None, limit: int = 0, where: str = ""
) -> np.ndarray:
    """Manifest positions of ``store`` in ``split`` and/or ``folds`` (None = no filter), ascending,
    the first ``limit`` of them when > 0. Raises ValueError when nothing matches."""
    rows = store.select(split=split, folds=folds)
    if limit:
        rows = rows[:limit]
    if len(rows) == 0:
        what = " and ".join(
            x for x in (f"split {split!r}" if split else "", f"folds {folds}" if folds else "") if x
        )
        prefix = f"{where}: " if where else ""
        raise ValueError(
            f"{prefix}store {store.path} has no records in {what or 'it'}; pick another split/folds"
        )
    return rows


def task_labels(store: ECGStore, task: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(labels (N, K) float32, labelled (N,) bool, classes)`` of ``task`` for every record.

    Raises KeyError for a task the store does not have, ValueError for a label that is not a class."""
    if task not in store.tasks:
        raise KeyError(
            f"{store.path}: no task {task!r}; the store has {', '.join(store.tasks) or 'no tasks'}"
        )
    classes = list(store.tasks[task])
    index = {c: k for k, c in enumerate(classes)}
    col = store.manifest[f"labels_{task}"]
    labels = np.zeros((len(col), len(classes)), dtype=np.float32)
    labelled = np.zeros(len(col), dtype=bool)
    for r, names in enumerate(col):
        if names is None:
            continue
        labelled[r] = True
        for name in names:
            if name not in index:
                raise ValueError(
                    f"{store.path}: record {store.manifest['id'].iat[r]} has label {name!r}, "
                    f"which is not a class of task {task!r}"
                )
            labels[r, index[name]] = 1.0
    return labels, labelled, classes


def label_fraction(labels: np.ndarray, fraction: float, seed: int = 42) -> np.ndarray:
    """Pick ``round(fraction * N)`` (at least 1) of the N rows of multi-hot ``labels (N, K)``.

    Every class with a positive in ``labels`` keeps at least one positive: first, in class order,
    one random positive is drawn for each class not yet covered; the rest is filled at random.
    (When there are more classes than the budget, the result is larger than the budget.)
    Returns sorted row indices (int64). ``fraction == 1`` returns all rows.
    """
    labels = np.asarray(labels) > 0
    n = labels.shape[0]
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1 or n == 0:
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


def leads_kept(leads: list[str] | str | None) -> torch.Tensor | None:
    """Bool (12,) keep-mask (canonical order) for a subset of lead names (``"I,II,V2"`` or a list,
    any case); None = all 12. Raises ValueError for an unknown or repeated name or an empty set."""
    if leads is None:
        return None
    names = (
        [n.strip() for n in leads.split(",")] if isinstance(leads, str) else [str(n).strip() for n in leads]
    )
    names = [n for n in names if n]
    canon = [sig.canonical_lead_name(n) for n in names]
    bad = [n for n, c in zip(names, canon) if c is None]
    if bad or not names:
        raise ValueError(
            f"leads: {bad or names!r} not lead names; use any of {', '.join(sig.CANONICAL_LEADS)}"
        )
    if len(set(canon)) != len(canon):
        raise ValueError(f"leads: {names} names a lead twice")
    return torch.tensor([name in canon for name in sig.CANONICAL_LEADS])


def prepare_ecg(
    x: np.ndarray, length: int, *, normalize: str = "minmax", keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Raw ``x (12, T)`` -> model input: zero the leads not in ``keep`` (bool (12,)), then
    normalise over the first ``length`` samples. Returns float32 tensor (12, T), padding = 0."""
    x = np.array(x, dtype=np.float32, copy=True)
    if keep is not None:
        x[~keep.numpy()] = 0.0
    return torch.from_numpy(sig.normalize(x, length, normalize))


class SignalDataset(Dataset):
    """Normalised signals of ``rows`` (manifest positions; None = all), no augmentation.

    item -> ``{"ecg": float32 (12, T), "length": int, "id": str}``.

    * ``leads``: evaluate with only these leads (the others zeroed before normalisation, exactly as
      random lead masking does in training).
    * ``window``: keep only the first ``window`` samples of each record (the rest becomes padding),
      e.g. the paper's 2,500-sample ICBEB window at 500 Hz.
    * ``padding_as_signal``: treat the zero padding as part of the record (normalised with it, no
      padding mask: ``length`` = T), as the paper's code does; default False (the padding is masked).
    """

    def __init__(
        self,
        store: ECGStore,
        rows: np.ndarray | None = None,
        *,
        normalize: str = "minmax",
        leads: list[str] | str | None = None,
        window: int | None = None,
        padding_as_signal: bool = False,
    ) -> None:
        if normalize not in sig.NORMALIZERS and normalize != "none":
            raise ValueError(f"unknown normalisation {normalize!r}; use one of minmax, zscore, none")
        if window is not None and not 0 < window <= store.n_samples:
            raise ValueError(f"window must be in [1, {store.n_samples}] samples, got {window}")
        self.store, self.normalize = store, normalize
        self.rows = (
            np.arange(len(store), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        )
        self.ids = store.manifest["id"].astype(str).to_numpy()
        self.keep = leads_kept(leads)
        self.window, self.padding_as_signal = window, padding_as_signal

    def __len__(self) -> int:
        return len(self.rows)

    def _signal(self, i: int, keep: torch.Tensor | None) -> dict:
        x, length = self.store.signal(i)
        if self.window is not None and self.window < x.shape[-1]:
            x[:, self.window :] = 0.0
            length = min(length, self.window)
        if self.padding_as_signal:
            length = x.shape[-1]
        return {"ecg": prepare_ecg(x, length, normalize=self.normalize, keep=keep), "length": length,
                "id": self.ids[i]}  # fmt: skip

    def __getitem__(self, index: int) -> dict:
        return self._signal(int(self.rows[index]), self.keep)


class PretrainDataset(SignalDataset):
    """ECG-report pairs. ``rows``: manifest positions (None = every record with a non-empty report).

    item -> ``{"ecg": float32 (12, T), "length": int, "report": str, "id": str, "patient": str}``

    Training augmentation (``train=True``), all drawn from ``generator`` (or torch's global RNG):

    * ``lead_mask_p``: each lead zeroed with this probability (never all 12), before normalising;
    * ``max_shift``: the record starts a random 0..``max_shift`` samples later (the skipped start
      is dropped, the end is zero-padded and the valid length shrinks accordingly, so the
      normalisation ignores the padding). Rates and intervals are unchanged, unlike time
      stretching, which would turn a normal rate into a brady- or tachycardia;
    * ``noise_std``: Gaussian noise of this standard deviation added to the valid samples of the
      kept leads after normalising (in units of the normalised signal); masked leads keep their
      value (the normalised 0 mV level), with or without noise.
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
        reports = store.manifest["report"].fillna("").astype(str).to_numpy()
        if rows is None:
            rows = np.flatnonzero(np.char.str_len(reports.astype(str)) > 0)
        super().__init__(store, rows, normalize=normalize)
        self.reports = reports
        self.patients = store.manifest["patient"].fillna("").astype(str).to_numpy()
        self.lead_mask_p, self.train, self.generator = lead_mask_p, train, generator
        if max_shift < 0 or noise_std < 0:
            raise ValueError(f"max_shift ({max_shift}) and noise_std ({noise_std}) must be >= 0")
        self.max_shift, self.noise_std = int(max_shift), float(noise_std)
        if train:
            lead_mask(lead_mask_p, torch.Generator())  # validate p early

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
            if keep is not None:
                noise[~keep] = 0.0  # masked leads stay at their (normalised 0 mV) level
            ecg[:, :length] += noise[:, :length]
        return {"ecg": ecg, "length": length, "report": self.reports[i], "id": self.ids[i],
                "patient": self.patients[i]}  # fmt: skip


class DownstreamDataset(SignalDataset):
    """Multi-label classification on ``task`` (a key of ``store.tasks``).

    rows: manifest positions (None = all). Records not labelled for the task (``None`` labels) are
    always left out; ``[]`` is a record negative for every class. ``fraction`` < 1 keeps a seeded
    subset with >= 1 positive per class (:func:`label_fraction`). No augmentation; ``leads`` as in
    :class:`SignalDataset`.

    item -> ``{"ecg": float32 (12, T), "length": int, "labels": float32 (K,), "id": str}``;
    ``.classes`` = names, ``.rows`` = the manifest positions actually used.
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
        leads: list[str] | str | None = None,
    ) -> None:
        labels, labelled, classes = task_labels(store, task)
        rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
        rows = rows[labelled[rows]]
        rows = rows[label_fraction(labels[rows], fraction, seed)]
        super().__init__(store, rows, normalize=normalize, leads=leads)
        self.task, self.classes, self.labels = task, classes, labels

    def label_matrix(self) -> np.ndarray:
        """Multi-hot labels of the selected rows, ``(len(self), K)`` float32."""
        return self.labels[self.rows]

    def __getitem__(self, index: int) -> dict:
        i = int(self.rows[index])
        item = self._signal(i, self.keep)
        item["labels"] = torch.from_numpy(self.labels[i].copy())
        return item


def batches(dataset: Dataset, batch_size: int, indices: np.ndarray | None = None) -> Iterator[dict]:
    """Collated batches of ``dataset`` items in order (``indices`` = dataset positions, default all):
    ``ecg`` (B, 12, T), ``length`` (B,) int64, ``labels`` (B, K); string fields stay lists."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    for start in range(0, len(order), batch_size):
        yield default_collate([dataset[int(k)] for k in order[start : start + batch_size]])
