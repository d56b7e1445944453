"""Full fine-tuning: the ECG encoder is unfrozen and trained with the probe's linear head.

Same head, loss, metrics and model selection as the linear probe (BCE, early stopping on the
val macro AUROC of sigmoid scores, best epoch evaluated on test), but the features are recomputed
every step through ``model.embed(x)["probe"]`` and the encoder gets a lower learning rate than the
head (default 1e-4 vs 1e-3). The caller's model is not modified (a copy is trained).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melp.data.datasets import DownstreamDataset, batches
from melp.eval.early_stopping import EarlyStopping
from melp.eval.features import eval_mode, model_device, model_normalize, progress
from melp.eval.metrics import macro_auroc
from melp.eval.outputs import write_json
from melp.eval.probe import fraction_rows
from melp.eval.splits import Splits

log = logging.getLogger(__name__)

__all__ = ["FinetuneConfig", "finetune", "run_finetune"]


@dataclass
class FinetuneConfig:
    """Fine-tuning settings (``normalize`` None = the model's own normalisation)."""

    lr_head: float = 1e-3
    lr_encoder: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 20
    batch_size: int = 64
    patience: int = 3
    seed: int = 42
    normalize: str | None = None


class _Classifier(torch.nn.Module):
    def __init__(self, model: Any, n_classes: int) -> None:
        super().__init__()
        self.model = model
        ecg = model.config["ecg"]
        probe = torch.zeros(1, int(ecg["in_leads"]), int(ecg["n_samples"]), device=model_device(model))
        with eval_mode(model):
            dim = int(model.embed(probe)["probe"].shape[1])
        self.head = torch.nn.Linear(dim, n_classes)

    def forward(self, ecg: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.model.embed(ecg, lengths=lengths)["probe"])  # (B, K) logits


def _scores(clf: _Classifier, ds: DownstreamDataset, cfg: FinetuneConfig) -> np.ndarray:
    """Sigmoid scores (N, K) of every record of ``ds``, in order."""
    clf.eval()
    device = model_device(clf.model)
    out = []
    with torch.no_grad():
        for batch in batches(ds, cfg.batch_size * 2):
            out.append(torch.sigmoid(clf(batch["ecg"].to(device), batch["length"].to(device))).double().cpu())
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

    ``classifier(ecg (B, 12, T), lengths (B,)) -> logits (B, K)``; ``info`` holds ``best_epoch``,
    ``best_val_auroc``, ``history``. Records not labelled for the task are left out.
    """
    cfg = config or FinetuneConfig()
    torch.manual_seed(cfg.seed)
    norm = model_normalize(model, cfg.normalize)
    train = DownstreamDataset(store, task, train_rows, normalize=norm)
    val = DownstreamDataset(store, task, val_rows, normalize=norm)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"store {store.path}: no labelled training or validation record for task {task!r}")
    device = model_device(model)
    clf = _Classifier(copy.deepcopy(model), len(train.classes)).to(device)
    head_params = list(clf.head.parameters())
    enc_params = [p for p in clf.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": head_params, "lr": cfg.lr_head}, {"params": enc_params, "lr": cfg.lr_encoder}],
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(cfg.seed)
    y_val = val.label_matrix()
    stopper = EarlyStopping(cfg.patience)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        clf.train()
        total, seen = 0.0, 0
        n_batches = -(-len(train) // cfg.batch_size)
        for batch in progress(batches(train, cfg.batch_size, rng.permutation(len(train))), n_batches,
                              f"finetune epoch {epoch}/{cfg.epochs}", "batch"):  # fmt: skip
            logits = clf(batch["ecg"].to(device), batch["length"].to(device))
            loss = loss_fn(logits, batch["labels"].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch["id"])
            seen += len(batch["id"])
        sched.step()
        auc = macro_auroc(y_val, _scores(clf, val, cfg))
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_macro_auroc": auc})
        log.info("finetune epoch %d: loss %.4f, val macro AUROC %.4f", epoch, total / max(seen, 1), auc)
        if stopper.step(epoch, auc, clf.state_dict()):
            break
    clf.load_state_dict(stopper.best_state)
    clf.eval()
    return clf, {
        "best_epoch": stopper.best_epoch,
        "best_val_auroc": stopper.best_score,
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
    from melp.data.datasets import check_input
    from melp.data.tasks import resolve_task
    from melp.eval.results import summarise_classification, write_classification

    check_input(store, model.config["ecg"])
    task = resolve_task(store, task)
    cfg = config or FinetuneConfig()
    norm = model_normalize(model, cfg.normalize)
    train = DownstreamDataset(store, task, splits.train, normalize=norm)
    test = DownstreamDataset(store, task, splits.test, normalize=norm)
    if len(test) == 0:
        raise ValueError(f"store {store.path}: no test record is labelled for task {task!r}")
    y_test, classes = test.label_matrix(), test.classes
    ids = store.manifest["id"].iloc[test.rows].astype(str).tolist()
    results: dict[str, Any] = {}
    for frac in fractions:
        sel = train.rows[fraction_rows(train.label_matrix(), frac, cfg.seed)]
        clf, info = finetune(model, store, task, sel, splits.val, cfg)
        scores = _scores(clf, test, cfg)
        extra = {"method": name, "task": task, "fraction": frac, "n_train": int(len(sel)),
                 "splits": splits.description, "best_epoch": info["best_epoch"],
                 "best_val_auroc": info["best_val_auroc"], "epochs_run": info["epochs_run"]}  # fmt: skip
        if out is None:
            summary = {**extra, **summarise_classification(y_test, scores, classes, n_boot=n_boot)}
        else:
            summary = write_classification(out, f"{name}_{task}_{frac * 100:g}pct", y_test, scores, classes,
                                           ids=ids, extra=extra, n_boot=n_boot, figure=figure)  # fmt: skip
        results[f"{frac:g}"] = summary
        if save is not None and frac == max(fractions):
            from melp.eval.classifier import save_classifier

            val = DownstreamDataset(store, task, splits.val, normalize=norm)
            meta = {**extra, "test_macro_auroc": summary["macro_auroc"]}
            save_classifier(
                save,
                clf.model,
                clf.head.weight,
                clf.head.bias,
                classes,
                val.label_matrix(),
                _scores(clf, val, cfg),
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
