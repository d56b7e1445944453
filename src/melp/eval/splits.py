"""Which records an evaluation uses: one portion (zero-shot, retrieval, ...) or train/val/test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from melp.data.datasets import select_rows

__all__ = ["Splits", "choose_splits", "portion_rows"]


@dataclass
class Splits:
    """Manifest positions of the train / val / test portions and how they were chosen."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    description: str


def portion_rows(store: Any, split: str | None = None, folds: list[int] | None = None) -> np.ndarray:
    """Rows of one evaluation portion: explicit ``folds``, else ``split`` ('train'/'val'/'test'),
    else the test split when the store has one (fold 10 / split 'test'), else 'val' (fold 9)."""
    if folds:
        return select_rows(store, folds=folds)
    if split is None:
        split = "test" if len(store.select(split="test")) else "val"
    return select_rows(store, split=split)


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
    Raises ValueError when a portion is empty or portions overlap.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    man = store.manifest
    folds = {int(f) for f in man["fold"].dropna()}
    if folds or train_folds or val_folds or test_folds:
        train_f = train_folds or [f for f in range(1, 9) if f in folds]
        if test_folds is None:
            test_folds = [10] if 10 in folds else [9]
        if val_folds is None and 10 in folds and 9 not in test_folds:
            val_folds = [9]
        overlap = (set(train_folds or []) | set(val_folds or [])) & set(test_folds)
        if overlap:
            raise ValueError(f"folds {sorted(overlap)} are both training/validation and test folds")
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
