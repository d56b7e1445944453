"""MELP model configuration: defaults, deep merge of overrides, strict validation.

A config is a plain nested dict (JSON-serialisable). Sections and keys (defaults = the paper):

* top level: ``name``, ``embed_dim`` (D of the shared space, 256), ``max_sentences`` (M, sentence
  slots per report in the forward outputs), ``logit_scale_init`` (ln(1/0.07)), ``logit_scale_max``
  (ln 100).
* ``ecg``: ``type`` (``wav2vec2`` | ``resnet1d``) and the model's input contract: ``sample_rate``
  (Hz), ``n_samples`` (input length), ``in_leads``, ``leads`` (lead names in input order; null = the
  canonical 12, ``melp.data.signal.CANONICAL_LEADS``), ``normalize`` (``minmax`` | ``zscore``, the
  per-record normalisation the model was trained with); then the type's own keys (``ECG_DEFAULTS``).
* ``text``: ``name_or_path`` (HF folder / hub id / ``"minilm"``), ``from_config`` (``null`` = load
  the checkpoint's weights in ``create_model``; a dict of ``BertConfig`` overrides = random init),
  ``causal``, ``max_length`` (tokenizer length before dropping ``[CLS]``), ``freeze_layers``,
  ``freeze_embeddings``, ``padding`` (``longest`` | ``max_length``). ``"text": null`` makes an
  encoder-only model (no text tower, no ``decoder``): embeddings, probing and fine-tuning only, e.g.
  a converted released encoder.
* ``heads``: beat pooler queries/heads, caption pooler queries/heads and ``caption_dim`` (width of
  the caption pooler; null = the text tower's hidden size, which the decoder needs; required for an
  encoder-only model).
* ``decoder``: ``layers``, ``heads``, ``mlp_ratio`` (width = the text model's hidden size),
  ``sparse_logits`` (vocabulary projection only at non-pad targets), ``caption_vocab`` (null or
  the token ids of a compact caption output layer).

Unknown keys, wrong types and a wrong ``ecg.type`` raise ``ValueError`` naming the key.
"""

from __future__ import annotations

import copy
import math
from typing import Any

TOP_DEFAULTS: dict[str, Any] = {
    "name": "custom",
    "embed_dim": 256,
    "max_sentences": 20,
    "logit_scale_init": math.log(1 / 0.07),
    "logit_scale_max": math.log(100.0),
}

ECG_COMMON: dict[str, Any] = {
    "type": "wav2vec2",
    "sample_rate": 500,
    "n_samples": 5000,
    "in_leads": 12,
    "leads": None,  # null -> the canonical 12-lead order (resolved below)
    "normalize": "minmax",
}

NORMALIZE_MODES = ("minmax", "zscore")

ECG_DEFAULTS: dict[str, dict[str, Any]] = {
    "wav2vec2": {
        "conv_layers": [[256, 2, 2], [256, 2, 2], [256, 2, 2], [256, 2, 2]],
        "width": 768,
        "layers": 8,
        "heads": 12,
        "ffn": 3072,
        "pos_conv_kernel": 128,
        "pos_conv_groups": 16,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "dropout_input": 0.1,
        "conv_grad_scale": 0.1,
    },
    "resnet1d": {"channels": [64, 128, 256, 512], "blocks": [2, 2, 2, 2], "stem_kernel": 7},
}

TEXT_DEFAULTS: dict[str, Any] = {
    "name_or_path": "minilm",
    "from_config": None,
    "causal": True,
    "max_length": 128,
    "freeze_layers": 0,
    "freeze_embeddings": False,
    # "longest": pad each batch to its longest report (rounded up to a multiple of 8), far cheaper
    # for short machine statements; "max_length": always pad to max_length (static shapes).
    "padding": "longest",
}

HEADS_DEFAULTS: dict[str, Any] = {
    "n_beat_queries": 12,
    "beat_heads": 8,
    "n_caption_queries": 128,
    "caption_heads": 8,
    "caption_dim": None,  # null -> the text tower's hidden size
}

DECODER_DEFAULTS: dict[str, Any] = {
    "layers": 6,
    "heads": 8,
    "mlp_ratio": 4.0,
    # True: project to the vocabulary only at non-pad target positions (the only ones the loss
    # uses). Saves most of the V-sized matmul for short reports; costs one host sync on GPU.
    "sparse_logits": False,
    # null = predict over the whole tokenizer vocabulary (the paper). A list of token ids (set by
    # MELPModel.restrict_caption_vocab from the training reports) = a compact output layer over
    # those ids plus one "any other token" class; generation maps back to full ids.
    "caption_vocab": None,
}

SECTIONS = ("ecg", "text", "heads", "decoder")


def _check_keys(given: dict, allowed: dict, where: str, source: str) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)} (fix the config/override)"
        )


def _check_type(value: Any, default: Any, key: str, source: str) -> None:
    if key == "decoder.caption_vocab":
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"{source}: {key} must be null or a list of token ids, got {value!r}")
        return
    if default is None or value is None and key == "text.from_config":
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{source}: {key} must be {type(default).__name__}, got {value!r}")


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "from_config":
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` and fill in defaults; returns a new, complete config dict.

    Args:
        config: partial or complete nested config.
        source: where it came from (file name), used in error messages.
    """
    if not isinstance(config, dict):
        raise ValueError(f"{source}: a MELP config must be a JSON object, got {type(config).__name__}")
    _check_keys(config, {**TOP_DEFAULTS, **dict.fromkeys(SECTIONS)}, "the top level", source)
    out: dict[str, Any] = {}
    for k, d in TOP_DEFAULTS.items():
        out[k] = config.get(k, d)
        _check_type(out[k], d, k, source)
    for sec in SECTIONS:
        if config.get(sec) is not None and not isinstance(config[sec], dict):
            raise ValueError(f"{source}: section {sec!r} must be an object")
    ecg_in = dict(config.get("ecg") or {})
    etype = ecg_in.get("type", ECG_COMMON["type"])
    if etype not in ECG_DEFAULTS:
        raise ValueError(f"{source}: ecg.type={etype!r} unknown; choose one of {sorted(ECG_DEFAULTS)}")
    encoder_only = "text" in config and config["text"] is None
    if encoder_only and config.get("decoder") is not None:
        raise ValueError(
            f"{source}: a decoder section needs a text tower; set text to an object or remove decoder"
        )
    sections = {
        "ecg": {**ECG_COMMON, **ECG_DEFAULTS[etype]},
        "text": TEXT_DEFAULTS,
        "heads": HEADS_DEFAULTS,
        "decoder": DECODER_DEFAULTS,
    }
    for sec, defaults in sections.items():
        if encoder_only and sec in ("text", "decoder"):
            out[sec] = None
            continue
        given = dict(config.get(sec) or {})
        _check_keys(given, defaults, f"section {sec!r}", source)
        out[sec] = {}
        for k, d in defaults.items():
            out[sec][k] = copy.deepcopy(given.get(k, d))
            _check_type(out[sec][k], d, f"{sec}.{k}", source)
    _check_input_contract(out["ecg"], source)
    cap = out["heads"]["caption_dim"]
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0):
        raise ValueError(f"{source}: heads.caption_dim must be null or a positive integer, got {cap!r}")
    if encoder_only and cap is None:
        raise ValueError(
            f"{source}: an encoder-only model (text: null) needs heads.caption_dim (the caption pooler width)"
        )
    if etype == "wav2vec2":
        for layer in out["ecg"]["conv_layers"]:
            if not (isinstance(layer, list) and len(layer) == 3 and all(isinstance(v, int) for v in layer)):
                raise ValueError(
                    f"{source}: ecg.conv_layers entries must be [channels, kernel, stride], got {layer!r}"
                )
    for key in ("embed_dim", "max_sentences"):
        if out[key] <= 0:
            raise ValueError(f"{source}: {key} must be positive")
    if not encoder_only:
        fc = out["text"]["from_config"]
        if fc is not None and not isinstance(fc, dict):
            raise ValueError(f"{source}: text.from_config must be null or an object of BertConfig overrides")
        if out["text"]["max_length"] < 3:
            raise ValueError(f"{source}: text.max_length must be >= 3 ([BOS], a token, [SEP])")
    return out


def _check_input_contract(ecg: dict, source: str) -> None:
    """Validate (and complete in place) the input contract of the ``ecg`` section: rate, length,
    lead names and normalisation."""
    from melp.data.signal import CANONICAL_LEADS

    for key in ("sample_rate", "n_samples", "in_leads"):
        if ecg[key] <= 0:
            raise ValueError(f"{source}: ecg.{key} must be positive, got {ecg[key]!r}")
    if ecg["normalize"] not in NORMALIZE_MODES:
        raise ValueError(
            f"{source}: ecg.normalize must be one of {list(NORMALIZE_MODES)}, got {ecg['normalize']!r}"
        )
    leads = ecg["leads"]
    if leads is None:
        if ecg["in_leads"] != len(CANONICAL_LEADS):
            raise ValueError(
                f"{source}: a {ecg['in_leads']}-lead model must name its leads in ecg.leads "
                f"(a subset of {list(CANONICAL_LEADS)})"
            )
        ecg["leads"] = list(CANONICAL_LEADS)
        return
    if not (isinstance(leads, list) and all(isinstance(n, str) for n in leads)):
        raise ValueError(f"{source}: ecg.leads must be a list of lead names, got {leads!r}")
    if len(leads) != ecg["in_leads"]:
        raise ValueError(
            f"{source}: ecg.leads names {len(leads)} leads but ecg.in_leads is {ecg['in_leads']}"
        )
    # the stores hold the canonical order, so a model takes its leads in that order (a converter
    # permutes the first layer's input channels instead, see melp.models.convert)
    expected = [n for n in CANONICAL_LEADS if n in leads]
    if leads != expected:
        raise ValueError(
            f"{source}: ecg.leads must list canonical lead names in the canonical order "
            f"{list(CANONICAL_LEADS)}; got {leads!r} (expected {expected!r} for this subset)"
        )
