"""Model-side plumbing of the evaluations: eval mode, device, the model's input contract, and a
cache of ECG embeddings so that each record goes through the encoder once per evaluation run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from melp.data.datasets import SignalDataset, batches, check_input

__all__ = ["eval_mode", "pick_device", "model_normalize", "model_device", "FeatureBank", "progress"]


def progress(iterable, total: int | None = None, desc: str = "", unit: str = "it"):
    """A progress bar over ``iterable`` on an interactive terminal (tqdm; silent otherwise, e.g. in
    logs and tests). Long evaluation loops go through it."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, disable=None, dynamic_ncols=True)


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


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when available, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: Any) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device


def model_normalize(model: Any, normalize: str | None = None) -> str:
    """The normalisation to evaluate ``model`` with: the one it was trained with (its config's
    ``ecg.normalize``), unless ``normalize`` is given explicitly."""
    own = model.config["ecg"].get("normalize", "minmax")
    return own if normalize is None else normalize


class FeatureBank:
    """Lazily computed, cached ``model.embed`` outputs per store row (rhythm, probe; beats on request).

    Evaluations that share a model and a store (zero-shot on several tasks, probe, retrieval,
    patient identification) pass one bank around so that each record goes through the encoder
    once. Records are read through :class:`melp.data.datasets.SignalDataset` (the same items as
    training validation), with their valid length (padding mask). ``z_e`` (``model.encode_ecg``)
    equals the L2-normalised rhythm embedding.

    Args:
        normalize: None = the model's own normalisation (:func:`model_normalize`).
        leads: evaluate with only these leads (others masked as in training); None = all 12.
        window, padding_as_signal: see :class:`melp.data.datasets.SignalDataset`.
    """

    def __init__(
        self,
        model: Any,
        store: Any,
        batch_size: int = 128,
        normalize: str | None = None,
        keys: tuple[str, ...] = ("rhythm", "probe"),
        leads: list[str] | str | None = None,
        window: int | None = None,
        padding_as_signal: bool = False,
    ) -> None:
        check_input(store, model.config["ecg"])
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.store, self.batch_size, self.keys = model, store, batch_size, keys
        self.normalize = model_normalize(model, normalize)
        self.dataset = SignalDataset(store, normalize=self.normalize, leads=leads, window=window,
                                     padding_as_signal=padding_as_signal)  # fmt: skip
        self.leads = leads
        self._cache: dict[str, dict[int, np.ndarray]] = {k: {} for k in keys}

    def get(self, rows: np.ndarray, key: str) -> np.ndarray:
        """float32 (N, ...) embedding ``key`` of ``rows`` (in that order), computing the missing rows."""
        if key not in self._cache:
            raise KeyError(f"FeatureBank keeps {self.keys}, not {key!r}")
        cache = self._cache[key]
        todo = np.array([r for r in dict.fromkeys(int(r) for r in rows) if r not in cache], dtype=np.int64)
        if len(todo):
            device = model_device(self.model)
            with eval_mode(self.model):
                starts = range(0, len(todo), self.batch_size)
                for start in progress(starts, len(starts), "encode ECGs", "batch"):
                    part = todo[start : start + self.batch_size]
                    batch = next(batches(self.dataset, len(part), part))  # dataset position = manifest row
                    emb = self.model.embed(batch["ecg"].to(device), lengths=batch["length"].to(device))
                    for k in self.keys:
                        vals = emb[k].float().cpu().numpy()
                        if not np.isfinite(vals).all():
                            bad = part[~np.isfinite(vals.reshape(len(part), -1)).all(1)]
                            ids = self.store.manifest["id"].iloc[bad].astype(str).tolist()
                            raise ValueError(f"model gives non-finite {k} embeddings for records {ids[:5]}")
                        for r, v in zip(part, vals):
                            self._cache[k][int(r)] = v
        return np.stack([cache[int(r)] for r in rows]) if len(rows) else np.zeros((0,), np.float32)

    def z_e(self, rows: np.ndarray) -> np.ndarray:
        """Unit-norm ECG latents (N, D) = ``model.encode_ecg`` of ``rows``."""
        r = self.get(rows, "rhythm")
        return r / np.linalg.norm(r, axis=1, keepdims=True).clip(1e-12)

    def matches(self, normalize: str | None, leads) -> bool:
        """Whether this bank serves an evaluation asking for ``normalize`` and ``leads``."""
        return model_normalize(self.model, normalize) == self.normalize and leads == self.leads
