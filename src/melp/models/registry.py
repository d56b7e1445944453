"""Named architectures (``models/configs/*.json``) and the model factory.

``create_model("melp-tiny")`` builds a model from a registered config; pretrained text weights
are loaded (``from_pretrained``) only when the config or the ``text_model`` argument names a
checkpoint (``text.from_config`` is null). ``MELPModel(config)`` itself never loads weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from melp.models.config import merge, resolve_config

CONFIG_DIR = Path(__file__).parent / "configs"


def list_models() -> list[str]:
    """Names of the registered architectures."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_config(name: str | Path | dict, **overrides) -> dict:
    """Resolved config for a registered name, a JSON file path or a dict, with nested overrides.

    Example: ``get_config("melp-small", ecg={"layers": 2}, text={"max_length": 32})``. Nested dicts
    merge key by key, except ``text.from_config``, which is replaced as a whole.
    """
    if isinstance(name, dict):
        raw, source = name, "config dict"
    else:
        path = CONFIG_DIR / f"{name}.json" if (CONFIG_DIR / f"{name}.json").is_file() else Path(name)
        if not path.is_file():
            raise ValueError(f"unknown model {name!r}: not a registered name {list_models()} nor a JSON file")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON ({err})") from err
        source = str(path)
    return resolve_config(merge(raw, overrides), source)


def create_model(
    name: str | Path | dict, text_model: str | None = None, pretrained: str | Path | None = None, **overrides
):
    """Build a MELP model.

    Args:
        name: registered name (see :func:`list_models`), JSON path, or config dict.
        text_model: HF checkpoint (folder, hub id or ``"minilm"``) whose weights initialise the
            text tower; overrides ``text.name_or_path`` and clears ``text.from_config``.
        pretrained: a folder / hub id saved with ``save_pretrained``; returns that model as saved
            (``name`` is not used; overrides and ``text_model`` are not allowed).
        **overrides: nested config overrides, e.g. ``ecg={"layers": 2}``.

    Returns:
        :class:`melp.models.melp.MELPModel` in train mode (eval mode when ``pretrained``).
    """
    from melp.models.io import load_model
    from melp.models.melp import MELPModel
    from melp.text.encoder import load_bert
    from melp.text.tokenizer import load_tokenizer, resolve_text_path

    if pretrained is not None:
        if overrides or text_model is not None:
            raise ValueError("create_model: pretrained= cannot be combined with overrides or text_model")
        return load_model(pretrained)
    if text_model is not None:
        overrides = merge(overrides, {"text": {"name_or_path": str(text_model)}})
    cfg = get_config(name, **overrides)
    if text_model is not None:
        cfg["text"]["from_config"] = None
    tcfg = cfg["text"]
    tokenizer = load_tokenizer(tcfg["name_or_path"], local_files_only=False)
    bert = None
    if tcfg["from_config"] is None:  # the config names a checkpoint: load its weights
        bert = load_bert(resolve_text_path(tcfg["name_or_path"]), len(tokenizer))
    return MELPModel(cfg, tokenizer=tokenizer, text_model=bert)


def load_model(name_or_path: str | Path):
    """Load a saved model folder or hub id (see :mod:`melp.models.io`)."""
    from melp.models.io import load_model as _load

    return _load(name_or_path)
