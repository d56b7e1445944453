"""A store whose signals carry chosen vectors, and a model that reads them back as its embeddings.

With these, an evaluation's result can be computed by hand: record i's ECG latent is the vector
written into the first D samples of its lead I, and a report's text latent is looked up in a table.
The model asks for no normalisation (``ecg.normalize = "none"``), so the evaluation code must pass
the model's own normalisation through for the vectors to arrive unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from melp.data.signal import CANONICAL_LEADS
from melp.data.store import ECGStore, prepare

RATE, N_SAMPLES = 100, 200


def vector_store(
    root: Path,
    vectors: np.ndarray,
    reports: list[str] | None = None,
    patients: list[str] | None = None,
    labels: dict[str, list[int]] | None = None,
    split: list[str] | None = None,
) -> ECGStore:
    """Prepare a generic store whose record i holds ``vectors[i]`` (exact in float16) in the first
    samples of lead I (the other samples are small distinct values so no lead is flat)."""
    root.mkdir(parents=True, exist_ok=True)
    n, d = vectors.shape
    rows = []
    for i in range(n):
        x = np.tile(np.linspace(-1, 1, N_SAMPLES), (12, 1)) * (1 + np.arange(12)[:, None] / 16)
        x[0, :d] = vectors[i]
        np.save(root / f"r{i}.npy", x.astype(np.float32))
        row = {"file": f"r{i}.npy", "id": f"r{i}"}
        if reports is not None:
            row["report"] = reports[i]
        if patients is not None:
            row["patient"] = patients[i]
        if split is not None:
            row["split"] = split[i]
        for name, vals in (labels or {}).items():
            row[name] = vals[i]
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "records.csv", index=False)
    out = root.parent / f"{root.name}-store"
    prepare(
        "generic", root, out, rate=RATE, seconds=N_SAMPLES / RATE, progress=False, overwrite=True,
        leads=",".join(CANONICAL_LEADS), sample_rate=RATE, require_report=False,
    )  # fmt: skip
    return ECGStore(out)


class VectorModel(torch.nn.Module):
    """Embeddings = the first ``d`` samples of lead I; text latents from ``table`` (normalised)."""

    def __init__(self, d: int, table: dict[str, list[float]] | None = None):
        super().__init__()
        self.d, self.table = d, table or {}
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device
        self.config = {"ecg": {"sample_rate": RATE, "n_samples": N_SAMPLES, "normalize": "none"}}

    def embed(self, ecg: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        v = ecg[:, 0, : self.d].float()  # (B, d)
        return {"rhythm": v, "probe": v, "beats": v[:, None, :]}

    def encode_ecg(self, ecg: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return torch.nn.functional.normalize(self.embed(ecg)["rhythm"], dim=1)

    def encode_text(self, texts) -> torch.Tensor:
        return torch.nn.functional.normalize(
            torch.tensor([self.table[t] for t in texts], dtype=torch.float32), dim=1
        )
