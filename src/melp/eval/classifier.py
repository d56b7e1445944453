"""A trained classifier you can keep and use: encoder + linear head + class names + thresholds.

``melp probe --save DIR`` / ``melp finetune --save DIR`` write, and ``melp predict --model DIR``
reads, a folder::

    config.json, model.safetensors   the encoder-only model (melp.load_model reads it)
    head.safetensors                 weight (K, D), bias (K,), feat_mean (D,), feat_std (D,)
    classifier.json                  task, classes, thresholds, how they were chosen, metrics

Scores are ``sigmoid(head((embed(x)["probe"] - feat_mean) / feat_std))`` (the probe standardises
its features with the training portion's statistics; fine-tuning does not: mean 0, std 1). Each
class's threshold maximises F1 on the **validation portion** the run used for early stopping
(never the test portion); a class without a positive there has no threshold (``null``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["Classifier", "save_classifier", "load_classifier", "predict_store", "read_record"]

CLASSIFIER = "classifier.json"
HEAD = "head.safetensors"


@dataclass
class Classifier:
    """An encoder-only model plus a linear head over its probe embedding."""

    model: Any  # MELPModel (encoder-only), eval mode
    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor  # (K,)
    feat_mean: torch.Tensor  # (D,)
    feat_std: torch.Tensor  # (D,)
    classes: list[str]
    thresholds: list[float | None]
    info: dict[str, Any]

    @torch.no_grad()
    def scores(self, ecg: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Per-class probabilities (B, K) for model input ``ecg`` (B, L, T) with valid ``lengths`` (B,)
        (see ``model.preprocess``)."""
        self.model.eval()
        feats = self.model.embed(ecg, lengths=lengths)["probe"].float().cpu()  # (B, D)
        z = (feats - self.feat_mean) / self.feat_std
        return torch.sigmoid(z @ self.weight.T + self.bias)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Decisions (N, K) float: 1/0 at the saved thresholds, NaN for classes without one."""
        thr = np.array([np.nan if t is None else t for t in self.thresholds], dtype=np.float64)
        out = (probs >= thr).astype(np.float64)
        out[:, np.isnan(thr)] = np.nan
        return out


def save_classifier(
    directory: str | Path,
    model: Any,
    weight: torch.Tensor,
    bias: torch.Tensor,
    classes: list[str],
    val_labels: np.ndarray,
    val_scores: np.ndarray,
    info: dict[str, Any],
    feat_mean: torch.Tensor | None = None,
    feat_std: torch.Tensor | None = None,
) -> Path:
    """Write a classifier folder (see the module docstring); returns it.

    Args:
        model: the (fine-tuned) MELP model; its encoder-only copy is saved.
        weight, bias: the linear head (K, D), (K,).
        classes: the K class names (store order).
        val_labels, val_scores: (M, K) labels and sigmoid scores of the validation portion; each
            class's threshold is the one with the highest F1 there.
        info: run description stored in ``classifier.json`` (task, method, metrics, splits ...).
        feat_mean, feat_std: feature standardisation (D,) (default: none, 0 and 1).
    """
    from safetensors.torch import save_file

    from melp import __version__
    from melp.eval.metrics import max_f1_per_class

    out = Path(directory)
    enc = model.encoder_only() if model.has_text else model
    enc.save_pretrained(out)
    d = weight.shape[1]
    tensors = {
        "weight": weight.detach().float().cpu().contiguous(),
        "bias": bias.detach().float().cpu().contiguous(),
        "feat_mean": (torch.zeros(d) if feat_mean is None else feat_mean.detach().float().cpu()).contiguous(),
        "feat_std": (torch.ones(d) if feat_std is None else feat_std.detach().float().cpu()).contiguous(),
    }
    save_file(tensors, str(out / HEAD))
    f1, thr, _ = max_f1_per_class(val_labels, val_scores)
    meta = {
        **info,
        "classes": list(classes),
        "thresholds": [None if not np.isfinite(t) else float(t) for t in thr],
        "val_f1_at_threshold": [None if not np.isfinite(v) else float(v) for v in f1],
        "threshold_rule": "per class, the score threshold with the highest F1 on the validation portion "
        f"({len(val_labels)} records; the early-stopping portion, never the test portion)",
        "feature": "embed(x)['probe']",
        "melp_version": __version__,
    }
    (out / CLASSIFIER).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def load_classifier(directory: str | Path, device: str | None = None) -> Classifier:
    """Read a folder written by :func:`save_classifier`.

    Raises:
        FileNotFoundError: not a classifier folder (no ``classifier.json`` / ``head.safetensors``).
        ValueError: the head does not fit the encoder or the class list.
    """
    from safetensors.torch import load_file

    import melp

    root = Path(directory)
    root = root.parent if root.is_file() else root  # the folder or a file in it (model.safetensors)
    for name in (CLASSIFIER, HEAD):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root}: missing {name}; a classifier folder is written by `melp probe --save DIR` or "
                "`melp finetune --save DIR`"
            )
    meta = json.loads((root / CLASSIFIER).read_text())
    head = load_file(str(root / HEAD))
    model = melp.load_model(root, device=device, dtype=torch.float32)
    classes = list(meta["classes"])
    w = head["weight"]
    if w.shape[0] != len(classes) or len(meta["thresholds"]) != len(classes):
        raise ValueError(f"{root}: the head has {w.shape[0]} outputs but {len(classes)} classes are listed")
    return Classifier(
        model, w, head["bias"], head["feat_mean"], head["feat_std"], classes, list(meta["thresholds"]), meta
    )


def predict_store(
    clf: Classifier, store: Any, rows: np.ndarray, batch_size: int = 128, leads: list[str] | None = None
):
    """Probabilities and decisions for store ``rows`` -> DataFrame ``id, p_<class>..., pred_<class>...``
    (the model's own normalisation; the store must match its rate and length). ``leads``: only these
    leads (the others masked as random lead masking does in training)."""
    from melp.data.datasets import SignalDataset, batches, check_input
    from melp.eval.features import progress

    check_input(store, clf.model.config["ecg"])
    device = clf.model.device
    ds = SignalDataset(store, rows, normalize=clf.model.config["ecg"]["normalize"], leads=leads)
    ids, probs = [], []
    for batch in progress(batches(ds, batch_size), -(-len(ds) // batch_size), "predict", "batch"):
        probs.append(clf.scores(batch["ecg"].to(device), batch["length"].to(device)).numpy())
        ids += batch["id"]
    p = np.concatenate(probs) if probs else np.zeros((0, len(clf.classes)))
    return _frame(ids, p, clf)


def _frame(ids: list[str], probs: np.ndarray, clf: Classifier):
    import pandas as pd

    frame = pd.DataFrame({"id": ids})
    decisions = clf.decide(probs)
    for k, c in enumerate(clf.classes):
        frame[f"p_{c}"] = probs[:, k]
    for k, c in enumerate(clf.classes):
        frame[f"pred_{c}"] = pd.array(
            [None if np.isnan(v) else int(v) for v in decisions[:, k]], dtype="Int64"
        )
    return frame


def read_record(path: str | Path, leads: list[str] | None = None, rate: float | None = None):
    """One raw record as ``melp.data.readers.base.Signal`` (data (L, T) in mV, lead names, rate).

    ``path``: a WFDB record (``rec``, ``rec.hea``, ``rec.dat`` or ``rec.mat``) or a NumPy ``.npy``
    (L, T) array with a ``.json`` sidecar ``{"leads": [...], "rate": Hz}`` or ``leads``/``rate``.

    Raises:
        FileNotFoundError: no such record; ValueError: unreadable (the reader's reason).
    """
    from melp.data.readers.base import BadRecord
    from melp.data.readers.generic import read_npy, read_wfdb

    p = Path(path)
    try:
        if p.suffix == ".npy":
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such file")
            return read_npy(p, leads, rate)
        stem = p.with_suffix("") if p.suffix in (".hea", ".dat", ".mat") else p
        if not stem.with_suffix(".hea").is_file():
            raise FileNotFoundError(f"{stem}.hea: no such WFDB header (pass a record path or a .npy file)")
        return read_wfdb(stem)
    except BadRecord as err:
        raise ValueError(f"{p}: {err}") from None


def predict_record(
    clf: Classifier,
    path: str | Path,
    leads: list[str] | None = None,
    rate: float | None = None,
    use_leads: list[str] | None = None,
):
    """Probabilities and decisions of one raw record (any lead order and rate) -> one-row DataFrame.

    The record goes through ``clf.model.preprocess`` (reorder, resample, crop/pad, normalise); its
    valid length reaches the model (padding mask). ``leads``/``rate``: for a ``.npy`` without sidecar.
    ``use_leads``: only these leads of the record (the others fed as 0 mV before normalisation, as
    random lead masking does in training)."""
    from melp.data.datasets import leads_kept
    from melp.data.signal import CANONICAL_LEADS, canonical_lead_name

    sig = read_record(path, leads, rate)
    data, names = sig.data, sig.leads
    if use_leads is not None:
        keep = leads_kept(use_leads)
        wanted = {n for n, k in zip(CANONICAL_LEADS, keep.tolist()) if k}
        rows = [i for i, n in enumerate(names) if canonical_lead_name(n) in wanted]
        data, names = data[rows], [names[i] for i in rows]
    ecg, valid = clf.model.preprocess(data, sig.rate, names, missing="zero" if use_leads else "error")
    lengths = torch.tensor([valid], device=clf.model.device)
    probs = clf.scores(ecg[None].to(clf.model.device), lengths).numpy()  # (1, K)
    p = Path(path)
    return _frame([p.stem if p.suffix in (".npy", ".hea", ".dat", ".mat") else p.name], probs, clf)
