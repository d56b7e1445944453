"""Zero-shot classification with prompt ensembling.

A class embedding is the re-normalised mean of the text latents of all its phrasings
(prompt ensembling); an ECG's score for a class is the cosine between its ECG latent z_e and
that class embedding (spec §6: no temperature, no softmax).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from melp.eval.features import eval_mode
from melp.eval.prompts import load_prompts, prompts_for

__all__ = ["build_classifier", "zero_shot_logits", "zero_shot_scores", "run_zeroshot", "require_text_tower"]


def require_text_tower(model: Any, what: str) -> None:
    """ValueError (one line) when ``model`` has no text tower, which ``what`` needs."""
    if getattr(model, "text", "") is None:  # an encoder-only model (no text tower)
        raise ValueError(
            f"{what} needs a text tower; this model is an ECG encoder only (use embed/probe/finetune)"
        )


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
    require_text_tower(model, "zero-shot classification")
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


def zero_shot_logits(
    model: Any, ecg: torch.Tensor, classifier: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Cosine scores (B, K) of ECGs (B, 12, T) (valid ``lengths`` (B,), None = all valid) against a
    (D, K) classifier from ``build_classifier``."""
    with eval_mode(model):
        z = model.encode_ecg(ecg, lengths=lengths).float()  # (B, D) unit norm
    return z @ classifier.to(z.device, z.dtype)  # (B, K)


def zero_shot_scores(
    model: Any,
    store: Any,
    task: str,
    rows: Any,
    prompts: dict[str, list[str]] | str | Path | None = None,
    batch_size: int = 128,
    normalize: str | None = None,
    bank: Any = None,
    leads: list[str] | str | None = None,
) -> tuple[Any, Any, list[str], list[str]]:
    """Cosine scores of the labelled records among ``rows`` of ``store`` for ``task``.

    Records are selected and labelled by :class:`melp.data.datasets.DownstreamDataset` (records
    not labelled for the task are left out, as in training validation). ``normalize``: None = the
    model's own. ``bank``: an optional :class:`melp.eval.features.FeatureBank` of this model and
    store (reuses ECG latents across tasks). ``leads``: only these leads (others masked).
    Returns ``(y (N, K) float32, scores (N, K) float64, classes, ids)``.
    """
    from melp.data.datasets import DownstreamDataset
    from melp.data.tasks import resolve_task
    from melp.eval.features import FeatureBank

    require_text_tower(model, "zero-shot classification")
    task = resolve_task(store, task)
    if bank is None or not bank.matches(normalize, leads):
        bank = FeatureBank(model, store, batch_size, normalize, leads=leads)
    ds = DownstreamDataset(store, task, rows, normalize=bank.normalize, leads=leads)
    if len(ds) == 0:
        raise ValueError(f"store {store.path}: none of the chosen records is labelled for task {task!r}")
    w = build_classifier(model, ds.classes, prompts, task=task).cpu().double().numpy()  # (D, K)
    scores = bank.z_e(ds.rows).astype("float64") @ w  # (N, K) cosines
    ids = store.manifest["id"].iloc[ds.rows].astype(str).tolist()
    return ds.label_matrix(), scores, ds.classes, ids


def run_zeroshot(
    model: Any,
    store: Any,
    task: str,
    rows: Any,
    out: str | Path | None = None,
    prompts: dict[str, list[str]] | str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 42,
    batch_size: int = 128,
    normalize: str | None = None,
    figure: bool = True,
    name: str | None = None,
    bank: Any = None,
    leads: list[str] | str | None = None,
) -> dict[str, Any]:
    """Zero-shot evaluation of one task: metrics with bootstrap intervals; writes JSON/CSV/ROC to
    ``out`` (when given) as ``zeroshot_{task}.*``. Returns the summary dict (``macro_auroc`` ...)."""
    from melp.data.tasks import resolve_task
    from melp.eval.results import summarise_classification, write_classification

    task = resolve_task(store, task)
    y, scores, classes, ids = zero_shot_scores(
        model, store, task, rows, prompts, batch_size, normalize, bank, leads=leads
    )
    extra = {"method": "zero-shot", "task": task, "store": str(store.path), "n_records": len(ids),
             "leads": leads if leads is None or isinstance(leads, str) else ",".join(leads)}  # fmt: skip
    if out is None:
        return {**extra, **summarise_classification(y, scores, classes, n_boot=n_boot, seed=seed)}
    return write_classification(
        out, name or f"zeroshot_{task}", y, scores, classes, ids=ids, extra=extra, n_boot=n_boot, seed=seed,
        figure=figure,
    )  # fmt: skip
