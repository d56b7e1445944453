"""Full fine-tuning: the ECG encoder is unfrozen and trained with the probe's linear head.

Same head, loss, metrics and model selection as the linear probe (BCE, early stopping on the
val macro AUROC of sigmoid scores, best epoch evaluated on test), but the features are recomputed
every step through ``model.embed(x)["probe"]`` and the encoder gets a lower learning rate than the
head (default 1e-4 vs 1e-3). The caller's model is not modified (a copy is trained).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melp.eval.common import Splits, check_compatible, ecg_batches, label_matrix, resolve_task, write_json
from melp.eval.metrics import macro_auroc
from melp.eval.probe import fraction_rows
from melp.eval.zeroshot import eval_mode

log = logging.getLogger(__name__)

__all__ = ["FinetuneConfig", "finetune", "run_finetune"]


@dataclass
class FinetuneConfig:
    """Fine-tuning settings."""

    lr_head: float = 1e-3
    lr_encoder: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 20
    batch_size: int = 64
    patience: int = 3
    seed: int = 42
    normalize: str = "minmax"


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


class _Classifier(torch.nn.Module):
    def __init__(self, model: Any, n_classes: int) -> None:
        super().__init__()
        self.model = model
        ecg = model.config["ecg"]
        probe = torch.zeros(1, int(ecg["in_leads"]), int(ecg["n_samples"]), device=_device(model))
        with eval_mode(model):
            dim = int(model.embed(probe)["probe"].shape[1])
        self.head = torch.nn.Linear(dim, n_classes)

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.embed(ecg)["probe"])  # (B, K) logits


def _scores(clf: _Classifier, store: Any, rows: np.ndarray, cfg: FinetuneConfig) -> np.ndarray:
    clf.eval()
    out = []
    with torch.no_grad():
        for batch in ecg_batches(store, rows, cfg.batch_size * 2, cfg.normalize):
            out.append(torch.sigmoid(clf(batch["ecg"].to(_device(clf.model)))).double().cpu())
    return torch.cat(out).numpy()


def finetune(
    model: Any,
    store: Any,
    task: str,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    config: FinetuneConfig | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune a copy of ``model`` with a linear head on ``task``; returns (classifier, info).

    ``classifier(ecg (B, 12, T)) -> logits (B, K)``; ``info`` holds ``best_epoch``, ``best_val_auroc``,
    ``history``.
    """
    cfg = config or FinetuneConfig()
    torch.manual_seed(cfg.seed)
    y_train, _ = label_matrix(store, task, train_rows)
    y_val, _ = label_matrix(store, task, val_rows)
    clf = _Classifier(copy.deepcopy(model), y_train.shape[1]).to(_device(model))
    head_params = list(clf.head.parameters())
    enc_params = [p for p in clf.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": head_params, "lr": cfg.lr_head}, {"params": enc_params, "lr": cfg.lr_encoder}],
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(cfg.seed)
    label_of = {int(r): y_train[i] for i, r in enumerate(train_rows)}
    best = (-math.inf, 0, copy.deepcopy(clf.state_dict()))
    history, bad = [], 0
    for epoch in range(1, cfg.epochs + 1):
        clf.train()
        order = rng.permutation(np.asarray(train_rows))
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            batch = next(ecg_batches(store, rows, len(rows), cfg.normalize))
            target = torch.from_numpy(np.stack([label_of[int(r)] for r in rows])).to(_device(clf.model))
            loss = loss_fn(clf(batch["ecg"].to(_device(clf.model))), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        sched.step()
        auc = macro_auroc(y_val, _scores(clf, store, val_rows, cfg))
        auc = -math.inf if math.isnan(auc) else auc
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_macro_auroc": auc})
        log.info("finetune epoch %d: loss %.4f, val macro AUROC %.4f", epoch, total / max(seen, 1), auc)
        if auc > best[0]:
            best, bad = (auc, epoch, copy.deepcopy(clf.state_dict())), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    clf.load_state_dict(best[2])
    clf.eval()
    return clf, {
        "best_epoch": best[1],
        "best_val_auroc": best[0],
        "epochs_run": len(history),
        "history": history,
    }


def run_finetune(
    model: Any,
    store: Any,
    task: str,
    splits: Splits,
    fractions: tuple[float, ...] = (1.0,),
    out: str | Path | None = None,
    config: FinetuneConfig | None = None,
    n_boot: int = 1000,
    figure: bool = True,
    name: str = "finetune",
    save: str | Path | None = None,
) -> dict[str, Any]:
    """Fine-tune for each label fraction and evaluate the best epoch on test (same outputs as the probe).

    ``name`` prefixes the written files and is the ``method`` field (e.g. ``finetune_random`` for
    a randomly initialised model). With ``save``, the classifier of the largest fraction (fine-tuned
    encoder, head, class names, thresholds at max F1 on the validation portion) is written there
    (:func:`melp.eval.classifier.save_classifier`)."""
    from melp.eval.results import summarise_classification, write_classification

    check_compatible(model, store)
    task = resolve_task(store, task)
    cfg = config or FinetuneConfig()
    y_train, classes = label_matrix(store, task, splits.train)
    y_test, _ = label_matrix(store, task, splits.test)
    ids = store.manifest["id"].iloc[splits.test].astype(str).tolist()
    results: dict[str, Any] = {}
    for frac in fractions:
        sel = splits.train[fraction_rows(y_train, frac, cfg.seed)]
        clf, info = finetune(model, store, task, sel, splits.val, cfg)
        scores = _scores(clf, store, splits.test, cfg)
        extra = {
            "method": name,
            "task": task,
            "fraction": frac,
            "n_train": int(len(sel)),
            "splits": splits.description,
            "best_epoch": info["best_epoch"],
            "best_val_auroc": info["best_val_auroc"],
            "epochs_run": info["epochs_run"],
        }
        if out is None:
            summary = {**extra, **summarise_classification(y_test, scores, classes, n_boot=n_boot)}
        else:
            summary = write_classification(
                out,
                f"{name}_{task}_{frac * 100:g}pct",
                y_test,
                scores,
                classes,
                ids=ids,
                extra=extra,
                n_boot=n_boot,
                figure=figure,
            )
        results[f"{frac:g}"] = summary
        if save is not None and frac == max(fractions):
            from melp.eval.classifier import save_classifier

            y_val, _ = label_matrix(store, task, splits.val)
            meta = {**extra, "test_macro_auroc": summary["macro_auroc"]}
            save_classifier(
                save,
                clf.model,
                clf.head.weight,
                clf.head.bias,
                classes,
                y_val,
                _scores(clf, store, splits.val, cfg),
                meta,
            )
    combined = {
        "method": name,
        "task": task,
        "splits": splits.description,
        "macro_auroc": {f: r["macro_auroc"] for f, r in results.items()},
        "fractions": results,
    }
    if out is not None:
        write_json(Path(out) / f"{name}_{task}.json", combined)
    return combined
