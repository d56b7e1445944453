"""Named architectures (``models/configs/*.json``) and the model factory.

``create_model("melp-tiny")`` builds a model from a registered config; pretrained text weights
are loaded only when the config or the ``text_model`` argument names a checkpoint
(``text.from_config`` is null), and only from local files (a folder, ``"minilm"``, or the Hugging
Face cache) unless ``download=True``. ``MELPModel(config)`` itself never loads weights.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from melp.models.config import merge, resolve_config
from melp.models.melp import MELPModel

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


def create_model(name: str | Path | dict, text_model: str | None = None, download: bool = False, **overrides):
    """Build a MELP model (random ECG side; the text tower from its checkpoint when one is named).

    Args:
        name: registered name (see :func:`list_models`), JSON path, or config dict.
        text_model: HF checkpoint (folder, hub id or ``"minilm"``) whose weights initialise the
            text tower; overrides ``text.name_or_path`` and clears ``text.from_config``.
        download: allow fetching a text tower named by a hub id that is not in the local Hugging Face
            cache. Default False: a missing checkpoint fails at once, naming ``melp download ID``.
        **overrides: nested config overrides, e.g. ``ecg={"layers": 2}``.

    Returns:
        :class:`melp.models.melp.MELPModel` in train mode. Load a saved model with
        :func:`melp.load_model` (= ``MELPModel.from_pretrained``).
    """
    from melp.hub_ids import fetch_snapshot, looks_like_path
    from melp.text.encoder import load_bert
    from melp.text.tokenizer import load_tokenizer, resolve_text_path

    if text_model is not None:
        overrides = merge(overrides, {"text": {"name_or_path": str(text_model)}})
    cfg = get_config(name, **overrides)
    if cfg["text"] is None:
        if text_model is not None:
            raise ValueError(f"{cfg['name']}: text_model given for an encoder-only config (text: null)")
        return MELPModel(cfg)
    if text_model is not None:
        cfg["text"]["from_config"] = None
    tcfg = cfg["text"]
    source = resolve_text_path(tcfg["name_or_path"])  # a local folder (incl. the HF cache) when there is one
    if download and not Path(source).exists() and not looks_like_path(source):
        source = str(fetch_snapshot(source))  # the explicit download; later loads find it in the cache
    tokenizer = load_tokenizer(source)  # a hub id that is not local fails here at once
    bert = None
    if tcfg["from_config"] is None:  # the config names a checkpoint: load its weights (offline)
        bert = load_bert(source, len(tokenizer), local_files_only=True)
    return MELPModel(cfg, tokenizer=tokenizer, text_model=bert)


def with_text_tower(
    encoder: MELPModel,
    name: str | Path | dict = "melp-tiny",
    text_model: str | None = None,
    download: bool = False,
    **overrides,
) -> MELPModel:
    """A full MELP model that starts from an encoder-only model's ECG side (e.g. a converted release).

    The ECG encoder, poolers, their norms, P and the logit scale (and the ``ecg`` / ``heads`` /
    ``embed_dim`` config) come from ``encoder``; the text side (``text``, ``decoder``,
    ``max_sentences``, the logit-scale bounds) from config ``name`` and ``text_model``, built as
    :func:`create_model` does (pretrained text weights when a checkpoint is named). ``overrides`` apply
    to the combined config (e.g. ``text={"freeze_layers": 6}``, ``ecg={"dropout": 0.0}``).

    Raises:
        ValueError: ``encoder`` has a text tower, or its weights do not fit the combined architecture
            (e.g. a caption pooler narrower than the text tower: it feeds the decoder).
    """
    if encoder.has_text:
        raise ValueError(f"{encoder.config['name']!r} already has a text tower; use it as it is")
    named = get_config(name)
    cfg = copy.deepcopy(encoder.config)
    for key in ("name", "max_sentences", "logit_scale_init", "logit_scale_max", "text", "decoder"):
        cfg[key] = named[key]
    cfg["heads"]["caption_dim"] = None  # the text width: the decoder reads the caption tokens
    model = create_model(merge(cfg, overrides), text_model=text_model, download=download)
    src, own = encoder.state_dict(), model.state_dict()
    for k, v in src.items():
        if k not in own:
            raise ValueError(
                f"encoder weight {k} has no place in the combined model (changed ecg/heads overrides?)"
            )
        if own[k].shape != v.shape:
            raise ValueError(
                f"encoder weight {k} is {tuple(v.shape)} but the combined model needs {tuple(own[k].shape)}: "
                f"the encoder's caption pooler is {encoder.caption_norm.normalized_shape[0]} wide and the text "
                f"tower {model.text.hidden_size}; pick a text tower of the caption pooler's width"
                if k.startswith(("caption_pooler.", "caption_norm."))
                else f"encoder weight {k} is {tuple(v.shape)} but the combined model needs {tuple(own[k].shape)}"
            )
    model.load_state_dict({**own, **src}, strict=True)
    return model


load_model = MELPModel.from_pretrained
"""Load a saved model: the same function as :meth:`melp.models.melp.MELPModel.from_pretrained`
(a folder, its ``model.safetensors``, or a hub id ``owner/name``)."""
