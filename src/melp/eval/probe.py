"""Linear probing of a frozen ECG encoder (spec §7, with the D18 fix).

Protocol: the probe embedding (``model.embed(x)["probe"]``, (B, D_probe)) of every train / val /
test record is extracted ONCE into memory with the encoder in eval mode; a linear head is trained
on it with binary cross-entropy, AdamW (lr 1e-3, weight decay 1e-4), cosine decay per epoch to
1e-5, minibatches of 128, up to 100 epochs, early stopping (patience 5) on the validation macro
AUROC of the SIGMOID scores; the best epoch's head is evaluated on test. Label fractions
(1 % / 10 % / 100 %) subsample the training rows (seeded, at least one positive per class when
possible) and reuse the same extracted features. Features are standardised with the training
portion's mean and std (an affine change the head could learn itself; it makes one learning rate
fit every encoder).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melp.eval.early_stopping import EarlyStopping
from melp.eval.features import FeatureBank, progress
from melp.eval.metrics import macro_auroc
from melp.eval.splits import Splits

log = logging.getLogger(__name__)

__all__ = ["HeadConfig", "extract_features", "train_linear_head", "fraction_rows", "run_probe"]


@dataclass
class HeadConfig:
    """Optimisation settings of the linear head (defaults = the paper's probe protocol)."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 100
    min_lr: float = 1e-5
    batch_size: int = 128
    patience: int = 5
    seed: int = 42
    standardize: bool = True
    min_steps_per_epoch: int = 25
    history: list[dict[str, float]] = field(default_factory=list, repr=False)


def extract_features(
    model: Any,
    store: Any,
    rows: np.ndarray,
    batch_size: int = 128,
    normalize: str | None = None,
    key: str = "probe",
    bank: FeatureBank | None = None,
    leads: list[str] | str | None = None,
) -> np.ndarray:
    """``model.embed(x)[key]`` for ``rows`` in order: float32 (N, D). Encoder in eval mode, no grad.

    ``bank``: reuse (and fill) a :class:`FeatureBank` of the same model and store."""
    if bank is None or not bank.matches(normalize, leads) or key not in bank.keys:
        bank = FeatureBank(model, store, batch_size, normalize, keys=(key,), leads=leads)
    return bank.get(rows, key)


def fraction_rows(y: np.ndarray, fraction: float, seed: int = 42) -> np.ndarray:
    """Indices (into ``y``'s rows) of a seeded ``fraction`` of the records, keeping >= 1 positive per
    class where the data allow (uses ``melp.data.datasets.label_fraction``)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(len(y))
    from melp.data.datasets import label_fraction

    return np.sort(np.asarray(label_fraction(y, fraction, seed)))


def _standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 1e-8, std, 1.0)


def _head_epoch(
    head, opt, xt: torch.Tensor, yt: torch.Tensor, cfg: HeadConfig, gen: torch.Generator
) -> float:
    """One epoch of BCE steps on shuffled minibatches; returns the mean training loss.

    An "epoch" is at least ``min_steps_per_epoch`` minibatches (whole shuffled passes), so that tiny
    label fractions (1 % = a dozen records) still get enough optimiser steps."""
    head.train()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    per_pass = math.ceil(len(xt) / cfg.batch_size)
    n_steps = max(per_pass, cfg.min_steps_per_epoch)
    perm = torch.cat([torch.randperm(len(xt), generator=gen) for _ in range(math.ceil(n_steps / per_pass))])
    total, seen = 0.0, 0
    for step in range(n_steps):
        p = step % per_pass
        idx = perm[(step // per_pass) * len(xt) :][p * cfg.batch_size : (p + 1) * cfg.batch_size]
        loss = loss_fn(head(xt[idx]), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total / seen


def train_linear_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: HeadConfig | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train ``Linear(D, K)`` with BCE on features; keep the epoch with the best val macro AUROC.

    Args:
        x_train (N, D), y_train (N, K), x_val (M, D), y_val (M, K): numpy arrays.
    Returns:
        (head, info): ``head`` maps standardised features to logits and carries the standardiser
        (call ``predict_head(head, x)`` for sigmoid scores); ``info`` has ``best_epoch``,
        ``best_val_auroc``, ``epochs_run`` and the per-epoch ``history``.
    """
    cfg = config or HeadConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    d = x_train.shape[1]
    mean, std = _standardizer(x_train) if cfg.standardize else (np.zeros(d), np.ones(d))
    xt = torch.from_numpy(((x_train - mean) / std).astype(np.float32))
    yt = torch.from_numpy(y_train.astype(np.float32))
    xv = torch.from_numpy(((x_val - mean) / std).astype(np.float32))
    head = torch.nn.Linear(xt.shape[1], yt.shape[1])
    with torch.no_grad():  # zero init: the first steps follow the class-mean directions, not noise
        head.weight.zero_()
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.min_lr)
    stopper = EarlyStopping(cfg.patience)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        loss = _head_epoch(head, opt, xt, yt, cfg, gen)
        sched.step()
        head.eval()
        with torch.no_grad():
            val_scores = torch.sigmoid(head(xv)).numpy()  # D18: sigmoid, not softmax
        auc = macro_auroc(y_val, val_scores)
        history.append({"epoch": epoch, "train_loss": loss, "val_macro_auroc": auc})
        if stopper.step(epoch, auc, head.state_dict()):
            break
    head.load_state_dict(stopper.best_state)
    head.eval()
    head.register_buffer("feat_mean", torch.from_numpy(mean.astype(np.float32)))
    head.register_buffer("feat_std", torch.from_numpy(std.astype(np.float32)))
    info = {"best_epoch": stopper.best_epoch, "best_val_auroc": stopper.best_score, "epochs_run": len(history),
            "history": history}  # fmt: skip
    return head, info


def predict_head(head: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Sigmoid scores (N, K) of a head from ``train_linear_head`` on raw features (N, D)."""
    with torch.no_grad():
        xs = (torch.from_numpy(x.astype(np.float32)) - head.feat_mean) / head.feat_std
        return torch.sigmoid(head(xs)).double().numpy()


def _probe_data(model, store, task, splits, bank, batch_size, normalize, leads) -> dict[str, Any]:
    """Features and labels of the labelled train/val/test records (one pass through the encoder)."""
    from melp.data.datasets import DownstreamDataset

    if bank is None or not bank.matches(normalize, leads):
        bank = FeatureBank(model, store, batch_size, normalize, leads=leads)
    parts = {p: DownstreamDataset(store, task, getattr(splits, p), normalize=bank.normalize, leads=leads)
             for p in ("train", "val", "test")}  # fmt: skip
    for p, ds in parts.items():
        if len(ds) == 0:
            raise ValueError(
                f"store {store.path}: no {p} record is labelled for task {task!r} ({splits.description})"
            )
    return {
        "feats": {p: bank.get(ds.rows, "probe") for p, ds in parts.items()},
        "labels": {p: ds.label_matrix() for p, ds in parts.items()},
        "classes": parts["test"].classes,
        "test_ids": store.manifest["id"].iloc[parts["test"].rows].astype(str).tolist(),
        "sizes": {p: len(ds) for p, ds in parts.items()},
    }


def _save_probe(save, model, head, data, info, meta: dict) -> None:
    """Keep the classifier (encoder, head, standardiser, val max-F1 thresholds) for `melp predict`."""
    from melp.eval.classifier import save_classifier

    meta = {**meta, "best_epoch": info["best_epoch"], "best_val_auroc": info["best_val_auroc"]}
    val_scores = predict_head(head, data["feats"]["val"])
    save_classifier(save, model, head.weight, head.bias, data["classes"], data["labels"]["val"], val_scores, meta,
                    head.feat_mean, head.feat_std)  # fmt: skip


def run_probe(
    model: Any,
    store: Any,
    task: str,
    splits: Splits,
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
    out: str | Path | None = None,
    config: HeadConfig | None = None,
    n_boot: int = 1000,
    batch_size: int = 128,
    normalize: str | None = None,
    name: str = "probe",
    figure: bool = True,
    bank: FeatureBank | None = None,
    leads: list[str] | str | None = None,
    save: str | Path | None = None,
) -> dict[str, Any]:
    """Linear probe for each label fraction; returns ``{"fractions": {f: summary}, ...}``.

    The train/val/test records are those of ``splits`` that are labelled for ``task``
    (:class:`melp.data.datasets.DownstreamDataset`, as everywhere else). Each summary has the test
    ``macro_auroc`` (+ F1, accuracy, bootstrap CIs), the number of training records used, the best
    epoch and its val AUROC. With ``out``, writes ``{name}_{task}_{pct}.json`` (+ CSV/ROC) per
    fraction and ``{name}_{task}.json`` with all fractions. With ``save``, writes the classifier of
    the largest fraction there (:func:`melp.eval.classifier.save_classifier`: encoder, head, class
    names, per-class thresholds at max F1 on the validation portion).
    """
    from melp.data.tasks import resolve_task
    from melp.eval.outputs import write_json
    from melp.eval.results import summarise_classification, write_classification

    task = resolve_task(store, task)
    cfg = config or HeadConfig()
    for frac in fractions:
        if not 0 < frac <= 1:
            raise ValueError(f"label fraction must be in (0, 1], got {frac}")
    data = _probe_data(model, store, task, splits, bank, batch_size, normalize, leads)
    feats, labels, classes = data["feats"], data["labels"], data["classes"]
    results: dict[str, Any] = {}
    for frac in progress(fractions, len(fractions), f"{name} {task}", "fraction"):
        sel = fraction_rows(labels["train"], frac, cfg.seed)
        head, info = train_linear_head(
            feats["train"][sel], labels["train"][sel], feats["val"], labels["val"], cfg
        )
        scores = predict_head(head, feats["test"])
        extra = {
            "method": name, "task": task, "fraction": frac, "n_train": int(len(sel)), "n_val": data["sizes"]["val"],
            "n_test": data["sizes"]["test"], "splits": splits.description, "best_epoch": info["best_epoch"],
            "best_val_auroc": info["best_val_auroc"], "epochs_run": info["epochs_run"],
        }  # fmt: skip
        if out is None:
            summary = {**extra, **summarise_classification(labels["test"], scores, classes, n_boot=n_boot)}
        else:
            summary = write_classification(out, f"{name}_{task}_{frac * 100:g}pct", labels["test"], scores, classes,
                                           ids=data["test_ids"], extra=extra, n_boot=n_boot, figure=figure)  # fmt: skip
        log.info("%s %s %g%%: test macro AUROC %.4f (train %d, best epoch %d)", name, task, frac * 100,
                 summary["macro_auroc"], len(sel), info["best_epoch"])  # fmt: skip
        results[f"{frac:g}"] = summary
        if save is not None and frac == max(fractions):
            meta = {"method": name, "task": task, "fraction": frac, "splits": splits.description,
                    "test_macro_auroc": summary["macro_auroc"], "n_train": int(len(sel))}  # fmt: skip
            _save_probe(save, model, head, data, info, meta)
    combined = {"method": name, "task": task, "splits": splits.description,
                "macro_auroc": {f: r["macro_auroc"] for f, r in results.items()}, "fractions": results}  # fmt: skip
    if out is not None:
        write_json(Path(out) / f"{name}_{task}.json", combined)
    return combined
