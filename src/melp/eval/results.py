"""Write the outputs of a classification evaluation: JSON summary, per-class CSV, scores, ROC figure."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melp.eval.metrics import bootstrap_metrics, classification_metrics
from melp.eval.outputs import write_json

log = logging.getLogger(__name__)

__all__ = ["summarise_classification", "write_classification"]


def summarise_classification(
    y: np.ndarray, scores: np.ndarray, classes: list[str], n_boot: int = 1000, seed: int = 42
) -> dict[str, Any]:
    """Point metrics (``classification_metrics``) plus bootstrap 95 % intervals.

    Returns a dict with top-level ``macro_auroc``, ``macro_f1``, ``macro_accuracy``, ``n``,
    ``ci`` ({metric: {mean, lo, hi}}) and ``per_class`` ({class: {auroc, auroc_lo, auroc_hi, f1,
    f1_lo, f1_hi, threshold, accuracy, accuracy_lo, accuracy_hi, n_pos}}).
    """
    res = classification_metrics(y, scores, classes)
    if n_boot > 0:
        boot = bootstrap_metrics(y, scores, n_boot=n_boot, seed=seed)
        res["ci"] = {m: boot[f"macro_{m}"] for m in ("auroc", "f1", "accuracy")}
        res["ci"]["n_boot"], res["ci"]["seed"] = n_boot, seed
        for k, name in enumerate(classes):
            for m in ("auroc", "f1", "accuracy"):
                res["per_class"][name][f"{m}_lo"] = float(boot[f"per_class_{m}"]["lo"][k])
                res["per_class"][name][f"{m}_hi"] = float(boot[f"per_class_{m}"]["hi"][k])
    return res


def write_classification(
    out: str | Path,
    name: str,
    y: np.ndarray,
    scores: np.ndarray,
    classes: list[str],
    ids: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    n_boot: int = 1000,
    seed: int = 42,
    figure: bool = True,
    figure_formats: tuple[str, ...] = ("png",),
) -> dict[str, Any]:
    """Compute metrics and write ``OUT/{name}.json``, ``{name}_per_class.csv``, ``{name}_scores.csv``
    and ``{name}_roc.png``. Returns the summary dict (also the JSON content)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = summarise_classification(y, scores, classes, n_boot=n_boot, seed=seed)
    summary = {**(extra or {}), **res}
    write_json(out / f"{name}.json", summary)
    table = pd.DataFrame.from_dict(res["per_class"], orient="index")
    table.index.name = "class"
    table.to_csv(out / f"{name}_per_class.csv", float_format="%.4f")
    frame = pd.DataFrame(scores, columns=[f"score_{c}" for c in classes])
    for k, c in enumerate(classes):
        frame[f"label_{c}"] = y[:, k].astype(int)
    if ids is not None:
        frame.insert(0, "id", ids)
    # exact round trip (9 significant digits for float32, 17 for float64): metrics recomputed from the
    # CSV equal the JSON's, with no ties created by rounding
    digits = 9 if np.asarray(scores).dtype == np.float32 else 17
    frame.to_csv(out / f"{name}_scores.csv", index=False, float_format=f"%.{digits}g")
    if figure:
        from melp.eval.figures import roc_figure

        title = f"{name}: macro AUROC {res['macro_auroc']:.3f}"
        roc_figure(y, scores, classes, out / f"{name}_roc.png", title=title, n_boot=min(n_boot, 200),
                   formats=figure_formats)  # fmt: skip
    log.info("%s: macro AUROC %.4f (n=%d) -> %s", name, res["macro_auroc"], res["n"], out / f"{name}.json")
    return summary
