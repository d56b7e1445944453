"""Shared plumbing of the evaluation commands: splits, batches, model/store checks, outputs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melp.eval.prompts import TASK_ALIASES

log = logging.getLogger(__name__)

__all__ = [
    "Splits",
    "resolve_task",
    "choose_splits",
    "rows_for",
    "label_matrix",
    "ecg_batches",
    "check_compatible",
    "pick_device",
    "write_json",
    "to_jsonable",
]


def resolve_task(store: Any, task: str) -> str:
    """The store's own name of ``task`` (accepts benchmark names such as ``ptbxl_super_class``)."""
    tasks = store.tasks
    if task in tasks:
        return task
    canonical = TASK_ALIASES.get(task, task)
    for name in tasks:
        if TASK_ALIASES.get(name, name) == canonical:
            return name
    raise KeyError(f"store {store.path} has no task {task!r}; its tasks are {sorted(tasks)}")


@dataclass
class Splits:
    """Manifest positions of the train / val / test portions and how they were chosen."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    description: str


def _folds(store: Any) -> set[int]:
    folds = store.manifest["fold"].dropna()
    return {int(f) for f in folds}


def choose_splits(
    store: Any,
    train_folds: list[int] | None = None,
    val_folds: list[int] | None = None,
    test_folds: list[int] | None = None,
    val_fraction: float = 0.1,
    seed: int = 42,
) -> Splits:
    """Train/val/test rows for probing and fine-tuning.

    * Explicit folds win: any of ``train_folds``/``val_folds``/``test_folds`` given -> those folds
      (missing ones default as below).
    * A store with folds (PTB-XL): folds 1-8 train; if fold 10 exists, val 9 and test 10 (the
      benchmark protocol); otherwise (PTB-XL mini ships folds 1-9) test = fold 9 and val =
      ``val_fraction`` of the folds 1-8 patients (seeded, whole patients), train = the rest.
    * A store without folds: its ``split`` column (train/val/test).
    """
    man = store.manifest
    folds = _folds(store)
    if folds or train_folds or val_folds or test_folds:
        train_f = train_folds or [f for f in range(1, 9) if f in folds]
        if test_folds is None:
            test_folds = [10] if 10 in folds else [9]
        if val_folds is None and 10 in folds and 9 not in test_folds:
            val_folds = [9]
        test = store.select(folds=test_folds)
        if val_folds:
            train = store.select(folds=[f for f in train_f if f not in val_folds])
            val = store.select(folds=val_folds)
            desc = f"train folds {train_f}, val folds {val_folds}, test folds {test_folds}"
        else:
            pool = store.select(folds=[f for f in train_f if f not in test_folds])
            patients = man["patient"].iloc[pool].astype(str).to_numpy()
            uniq = np.unique(patients)
            rng = np.random.default_rng(seed)
            n_val = max(1, int(round(val_fraction * len(uniq))))
            val_pat = set(rng.permutation(uniq)[:n_val].tolist())
            in_val = np.array([p in val_pat for p in patients], dtype=bool)
            train, val = pool[~in_val], pool[in_val]
            desc = (
                f"train = folds {train_f} minus {val_fraction:.0%} of their patients (val, seed {seed}), "
                f"test folds {test_folds}"
            )
    else:
        train, val, test = (store.select(split=s) for s in ("train", "val", "test"))
        desc = "published split column (train / val / test)"
    if min(len(train), len(val), len(test)) == 0:
        raise ValueError(
            f"store {store.path}: empty portion with {desc} (train {len(train)}, val {len(val)}, "
            f"test {len(test)}); choose folds with --train-folds/--val-folds/--test-folds"
        )
    return Splits(train=train, val=val, test=test, description=desc)


def rows_for(store: Any, split: str | None = None, folds: list[int] | None = None) -> np.ndarray:
    """Rows of one evaluation portion: explicit folds, else ``split`` ('val'/'test'), else the
    test split when the store has one (fold 10 / split 'test'), else 'val' (fold 9)."""
    if folds:
        rows = store.select(folds=folds)
        what = f"folds {folds}"
    else:
        if split is None:
            split = "test" if len(store.select(split="test")) else "val"
        rows = store.select(split=split)
        what = f"split {split!r}"
    if len(rows) == 0:
        raise ValueError(f"store {store.path} has no records in {what}; pick another --split/--folds")
    return rows


def label_matrix(store: Any, task: str, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Multi-hot labels (N, K) float32 of ``rows`` for ``task`` and the class names (store order)."""
    classes = store.tasks[task]
    col = store.manifest[f"labels_{task}"].iloc[rows]
    pos = {c: k for k, c in enumerate(classes)}
    y = np.zeros((len(rows), len(classes)), dtype=np.float32)
    for i, labels in enumerate(col):
        for c in labels if labels is not None else []:
            if c in pos:
                y[i, pos[c]] = 1.0
    return y, classes


def ecg_batches(
    store: Any, rows: np.ndarray, batch_size: int = 128, normalize: str = "minmax", with_reports: bool = False
) -> Iterator[dict[str, Any]]:
    """Yield batches ``{"ecg": float32 (B, 12, T), "id": list[str], "report": list[str]?}`` in row order,
    normalised as in training (no lead masking)."""
    from melp.data.datasets import PretrainDataset

    ds = PretrainDataset(store, rows=np.asarray(rows), lead_mask_p=0.0, normalize=normalize, train=False)
    for start in range(0, len(ds), batch_size):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        batch: dict[str, Any] = {
            "ecg": torch.stack([torch.as_tensor(it["ecg"], dtype=torch.float32) for it in items]),
            "id": [str(it["id"]) for it in items],
        }
        if with_reports:
            batch["report"] = [str(it["report"]) for it in items]
        yield batch


def check_compatible(model: Any, store: Any) -> None:
    """Fail with a clear message when the store's rate/length differ from what the model expects."""
    ecg_cfg = model.config["ecg"]
    rate, n = float(ecg_cfg["sample_rate"]), int(ecg_cfg["n_samples"])
    if abs(store.rate - rate) > 1e-6 or store.n_samples != n:
        raise ValueError(
            f"store {store.path} holds {store.rate:g} Hz x {store.n_samples} samples but the model expects "
            f"{rate:g} Hz x {n}; prepare the data again with `melp prepare ... --rate {rate:g} "
            f"--seconds {n / rate:g}`"
        )


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when available, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays (NaN -> None) inside dicts/lists to plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN as null), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(obj), indent=1) + "\n")
    return path


class FeatureBank:
    """Lazily computed, cached ``model.embed`` outputs per store row (rhythm, probe; beats on request).

    Evaluations that share a model and a store (zero-shot on several tasks, probe, retrieval,
    patient identification) pass one bank around so that each record goes through the encoder once.
    ``z_e`` (``model.encode_ecg``) equals the L2-normalised rhythm embedding.
    """

    def __init__(
        self,
        model: Any,
        store: Any,
        batch_size: int = 128,
        normalize: str = "minmax",
        keys: tuple[str, ...] = ("rhythm", "probe"),
    ) -> None:
        self.model, self.store, self.batch_size, self.normalize, self.keys = (
            model,
            store,
            batch_size,
            normalize,
            keys,
        )
        self._cache: dict[str, dict[int, np.ndarray]] = {k: {} for k in keys}

    def get(self, rows: np.ndarray, key: str) -> np.ndarray:
        """float32 (N, ...) embedding ``key`` of ``rows`` (in that order), computing the missing rows."""
        if key not in self._cache:
            raise KeyError(f"FeatureBank keeps {self.keys}, not {key!r}")
        cache = self._cache[key]
        todo = np.array([r for r in dict.fromkeys(int(r) for r in rows) if r not in cache], dtype=np.int64)
        if len(todo):
            from melp.eval.zeroshot import eval_mode

            device = next(self.model.parameters()).device
            with eval_mode(self.model):
                for start in range(0, len(todo), self.batch_size):
                    part = todo[start : start + self.batch_size]
                    batch = next(ecg_batches(self.store, part, len(part), self.normalize))
                    emb = self.model.embed(batch["ecg"].to(device))
                    for k in self.keys:
                        vals = emb[k].float().cpu().numpy()
                        for r, v in zip(part, vals):
                            self._cache[k][int(r)] = v
        return np.stack([cache[int(r)] for r in rows]) if len(rows) else np.zeros((0,), np.float32)

    def z_e(self, rows: np.ndarray) -> np.ndarray:
        """Unit-norm ECG latents (N, D) = ``model.encode_ecg`` of ``rows``."""
        r = self.get(rows, "rhythm")
        return r / np.linalg.norm(r, axis=1, keepdims=True).clip(1e-12)
