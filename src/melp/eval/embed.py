"""Export ECG embeddings of a store: rhythm (B, D), beats (B, Q, D), probe (B, D_probe), with ids.

Two file formats, both loadable without pickle:
* ``.parquet``: columns ``id``, ``rhythm`` (list<float32>), ``beats`` (list<float32>, the Q x D
  matrix flattened row-major; its shape is in the file metadata ``melp.beats_shape``), ``probe``.
* ``.npy``: one structured array with fields ``id`` (unicode), ``rhythm`` (f4, D),
  ``beats`` (f4, (Q, D)), ``probe`` (f4, D_probe).
``load_embeddings(path)`` reads either back into ``{"id": list, "rhythm": (N, D), ...}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melp.data.datasets import SignalDataset, batches, check_input
from melp.eval.features import eval_mode, model_device, model_normalize, progress

__all__ = ["embed_store", "check_embeddings_path", "save_embeddings", "load_embeddings"]

KEYS = ("rhythm", "beats", "probe")


def embed_store(
    model: Any,
    store: Any,
    rows: np.ndarray | None = None,
    batch_size: int = 128,
    normalize: str | None = None,
    leads: list[str] | str | None = None,
) -> dict[str, Any]:
    """Embeddings of ``rows`` (default: every record) in row order.

    Returns ``{"id": list[str], "rhythm": float32 (N, D), "beats": float32 (N, Q, D),
    "probe": float32 (N, D_probe)}`` from ``model.embed`` (rhythm = mean of beats after P, not
    normalised; see docs/evaluation.md for which embedding suits which use).
    """
    check_input(store, model.config["ecg"])
    ds = SignalDataset(store, rows, normalize=model_normalize(model, normalize), leads=leads)
    device = model_device(model)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in KEYS}
    ids: list[str] = []
    with eval_mode(model):
        for batch in progress(batches(ds, batch_size), -(-len(ds) // batch_size), "embed", "batch"):
            emb = model.embed(batch["ecg"].to(device), lengths=batch["length"].to(device))
            for k in KEYS:
                parts[k].append(emb[k].float().cpu())
            ids += batch["id"]
    return {"id": ids, **{k: torch.cat(v).numpy() for k, v in parts.items()}}


def check_embeddings_path(path: str | Path) -> Path:
    """``path`` if its suffix is one :func:`save_embeddings` writes (.parquet, .npy), else ValueError
    (checked before any embedding is computed)."""
    path = Path(path)
    if path.suffix not in (".parquet", ".npy"):
        raise ValueError(f"embedding file {path}: use a .parquet or .npy suffix (e.g. --out emb.parquet)")
    return path


def save_embeddings(emb: dict[str, Any], path: str | Path) -> Path:
    """Write ``embed_store`` output to ``.parquet`` or ``.npy`` (chosen by the suffix)."""
    path = check_embeddings_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(emb["id"])
    if path.suffix == ".npy":
        id_len = max([len(i) for i in emb["id"]] + [1])
        dtype = [("id", f"<U{id_len}")] + [(k, "<f4", emb[k].shape[1:]) for k in KEYS]
        arr = np.zeros(n, dtype=dtype)
        arr["id"] = emb["id"]
        for k in KEYS:
            arr[k] = emb[k]
        np.save(path, arr, allow_pickle=False)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {"id": pa.array(emb["id"], pa.string())}
        for k in KEYS:
            flat = emb[k].reshape(n, -1).astype(np.float32)  # (N, prod(shape[1:]))
            cols[k] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
        shapes = {k: list(emb[k].shape[1:]) for k in KEYS}
        table = pa.table(cols).replace_schema_metadata(
            {"melp.shapes": json.dumps(shapes), "melp.beats_shape": json.dumps(shapes["beats"])}
        )
        pq.write_table(table, path)
    else:
        raise ValueError(f"embedding file {path}: use a .parquet or .npy suffix")
    return path


def load_embeddings(path: str | Path) -> dict[str, Any]:
    """Read a file written by ``save_embeddings`` back into the ``embed_store`` dict."""
    path = Path(path)
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        return {"id": arr["id"].tolist(), **{k: np.ascontiguousarray(arr[k]) for k in KEYS}}
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    shapes = json.loads(table.schema.metadata[b"melp.shapes"])
    n = table.num_rows
    out: dict[str, Any] = {"id": table.column("id").to_pylist()}
    for k in KEYS:
        flat = table.column(k).combine_chunks().flatten().to_numpy()
        out[k] = flat.reshape([n, *shapes[k]]).astype(np.float32)
    return out
