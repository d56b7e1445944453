"""The files of a saved MELP model folder: where it is, what it holds, how it is written.

Folder layout written by :func:`save_model`::

    config.json         the resolved MELP config, plus "melp_version" and "config_hash"
    model.safetensors   every parameter and persistent buffer; metadata: melp_version, config_hash
    text_config.json    the text tower's Hugging Face ``BertConfig``   (absent for encoder-only models)
    tokenizer/          the tokenizer (with ``[BOS]``)                  (absent for encoder-only models)

This module knows files, not the model class: :meth:`melp.models.melp.MELPModel.from_pretrained`
(= ``melp.load_model``) builds the model from what :func:`read_model_folder` returns.

Local paths and hub ids are told apart by :func:`resolve_model_dir`: a string that looks like a path
is never sent to the Hugging Face Hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melp.hub_ids import fetch_snapshot, looks_like_path

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TEXT_CONFIG = "text_config.json"
TOKENIZER_DIR = "tokenizer"
META_KEYS = ("melp_version", "config_hash")
"""Keys that ``config.json`` carries besides the model config (stripped before validation)."""

# the last path component of a file the user may have meant (never the suffix of a hub repo name)


def config_hash(config: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of a resolved model config (sorted keys, no spaces).

    Two folders with the same hash have the same architecture and input contract."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _version() -> str:
    from melp import __version__

    return __version__


def save_model(model: Any, directory: str | Path) -> Path:
    """Write ``model`` (a :class:`MELPModel`) to ``directory`` (created if needed); returns the folder.

    An encoder-only model (``config["text"] is None``) writes only ``config.json`` and
    ``model.safetensors``."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    digest = config_hash(model.config)
    meta = {"melp_version": _version(), "config_hash": digest}
    (out / CONFIG).write_text(json.dumps({**meta, **model.config}, indent=2) + "\n")
    if model.config["text"] is not None:
        model.text.bert.config.to_json_file(str(out / TEXT_CONFIG))
        model.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    else:  # a folder re-used for an encoder-only model keeps no stale text files
        (out / TEXT_CONFIG).unlink(missing_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(
        state, str(out / WEIGHTS), metadata={"format": "pt", "melp_name": str(model.config["name"]), **meta}
    )
    return out


def resolve_model_dir(
    path_or_id: str | os.PathLike, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The local folder of a saved model.

    Args:
        path_or_id: a model folder, a file inside it (``model.safetensors`` / ``config.json``), or a
            Hugging Face hub id ``owner/name``. Anything that looks like a path (exists, starts with
            ``.``/``/``/``~``, has more than one ``/``, ends with a file suffix, or whose first
            component is an existing folder) is treated as a path and never sent to the Hub.
        revision: hub branch, tag or commit (hub ids only).
        cache_dir: Hugging Face cache folder (hub ids only; default: the user's HF cache).

    Raises:
        FileNotFoundError: no such model folder, or the hub id is neither cached nor downloadable.
    """
    text = os.fspath(path_or_id)
    path = Path(text).expanduser()
    if path.is_file():
        if path.name not in (WEIGHTS, CONFIG):
            raise FileNotFoundError(
                f"{path}: not a model folder nor its {WEIGHTS} / {CONFIG}; pass the folder written by "
                "save_pretrained or `melp convert`"
            )
        return path.parent
    if path.is_dir():
        return path
    if isinstance(path_or_id, os.PathLike) or looks_like_path(text):
        raise FileNotFoundError(
            f"no such model folder: {text!r} (looked for {path.absolute()}); a model folder holds {CONFIG} "
            f"and {WEIGHTS} (written by save_pretrained or `melp convert`). A Hugging Face hub id is "
            "'owner/name'"
        )
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"revision must be a string, got {type(revision).__name__}")
    return fetch_snapshot(text, revision=revision, cache_dir=cache_dir)


@dataclass
class ModelFiles:
    """What a model folder holds (see the module docstring)."""

    root: Path
    config: dict  # the model config (``META_KEYS`` removed)
    meta: dict  # melp_version / config_hash of config.json and of the weights' metadata
    state: dict  # name -> tensor, as stored
    text_config: Path | None
    tokenizer: Path | None


def read_model_folder(root: Path) -> ModelFiles:
    """Read the files of the model folder ``root`` (see :func:`resolve_model_dir`).

    Raises:
        FileNotFoundError: a required file is missing (naming it).
        ValueError: ``config.json`` is not valid JSON.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    for name in (CONFIG, WEIGHTS):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root}: missing {name}; a model folder is written by model.save_pretrained(dir) "
                "or `melp convert`"
            )
    try:
        raw = json.loads((root / CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{root / CONFIG}: invalid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{root / CONFIG}: expected a JSON object")
    meta = {k: raw.pop(k) for k in META_KEYS if k in raw}
    with safe_open(str(root / WEIGHTS), "pt") as f:
        stored = f.metadata() or {}
    meta.update({f"weights_{k}": stored[k] for k in META_KEYS if k in stored})
    text_config = tokenizer = None
    if raw.get("text", {}) is not None:
        for name in (TEXT_CONFIG, TOKENIZER_DIR):
            if not (root / name).exists():
                raise FileNotFoundError(
                    f"{root}: missing {name} (the model has a text tower); re-save it with "
                    "model.save_pretrained(dir)"
                )
        text_config, tokenizer = root / TEXT_CONFIG, root / TOKENIZER_DIR
    return ModelFiles(root, raw, meta, load_file(str(root / WEIGHTS)), text_config, tokenizer)


def check_config_hash(files: ModelFiles) -> None:
    """Warn when ``config.json`` is not the config the weights were saved with (the file was edited
    after saving); the architecture itself is checked key by key when the weights load."""
    saved = files.meta.get("weights_config_hash")
    now = config_hash(files.config)
    if saved is not None and saved != now:
        log.warning(
            "%s: config.json differs from the config the weights were saved with (hash %s... vs %s...); "
            "it was edited after saving",
            files.root,
            now[:12],
            saved[:12],
        )
