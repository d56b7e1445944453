"""Zero-shot classification with prompt ensembling.

A class embedding is the re-normalised mean of the text latents of all its phrasings
(prompt ensembling); an ECG's score for a class is the cosine between its ECG latent z_e and
that class embedding (spec §6: no temperature, no softmax).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from melp.eval.prompts import load_prompts, prompts_for

__all__ = ["build_classifier", "zero_shot_logits", "eval_mode", "zero_shot_scores", "run_zeroshot"]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode and under ``torch.no_grad`` for the block, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def build_classifier(
    model: Any,
    classes: list[str],
    prompts: dict[str, list[str]] | str | Path | None = None,
    *,
    batch_size: int = 256,
    task: str | None = None,
) -> torch.Tensor:
    """Zero-shot class embeddings from prompts.

    Args:
        model: a MELP model (uses ``model.encode_text(list[str]) -> (B, D)`` unit-norm).
        classes: K class codes, in the order of the label columns.
        prompts: ``{code: [phrasing, ...]}``, a path to such a JSON, or None for the shipped file.
        batch_size: phrasings encoded per call.
        task: optional task name; prompt keys ``"<task>:<code>"`` then override ``"<code>"``.
    Returns:
        (D, K) float tensor on the model's device; column k is the unit-norm mean of the
        text latents of class k's phrasings.
    """
    table = prompts if isinstance(prompts, dict) else load_prompts(prompts)
    phrasings = prompts_for(classes, table, task)
    flat = [p.lower() for group in phrasings for p in group]
    owner = torch.tensor([k for k, group in enumerate(phrasings) for _ in group])  # (P,)
    with eval_mode(model):
        latents = torch.cat(
            [model.encode_text(flat[i : i + batch_size]) for i in range(0, len(flat), batch_size)]
        ).float()  # (P, D)
    owner = owner.to(latents.device)
    sums = torch.zeros(len(classes), latents.shape[1], device=latents.device)
    sums.index_add_(0, owner, latents)  # (K, D)
    counts = torch.bincount(owner, minlength=len(classes)).clamp_min(1).unsqueeze(1)
    means = sums / counts
    return torch.nn.functional.normalize(means, dim=1).T.contiguous()  # (D, K)


def zero_shot_logits(model: Any, ecg: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Cosine scores (B, K) of ECGs (B, 12, T) against a (D, K) classifier from ``build_classifier``."""
    with eval_mode(model):
        z = model.encode_ecg(ecg).float()  # (B, D) unit norm
    return z @ classifier.to(z.device, z.dtype)  # (B, K)


def zero_shot_scores(
    model: Any,
    store: Any,
    task: str,
    rows: Any,
    prompts: dict[str, list[str]] | str | Path | None = None,
    batch_size: int = 128,
    normalize: str = "minmax",
    bank: Any = None,
) -> tuple[Any, Any, list[str], list[str]]:
    """Cosine scores of ``rows`` of ``store`` for ``task``.

    ``bank``: an optional :class:`melp.eval.common.FeatureBank` of this model and store (reuses
    ECG latents across tasks). Returns ``(y (N, K) float32, scores (N, K) float64, classes, ids)``.
    """
    from melp.eval.common import FeatureBank, check_compatible, label_matrix, resolve_task

    check_compatible(model, store)
    task = resolve_task(store, task)
    y, classes = label_matrix(store, task, rows)
    bank = bank or FeatureBank(model, store, batch_size, normalize)
    w = build_classifier(model, classes, prompts, task=task).cpu().double().numpy()  # (D, K)
    scores = bank.z_e(rows).astype("float64") @ w  # (N, K) cosines
    ids = store.manifest["id"].iloc[rows].astype(str).tolist()
    return y, scores, classes, ids


def run_zeroshot(
    model: Any,
    store: Any,
    task: str,
    rows: Any,
    out: str | Path | None = None,
    prompts: dict[str, list[str]] | str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 128,
    normalize: str = "minmax",
    figure: bool = True,
    name: str | None = None,
    bank: Any = None,
) -> dict[str, Any]:
    """Zero-shot evaluation of one task: metrics with bootstrap intervals; writes JSON/CSV/ROC to
    ``out`` (when given) as ``zeroshot_{task}.*``. Returns the summary dict (``macro_auroc`` ...)."""
    from melp.eval.common import resolve_task
    from melp.eval.results import summarise_classification, write_classification

    task = resolve_task(store, task)
    y, scores, classes, ids = zero_shot_scores(model, store, task, rows, prompts, batch_size, normalize, bank)
    extra = {"method": "zero-shot", "task": task, "store": str(store.path), "n_records": len(ids)}
    if out is None:
        return {**extra, **summarise_classification(y, scores, classes, n_boot=n_boot, seed=seed)}
    return write_classification(
        out,
        name or f"zeroshot_{task}",
        y,
        scores,
        classes,
        ids=ids,
        extra=extra,
        n_boot=n_boot,
        seed=seed,
        figure=figure,
    )
