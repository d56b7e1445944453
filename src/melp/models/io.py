"""Saving and loading a complete MELP model as one folder (no pickle).

Folder layout written by :func:`save_model`::

    config.json         the resolved MELP config
    model.safetensors   every parameter and persistent buffer
    text_config.json    the text tower's Hugging Face ``BertConfig``
    tokenizer/          the tokenizer (with ``[BOS]``)

:func:`load_model` rebuilds the model from these files only (offline); a hub id is first fetched
with ``huggingface_hub.snapshot_download``. Missing or unexpected weights raise an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TEXT_CONFIG = "text_config.json"
TOKENIZER_DIR = "tokenizer"


def save_model(model, directory: str | Path) -> None:
    """Write ``model`` (a :class:`MELPModel`) to ``directory`` (created if needed)."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG).write_text(json.dumps(model.config, indent=2) + "\n")
    model.text.bert.config.to_json_file(str(out / TEXT_CONFIG))
    model.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt", "melp_name": str(model.config["name"])})


def _local_dir(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).startswith((".", "/")) or str(name_or_path).count("/") != 1:
        raise FileNotFoundError(f"{name_or_path}: not a MELP model folder (expected {CONFIG} and {WEIGHTS})")
    from huggingface_hub import snapshot_download  # only when the user named a hub id

    return Path(snapshot_download(repo_id=str(name_or_path)))


def load_model(name_or_path: str | Path):
    """Load a model saved by :func:`save_model` from a folder or a Hugging Face hub id.

    Raises:
        FileNotFoundError: a required file is missing.
        RuntimeError: the weights do not match the architecture (missing/unexpected keys, shapes).
    """
    from safetensors.torch import load_file
    from transformers import BertConfig

    from melp.models.melp import MELPModel
    from melp.text.encoder import build_bert
    from melp.text.tokenizer import load_tokenizer

    root = _local_dir(name_or_path)
    for name in (CONFIG, WEIGHTS, TEXT_CONFIG, TOKENIZER_DIR):
        if not (root / name).exists():
            raise FileNotFoundError(f"{root}: missing {name}; save the model with model.save_pretrained(dir)")
    config = json.loads((root / CONFIG).read_text())
    tokenizer = load_tokenizer(root / TOKENIZER_DIR)
    bert = build_bert(BertConfig.from_json_file(str(root / TEXT_CONFIG)))
    model = MELPModel(config, tokenizer=tokenizer, text_model=bert)
    state = load_file(str(root / WEIGHTS))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad_shape:
        raise RuntimeError(
            f"{root / WEIGHTS} does not match the architecture in {root / CONFIG}: "
            f"missing={missing[:10]} unexpected={unexpected[:10]} wrong_shape={bad_shape[:10]} "
            "(re-save the model with the current melp version)"
        )
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    model.to(floats[0] if floats else torch.float32)  # saved precision (integer buffers keep theirs)
    model.load_state_dict(state, strict=True)
    return model.eval()
