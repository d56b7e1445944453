"""MELP model configuration: typed sections, deep merge of overrides, strict validation.

A model config is a plain nested dict (JSON-serialisable; ``model.config``), checked by the same
typed-dataclass mechanism as the training config (:mod:`melp.config`): an unknown key or a value of
the wrong type raises :class:`melp.config.ConfigError` (a ``ValueError``) naming the dotted key.
Sections and keys (defaults = the paper):

* top level (:class:`ModelConfig`): ``name``, ``embed_dim`` (D of the shared space, 256),
  ``max_sentences`` (M, sentence slots per report in the forward outputs), ``logit_scale_init``
  (ln(1/0.07)), ``logit_scale_max`` (ln 100).
* ``ecg``: the encoder's own dataclass (registry: :mod:`melp.models.encoders`), whose common part
  is the model's input contract: ``type``, ``sample_rate`` (Hz), ``n_samples`` (input length),
  ``in_leads``, ``leads`` (lead names in input order; null = the canonical 12,
  ``melp.data.signal.CANONICAL_LEADS``), ``normalize`` (``minmax`` | ``zscore``, the per-record
  normalisation the model was trained with); then the encoder's keys.
* ``text`` (:class:`TextConfig`): ``name_or_path`` (HF folder / hub id / ``"minilm"``),
  ``from_config`` (null = load the checkpoint's weights in ``create_model``; a dict of ``BertConfig``
  overrides = random init), ``causal``, ``max_length`` (tokenizer length before dropping ``[CLS]``),
  ``freeze_layers``, ``freeze_embeddings``, ``padding`` (``longest`` | ``max_length``).
  ``"text": null`` makes an encoder-only model (no text tower, no ``decoder``): embeddings, probing
  and fine-tuning only, e.g. a converted released encoder.
* ``heads`` (:class:`HeadsConfig`): beat pooler queries/heads, caption pooler queries/heads and
  ``caption_dim`` (width of the caption pooler; null = the text tower's hidden size, which the
  decoder needs; required for an encoder-only model).
* ``decoder`` (:class:`DecoderConfig`): ``layers``, ``heads``, ``mlp_ratio`` (width = the text
  model's hidden size), ``sparse_logits`` (vocabulary projection only at non-pad targets),
  ``caption_vocab`` (null or the token ids of a compact caption output layer).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from melp.config import ConfigError, build
from melp.config import merge as _merge
from melp.models.encoders import encoder_spec

__all__ = [
    "ModelConfig",
    "TextConfig",
    "HeadsConfig",
    "DecoderConfig",
    "NORMALIZE_MODES",
    "resolve_config",
    "merge",
]

NORMALIZE_MODES = ("minmax", "zscore")


@dataclass
class TextConfig:
    """The text tower."""

    name_or_path: str = "minilm"
    from_config: dict[str, Any] | None = None
    causal: bool = True
    max_length: int = 128
    freeze_layers: int = 0
    freeze_embeddings: bool = False
    # "longest": pad each batch to its longest report (rounded up to a multiple of 8), far cheaper
    # for short machine statements; "max_length": always pad to max_length (static shapes).
    padding: str = "longest"


@dataclass
class HeadsConfig:
    """The attentional poolers (beat and caption)."""

    n_beat_queries: int = 12
    beat_heads: int = 8
    n_caption_queries: int = 128
    caption_heads: int = 8
    caption_dim: int | None = None  # null -> the text tower's hidden size


@dataclass
class DecoderConfig:
    """The caption decoder."""

    layers: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    # True: project to the vocabulary only at non-pad target positions (the only ones the loss uses).
    sparse_logits: bool = False
    # null = predict over the whole tokenizer vocabulary (the paper). A list of token ids (set by
    # MELPModel.restrict_caption_vocab from the training reports) = a compact output layer over
    # those ids plus one "any other token" class; generation maps back to full ids.
    caption_vocab: list[int] | None = None


@dataclass
class ModelConfig:
    """A whole MELP architecture (``ecg`` is validated by its encoder's own dataclass)."""

    name: str = "custom"
    embed_dim: int = 256
    max_sentences: int = 20
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)
    ecg: dict[str, Any] = field(default_factory=dict)
    text: TextConfig | None = field(default_factory=TextConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    decoder: DecoderConfig | None = field(default_factory=DecoderConfig)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (dicts merge, everything else replaces;
    ``text.from_config`` is replaced as a whole)."""
    return _merge(base, override, replace=("from_config",))


def resolve_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` and fill in defaults; returns a new, complete config dict.

    Args:
        config: partial or complete nested config.
        source: where it came from (file name), used in error messages.
    Raises:
        ConfigError (a ValueError) naming the key, what was expected and the value found.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: a MELP config must be a JSON object, got {type(config).__name__}")
    for sec in ("ecg", "heads"):
        if config.get(sec) is not None and not isinstance(config[sec], dict):
            raise ConfigError(f"{source}: section {sec!r} must be an object")
    encoder_only = "text" in config and config["text"] is None
    if encoder_only and config.get("decoder") is not None:
        raise ConfigError(
            f"{source}: a decoder section needs a text tower; set text to an object or remove decoder"
        )
    ecg_in = dict(config.get("ecg") or {})
    try:
        spec = encoder_spec(ecg_in.get("type", "wav2vec2"))
        top = build(ModelConfig, {k: v for k, v in config.items() if k != "ecg"})
        ecg = dataclasses.asdict(build(spec.config, ecg_in, "ecg"))
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    out = dataclasses.asdict(top)
    out["ecg"] = {**ecg, "type": spec.name}
    if encoder_only:
        out["text"] = out["decoder"] = None
    _check_values(out, source)
    if spec.check is not None:
        spec.check(out["ecg"], source)
    _check_input_contract(out["ecg"], source)
    return out


def _check_values(out: dict, source: str) -> None:
    """Range checks the types alone do not give."""

    def positive(where: str, value) -> None:
        if value is None or value <= 0:
            raise ConfigError(f"{source}: {where} must be positive, got {value!r}")

    for key in ("embed_dim", "max_sentences"):
        positive(key, out[key])
    heads = out["heads"]
    for key in ("n_beat_queries", "beat_heads", "n_caption_queries", "caption_heads"):
        positive(f"heads.{key}", heads[key])
    if heads["caption_dim"] is not None:
        positive("heads.caption_dim", heads["caption_dim"])
    if out["text"] is None:
        if heads["caption_dim"] is None:
            raise ConfigError(
                f"{source}: an encoder-only model (text: null) needs heads.caption_dim (the caption pooler width)"
            )
        return
    text = out["text"]
    if text["max_length"] < 3:
        raise ConfigError(f"{source}: text.max_length must be >= 3 ([BOS], a token, [SEP])")
    if text["padding"] not in ("longest", "max_length"):
        raise ConfigError(
            f"{source}: text.padding must be 'longest' or 'max_length', got {text['padding']!r}"
        )
    if text["freeze_layers"] < 0:
        raise ConfigError(f"{source}: text.freeze_layers must be >= 0")
    for key in ("layers", "heads"):
        positive(f"decoder.{key}", out["decoder"][key])
    positive("decoder.mlp_ratio", out["decoder"]["mlp_ratio"])


def _check_input_contract(ecg: dict, source: str) -> None:
    """Validate (and complete in place) the input contract of the ``ecg`` section: rate, length,
    lead names and normalisation."""
    from melp.data.signal import CANONICAL_LEADS

    for key in ("sample_rate", "n_samples", "in_leads"):
        if ecg[key] <= 0:
            raise ConfigError(f"{source}: ecg.{key} must be positive, got {ecg[key]!r}")
    if ecg["normalize"] not in NORMALIZE_MODES:
        raise ConfigError(
            f"{source}: ecg.normalize must be one of {list(NORMALIZE_MODES)}, got {ecg['normalize']!r}"
        )
    leads = ecg["leads"]
    if leads is None:
        if ecg["in_leads"] != len(CANONICAL_LEADS):
            raise ConfigError(
                f"{source}: a {ecg['in_leads']}-lead model must name its leads in ecg.leads "
                f"(a subset of {list(CANONICAL_LEADS)})"
            )
        ecg["leads"] = list(CANONICAL_LEADS)
        return
    if len(leads) != ecg["in_leads"]:
        raise ConfigError(
            f"{source}: ecg.leads names {len(leads)} leads but ecg.in_leads is {ecg['in_leads']}"
        )
    # the stores hold the canonical order, so a model takes its leads in that order (a converter
    # permutes the first layer's input channels instead, see melp.models.convert)
    expected = [n for n in CANONICAL_LEADS if n in leads]
    if leads != expected:
        raise ConfigError(
            f"{source}: ecg.leads must list canonical lead names in the canonical order "
            f"{list(CANONICAL_LEADS)}; got {leads!r} (expected {expected!r} for this subset)"
        )
