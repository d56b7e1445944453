"""Convert released ECG encoders into melp model folders (safetensors + config, no pickle).

Two source families share one backbone, the fairseq-signals ``Wav2Vec2CMSCModel`` (conv stem,
LayerNorm, projection, weight-normed positional conv, post-LN transformer):

* ``melp-encoder``: the released MELP encoder (Hugging Face ``fuyingw/MELP_Encoder``, class
  ``MELPEncoderModel``): backbone keys ``ecg_encoder.ecg_encoder.*``, attentional poolers and their
  norms/projection at ``ecg_encoder.*``. Converted to an encoder-only melp model whose
  ``encode_ecg`` / ``embed`` reproduce the released forward (``data/golden`` checks it to 1e-4).
* ``ecg-fm``: an ECG-FM / fairseq-signals ``wav2vec2_cmsc`` pretraining checkpoint (backbone keys at
  the top level, no poolers): the backbone is converted, melp's poolers start from a seeded random
  init (a warm start for ``melp pretrain`` / ``melp finetune``, not a feature extractor as is).

Every source key is either mapped (shape checked against the melp model built from the config) or
dropped on purpose (:data:`DROPPED`, pretraining-only heads with the reason); any other key is an
error naming it. Weight-norm tensors are accepted under both names torch has used
(``parametrizations.weight.original0/1`` and the older ``weight_g/weight_v``).

Checkpoint files: ``.safetensors`` (preferred), or ``.pt``/``.pth``/``.ckpt``/``.bin`` read with
``torch.load(weights_only=True)`` only, which never runs code. fairseq checkpoints also pickle their
training config (argparse ``Namespace`` / omegaconf objects), which that loader refuses by design;
:class:`UnsafeCheckpoint` then explains the one-off conversion to safetensors (docs/model.md).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from melp.data.signal import CANONICAL_LEADS, canonical_lead_name

__all__ = [
    "DROPPED",
    "ECG_FM_LEADS",
    "ConversionReport",
    "UnsafeCheckpoint",
    "convert_melp_encoder",
    "convert_ecg_fm",
    "read_checkpoint",
    "parse_conv_layers",
]

MELP_BACKBONE = "ecg_encoder.ecg_encoder."
MELP_HEADS = "ecg_encoder."

DROPPED: dict[str, str] = {
    # backbone keys (after the backbone prefix)
    "mask_emb": "wav2vec 2.0 pretraining: the learned vector that replaces masked frames (mask=False at inference)",
    "quantizer.vars": "wav2vec 2.0 pretraining: Gumbel codebook of the quantised targets",
    "quantizer.weight_proj.weight": "wav2vec 2.0 pretraining: codebook logits of the quantiser",
    "quantizer.weight_proj.bias": "wav2vec 2.0 pretraining: codebook logits of the quantiser",
    "project_q.weight": "wav2vec 2.0 pretraining: projection of the quantised targets",
    "project_q.bias": "wav2vec 2.0 pretraining: projection of the quantised targets",
    "final_proj.weight": "wav2vec 2.0 pretraining: projection of the context vectors for the contrastive task",
    "final_proj.bias": "wav2vec 2.0 pretraining: projection of the context vectors for the contrastive task",
    # MELP head keys (after "ecg_encoder.")
    "logit_scale": "temperature of the encoder's own ECG-only contrastive stage; no output uses it "
    "(melp's CLIP temperature starts from logit_scale_init)",
    "bn.running_mean": "BatchNorm1d(768, affine=False) statistics of the ECG-only stage, never applied in the forward",
    "bn.running_var": "BatchNorm1d(768, affine=False) statistics of the ECG-only stage, never applied in the forward",
    "bn.num_batches_tracked": "BatchNorm1d(768, affine=False) counter of the ECG-only stage, never applied in the forward",
}
"""Source keys deliberately not converted, with the reason (none takes part in an output)."""

ECG_FM_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
"""Lead order of ECG-FM's inputs (its inference tutorial); melp permutes the first conv layer's input
channels so the converted model takes melp's canonical order."""

# released MELPEncoderConfig defaults (configuration_MELP_Encoder.py) and its backbone size table
MELP_ENCODER_DEFAULTS: dict[str, Any] = {
    "model_size": "small",
    "shared_emb_dim": 256,
    "embed_dim_caption": 768,
    "use_attentional_pool_contrast": True,
    "use_attentional_pool_caption": True,
    "n_queries_contrast": 14,
    "n_queries_caption": 128,
    "attn_pooler_heads": 8,
    "proj": "linear",
    "drop": 0.0,
    "proj_bias": False,
    "num_leads": 12,
}
MODEL_SIZES: dict[str, dict[str, int]] = {
    "small": {
        "encoder_embed_dim": 768,
        "encoder_attention_heads": 12,
        "encoder_layers": 8,
        "encoder_ffn_embed_dim": 3072,
    },
    "base": {
        "encoder_embed_dim": 768,
        "encoder_attention_heads": 12,
        "encoder_layers": 12,
        "encoder_ffn_embed_dim": 3072,
    },
    "large": {
        "encoder_embed_dim": 1024,
        "encoder_attention_heads": 16,
        "encoder_layers": 24,
        "encoder_ffn_embed_dim": 4096,
    },
}
# fairseq-signals ConvTransformerConfig defaults that shape the forward (or training)
BACKBONE_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default",
    "conv_feature_layers": "[(256, 2, 2)] * 4",
    "in_d": 12,
    "conv_bias": False,
    "feature_grad_mult": 1.0,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "layer_norm_first": False,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "dropout_input": 0.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "quantize_input": False,
}
# what MELP's ECGFMModel.init_ecg_encoder passes to the backbone besides the size table
MELP_BACKBONE_OVERRIDES: dict[str, Any] = {"dropout_input": 0.1, "feature_grad_mult": 0.1}
# backbone fields that only matter for wav2vec 2.0 / CMSC pretraining (not for any output)
PRETRAINING_FIELDS = {
    "apply_mask",
    "mask_prob",
    "mask_length",
    "mask_selection",
    "mask_other",
    "no_mask_overlap",
    "mask_min_space",
    "mask_channel_length",
    "mask_channel_prob",
    "mask_channel_selection",
    "mask_channel_other",
    "no_mask_channel_overlap",
    "mask_channel_min_space",
    "quantize_targets",
    "final_dim",
    "latent_vars",
    "latent_groups",
    "latent_dim",
    "latent_temp",
    "logit_temp",
    "same_quantizer",
    "target_glu",
    "num_negatives",
    "negatives_from_everywhere",
    "cross_sample_negatives",
    "codebook_negatives",
    "dropout_features",
    "encoder_layerdrop",
}


class UnsafeCheckpoint(RuntimeError):
    """A pickled checkpoint holds objects that ``torch.load(weights_only=True)`` refuses to build."""


@dataclass
class ConversionReport:
    """What a conversion did; written to ``conversion.json`` in the output folder."""

    family: str
    source: str
    source_sha256: str
    mapped: dict[str, str] = field(default_factory=dict)  # melp key -> source key
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    initialised: list[str] = field(default_factory=list)  # melp keys not in the source (seeded init)
    config_used: dict[str, Any] = field(default_factory=dict)
    config_ignored: dict[str, str] = field(default_factory=dict)  # field -> why it does not matter
    notes: list[str] = field(default_factory=list)
    melp_config: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- reading
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Tensors of a checkpoint and the file they came from.

    Args:
        path: a ``.safetensors`` file, a folder holding ``model.safetensors`` (a Hub snapshot), or a
            ``.pt``/``.pth``/``.ckpt``/``.bin`` file (read with ``weights_only=True``; a fairseq-style
            ``{"model": state_dict, ...}`` is unwrapped).

    Raises:
        FileNotFoundError: no such file, or a folder without ``model.safetensors``.
        UnsafeCheckpoint: the pickle holds non-tensor objects; the message gives the workaround.
        ValueError: the file holds no tensor dictionary.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: folder without model.safetensors (expected a Hub snapshot)")
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return load_file(str(path)), path
    if path.suffix not in (".pt", ".pth", ".ckpt", ".bin"):
        raise ValueError(f"{path}: unknown checkpoint type {path.suffix!r}; use .safetensors or .pt")
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        blocked = ""
        try:  # names the blocked classes without building them (zip checkpoints, torch >= 2.5)
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            blocked = f" ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})"
        except (AttributeError, ValueError, RuntimeError):
            pass
        raise UnsafeCheckpoint(
            f"{path}: the checkpoint pickles Python objects{blocked} besides its tensors (fairseq stores "
            "its training config this way); melp reads .pt files only with torch.load(weights_only=True), "
            "which never runs code, so it cannot read this one. If you trust the file, convert it once to "
            "safetensors in your own environment (docs/model.md, 'ECG-FM checkpoints': torch.load(..., "
            "weights_only=False) then safetensors.torch.save_file(ckpt['model'], 'model.safetensors')) and "
            "run melp convert on that file"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values())):
        raise ValueError(f"{path}: expected a dictionary of tensors (or {{'model': state_dict}})")
    return dict(obj), path


def _read_config(path: str | Path | None, src: Path) -> tuple[dict, str]:
    """The released config as a dict and where it came from (``{}`` when there is none)."""
    if path is None:
        folder = src if src.is_dir() else src.parent
        candidate = folder / "config.json"
        if src.is_dir() and candidate.is_file():
            path = candidate
        else:
            return {}, "defaults of the released code (no config given)"
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the config ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the config must be a JSON object")
    return raw, str(path)


# ---------------------------------------------------------------------------------------- config
_CONV_TERM = re.compile(r"^\s*(\[.*?\])\s*(?:\*\s*(\d+))?\s*$")


def parse_conv_layers(spec: str | list) -> list[list[int]]:
    """fairseq's ``conv_feature_layers`` (e.g. ``"[(256, 2, 2)] * 4"``, terms joined by ``+``) ->
    ``[[channels, kernel, stride], ...]``. Parsed as literals (never evaluated as code)."""
    if isinstance(spec, list):
        terms = [(spec, 1)]
    else:
        terms = []
        for part in str(spec).split("+"):
            m = _CONV_TERM.match(part)
            if not m:
                raise ValueError(
                    f"conv_feature_layers: cannot parse {spec!r} (expected '[(C, k, s), ...] * n')"
                )
            try:
                terms.append((ast.literal_eval(m.group(1)), int(m.group(2) or 1)))
            except (ValueError, SyntaxError):
                raise ValueError(f"conv_feature_layers: cannot parse {spec!r}") from None
    layers = []
    for items, times in terms:
        for item in list(items) * times:
            if not (
                isinstance(item, (list, tuple)) and len(item) == 3 and all(isinstance(v, int) for v in item)
            ):
                raise ValueError(f"conv_feature_layers: entry {item!r} is not (channels, kernel, stride)")
            layers.append([int(v) for v in item])
    if not layers:
        raise ValueError(f"conv_feature_layers: {spec!r} describes no layer")
    return layers


def _split_config(raw: dict, family: str) -> tuple[dict, dict, dict[str, str]]:
    """(MELPEncoderConfig fields, backbone fields, ignored top-level entries) of a released config.

    Accepted layouts: the Hub's flat ``config.json`` (MELPEncoderConfig fields plus transformers'
    bookkeeping), a nested object with ``MELPEncoderConfig`` / ``Wav2Vec2CMSCConfig`` sections (the
    golden's ``small_config``), or a fairseq model config (backbone fields, for ECG-FM)."""
    ignored: dict[str, str] = {}
    if "MELPEncoderConfig" in raw or "Wav2Vec2CMSCConfig" in raw:
        head = dict(raw.get("MELPEncoderConfig") or {})
        back = dict(raw.get("Wav2Vec2CMSCConfig") or {})
        for k in raw:
            if k not in ("MELPEncoderConfig", "Wav2Vec2CMSCConfig"):
                ignored[k] = "not a config section (documentation)"
        return head, back, ignored
    head, back = {}, {}
    for k, v in raw.items():
        if k in MELP_ENCODER_DEFAULTS:
            head[k] = v
        elif k in BACKBONE_DEFAULTS or k in PRETRAINING_FIELDS:
            back[k] = v
        else:
            ignored[k] = "not a field of the encoder architecture (bookkeeping)"
    if family == "ecg-fm" and head:
        raise ValueError(
            f"ecg-fm config has MELP head fields {sorted(head)}; use `melp convert melp-encoder`"
        )
    return head, back, ignored


def _backbone_config(back: dict, base: dict, report: ConversionReport) -> dict:
    """melp ``ecg`` section (architecture part) from fairseq backbone fields."""
    cfg = {**BACKBONE_DEFAULTS, **base, **back}
    for k in back:
        if k in PRETRAINING_FIELDS:
            report.config_ignored[k] = "wav2vec 2.0 / CMSC pretraining only"
        elif k not in BACKBONE_DEFAULTS:
            report.config_ignored[k] = "not used by the encoder forward"
    checks = {
        "extractor_mode": ("default", "only the 'default' stem (GroupNorm in the first block) is supported"),
        "conv_bias": (False, "the conv stem has no biases in melp"),
        "layer_norm_first": (False, "only post-LN layers (layer_norm_first=false) are supported"),
        "quantize_input": (False, "quantised inputs change the forward; not supported"),
    }
    for key, (want, why) in checks.items():
        if cfg[key] != want:
            raise ValueError(f"config field {key}={cfg[key]!r} cannot be converted: {why}")
    if float(cfg.get("encoder_layerdrop", 0.0) or 0.0) > 0:
        report.notes.append(
            f"encoder_layerdrop={cfg['encoder_layerdrop']} (training-time layer dropping) is not reproduced"
        )
    ecg = {
        "type": "wav2vec2",
        "in_leads": int(cfg["in_d"]),
        "conv_layers": parse_conv_layers(cfg["conv_feature_layers"]),
        "width": int(cfg["encoder_embed_dim"]),
        "layers": int(cfg["encoder_layers"]),
        "heads": int(cfg["encoder_attention_heads"]),
        "ffn": int(cfg["encoder_ffn_embed_dim"]),
        "pos_conv_kernel": int(cfg["conv_pos"]),
        "pos_conv_groups": int(cfg["conv_pos_groups"]),
        "dropout": float(cfg["dropout"]),
        "attention_dropout": float(cfg["attention_dropout"]),
        "activation_dropout": float(cfg["activation_dropout"]),
        "dropout_input": float(cfg["dropout_input"]),
        "conv_grad_scale": float(cfg["feature_grad_mult"]),
    }
    report.config_used.update({k: cfg[k] for k in BACKBONE_DEFAULTS if k in cfg})
    return ecg


def _heads_config(head: dict, report: ConversionReport) -> tuple[dict, dict, str]:
    """(melp ``heads`` section, top-level fields, model_size) from MELPEncoderConfig fields."""
    cfg = {**MELP_ENCODER_DEFAULTS, **head}
    for key in ("use_attentional_pool_contrast", "use_attentional_pool_caption"):
        if cfg[key] is not True:
            raise ValueError(
                f"config field {key}={cfg[key]!r}: only the attentional-pooler heads are supported (the "
                "released model uses them; the released code itself fails without the contrast pooler)"
            )
    if cfg["model_size"] not in MODEL_SIZES:
        raise ValueError(
            f"config field model_size={cfg['model_size']!r}: expected one of {sorted(MODEL_SIZES)}"
        )
    for key in ("proj", "drop", "proj_bias"):
        report.config_ignored[key] = (
            "only used without attentional pooling (an empty head in the released model)"
        )
    report.config_used.update({k: v for k, v in cfg.items() if k not in ("proj", "drop", "proj_bias")})
    heads = {
        "n_beat_queries": int(cfg["n_queries_contrast"]),
        "beat_heads": int(cfg["attn_pooler_heads"]),
        "n_caption_queries": int(cfg["n_queries_caption"]),
        "caption_heads": int(cfg["attn_pooler_heads"]),
        "caption_dim": int(cfg["embed_dim_caption"]),
    }
    return (
        heads,
        {"embed_dim": int(cfg["shared_emb_dim"]), "num_leads": int(cfg["num_leads"])},
        cfg["model_size"],
    )


# ---------------------------------------------------------------------------------------- keys
def _backbone_key(rel: str) -> tuple[str, str] | None:
    """(melp key below ``ecg_encoder.``, kind) for a backbone key relative to its prefix, else None."""
    rules = [
        (r"feature_extractor\.conv_layers\.(\d+)\.0\.weight", r"stem.blocks.\1.0.weight"),
        (r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"stem.blocks.0.1.\1"),
        (r"layer_norm\.(weight|bias)", r"feature_norm.\1"),
        (r"post_extract_proj\.(weight|bias)", r"input_proj.\1"),
        (r"conv_pos\.pos_conv\.0\.bias", r"pos_conv.conv.bias"),
        (
            r"conv_pos\.pos_conv\.0\.(?:parametrizations\.weight\.original0|weight_g)",
            r"pos_conv.conv.parametrizations.weight.original0",
        ),
        (
            r"conv_pos\.pos_conv\.0\.(?:parametrizations\.weight\.original1|weight_v)",
            r"pos_conv.conv.parametrizations.weight.original1",
        ),
        (r"encoder\.layer_norm\.(weight|bias)", r"norm.\1"),
        (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"layers.\1.attn.\2_proj.\3"),
        (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"layers.\1.norm1.\2"),
        (r"encoder\.layers\.(\d+)\.(fc1|fc2)\.(weight|bias)", r"layers.\1.\2.\3"),
        (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"layers.\1.norm2.\2"),
    ]
    for pattern, target in rules:
        m = re.fullmatch(pattern, rel)
        if m:
            return m.expand(target), "backbone"
    return None


_POOLERS = {"attn_pool_contrast": "beat_pooler", "attn_pool_caption": "caption_pooler"}


def _head_keys(rel: str) -> list[tuple[str, slice | None]] | None:
    """melp keys (with a row slice of the source tensor) for a MELP head key relative to
    ``ecg_encoder.``; None when it is not a head key. Packed ``in_proj_*`` tensors hold the q, k, v
    rows in that order; the slices are resolved by the caller (it knows the width)."""
    simple = {
        "ln_contrast.weight": "beat_norm.weight",
        "ln_contrast.bias": "beat_norm.bias",
        "proj_contrast": "beat_proj",
        "ln_caption.weight": "caption_norm.weight",
        "ln_caption.bias": "caption_norm.bias",
    }
    if rel in simple:
        return [(simple[rel], None)]
    m = re.fullmatch(r"(attn_pool_contrast|attn_pool_caption)\.(.+)", rel)
    if not m:
        return None
    ours, rest = _POOLERS[m.group(1)], m.group(2)
    direct = {
        "query": "query",
        "ln_q.weight": "ln_q.weight",
        "ln_q.bias": "ln_q.bias",
        "ln_k.weight": "ln_k.weight",
        "ln_k.bias": "ln_k.bias",
        "attn.out_proj.weight": "attn.out_proj.weight",
        "attn.out_proj.bias": "attn.out_proj.bias",
        "attn.q_proj_weight": "attn.q_proj.weight",
        "attn.k_proj_weight": "attn.k_proj.weight",
        "attn.v_proj_weight": "attn.v_proj.weight",
    }
    if rest in direct:
        return [(f"{ours}.{direct[rest]}", None)]
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = rest.rsplit("_", 1)[1]  # weight | bias
        return [(f"{ours}.attn.{p}_proj.{kind}", slice(i, i + 1)) for i, p in enumerate("qkv")]
    return None


def _lead_permutation(leads: tuple[str, ...] | list[str]) -> list[int]:
    """For each canonical lead, its channel in the source model's input order."""
    names = [canonical_lead_name(n) for n in leads]
    if None in names or sorted(names) != sorted(CANONICAL_LEADS):
        raise ValueError(f"leads must be the 12 standard leads once each, got {list(leads)!r}")
    return [names.index(n) for n in CANONICAL_LEADS]


def _convert_state(
    state: dict[str, torch.Tensor],
    backbone_prefix: str,
    heads_prefix: str | None,
    model: torch.nn.Module,
    report: ConversionReport,
    lead_perm: list[int] | None,
) -> dict[str, torch.Tensor]:
    """Map ``state`` onto ``model``'s keys (shape checked); records mapped/dropped keys in ``report``."""
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key in sorted(state):
        value = state[key]
        targets: list[tuple[str, slice | None]] | None = None
        if key.startswith(backbone_prefix):
            rel = key[len(backbone_prefix) :]
            if rel in DROPPED:
                report.dropped[key] = DROPPED[rel]
                continue
            hit = _backbone_key(rel)
            targets = [("ecg_encoder." + hit[0], None)] if hit else None
        elif heads_prefix is not None and key.startswith(heads_prefix):
            rel = key[len(heads_prefix) :]
            if rel in DROPPED:
                report.dropped[key] = DROPPED[rel]
                continue
            targets = _head_keys(rel)
        if targets is None:
            unknown.append(key)
            continue
        for ours, part in targets:
            if ours not in own:
                unknown.append(key)
                break
            tensor = value
            if part is not None:  # packed q/k/v rows: (3d, ...) -> the q, k or v block (d, ...)
                d = value.shape[0] // 3
                tensor = value[part.start * d : (part.start + 1) * d]
            if ours in out:
                raise ValueError(
                    f"{key}: melp key {ours} is filled twice (both weight-norm namings present?)"
                )
            if tuple(tensor.shape) != tuple(own[ours].shape):
                raise ValueError(
                    f"{key}: shape {tuple(tensor.shape)} does not fit melp's {ours} {tuple(own[ours].shape)}; "
                    "the config does not describe this checkpoint (pass the checkpoint's own config with --config)"
                )
            out[ours] = tensor
            report.mapped[ours] = key
    if unknown:
        raise ValueError(
            f"{len(unknown)} checkpoint key(s) neither converted nor known to be unused: {unknown[:8]}"
            f"{' ...' if len(unknown) > 8 else ''}; not a {report.family} checkpoint of a supported layout"
        )
    stem0 = "ecg_encoder.stem.blocks.0.0.weight"
    if lead_perm is not None and stem0 in out:  # (C, L, k): input channel i <- source channel perm[i]
        out[stem0] = out[stem0][:, lead_perm, :]
    proj_w, proj_b = "ecg_encoder.input_proj.weight", "ecg_encoder.input_proj.bias"
    if proj_w not in out and proj_w in own and own[proj_w].shape[0] == own[proj_w].shape[1]:
        # fairseq builds no post_extract_proj when the stem width equals the transformer width
        out[proj_w] = torch.eye(own[proj_w].shape[0])
        out[proj_b] = torch.zeros(own[proj_b].shape)
        report.notes.append(
            "no post_extract_proj in the checkpoint (stem width == width): identity projection"
        )
    return out


def _finish(
    model: torch.nn.Module,
    mapped: dict[str, torch.Tensor],
    report: ConversionReport,
    out: Path,
    dtype: torch.dtype,
) -> ConversionReport:
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    allowed = {"logit_scale"} if report.family == "melp-encoder" else None
    if allowed is not None and set(missing) - allowed:
        raise ValueError(
            f"the checkpoint lacks melp weights {sorted(set(missing) - allowed)[:8]} (truncated or another layout)"
        )
    report.initialised = missing
    new = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in own.items()}
    new.update({k: v.to(dtype) for k, v in mapped.items()})
    model.to(dtype)
    model.load_state_dict(new, strict=True)
    model.save_pretrained(out)
    (out / "conversion.json").write_text(json.dumps(asdict(report), indent=1) + "\n")
    return report


def _build(melp_config: dict, seed: int):
    from melp.models.melp import MELPModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MELPModel(melp_config)


def _check_input(sample_rate: float, n_samples: int) -> int | float:
    if not sample_rate > 0 or not n_samples > 0:
        raise ValueError(
            f"sample rate and length must be positive (got {sample_rate} Hz, {n_samples} samples)"
        )
    return int(sample_rate) if float(sample_rate).is_integer() else float(sample_rate)


def convert_melp_encoder(
    src: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    sample_rate: float = 500,
    n_samples: int = 5000,
    name: str = "melp-encoder",
    dtype: torch.dtype = torch.float32,
) -> ConversionReport:
    """Convert the released MELP encoder (``MELPEncoderModel`` layout) into an encoder-only melp model.

    Args:
        src: ``model.safetensors`` of the release, or a folder laid out like the Hub repository
            (``model.safetensors`` + ``config.json``).
        out: output model folder (``config.json``, ``model.safetensors``, ``conversion.json``).
        config: JSON with the released config's fields when ``src`` has none (flat MELPEncoderConfig
            fields, or ``MELPEncoderConfig`` / ``Wav2Vec2CMSCConfig`` sections).
        sample_rate, n_samples: the input the weights expect (the release: 500 Hz x 5000, 10 s).
        name: the melp model name stored in the config.
        dtype: floating dtype of the written weights (float32: an exact upcast of bf16 weights).

    The written model takes the canonical leads (MIMIC-IV-ECG order, as the release) with the
    paper's global per-record min-max normalisation; ``encode_ecg`` = the released zero-shot
    embedding (L2-normalised ``proj_ecg_emb``), ``embed()["probe"]`` = ``ext_ecg_emb``,
    ``embed()["beats"]`` = ``ecg_beat_emb``, ``caption_context(ecg_tokens(x))`` = ``ecg_token_emb``.
    """
    src = Path(src)
    state, weights = read_checkpoint(src)
    raw, cfg_source = _read_config(config, src)
    report = ConversionReport("melp-encoder", str(weights), _sha256(weights))
    report.notes.append(f"config: {cfg_source}")
    head, back, ignored = _split_config(raw, "melp-encoder")
    report.config_ignored.update(ignored)
    heads, top, size = _heads_config(head, report)
    base = {**MODEL_SIZES[size], **MELP_BACKBONE_OVERRIDES}
    ecg = _backbone_config(back, base, report)
    if top["num_leads"] != ecg["in_leads"]:
        raise ValueError(
            f"config: num_leads={top['num_leads']} but the backbone takes in_d={ecg['in_leads']}"
        )
    rate = _check_input(sample_rate, n_samples)
    ecg.update(sample_rate=rate, n_samples=int(n_samples), leads=list(CANONICAL_LEADS), normalize="minmax")
    melp_config = {"name": name, "embed_dim": top["embed_dim"], "ecg": ecg, "text": None, "heads": heads}
    model = _build(melp_config, seed=0)
    report.melp_config = model.config
    mapped = _convert_state(state, MELP_BACKBONE, MELP_HEADS, model, report, lead_perm=None)
    return _finish(model, mapped, report, Path(out), dtype)


def convert_ecg_fm(
    src: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    sample_rate: float = 500,
    n_samples: int = 2500,
    leads: tuple[str, ...] | list[str] = ECG_FM_LEADS,
    normalize: str = "zscore",
    heads: dict | None = None,
    embed_dim: int = 256,
    seed: int = 0,
    name: str = "ecg-fm-encoder",
    dtype: torch.dtype = torch.float32,
) -> ConversionReport:
    """Convert an ECG-FM / fairseq-signals ``wav2vec2_cmsc`` checkpoint's backbone into an
    encoder-only melp model whose poolers are freshly initialised (seeded by ``seed``).

    Args:
        src: ``.safetensors`` state dict (keys as in the fairseq checkpoint's ``model``), or a ``.pt``
            that ``torch.load(weights_only=True)`` can read (see :class:`UnsafeCheckpoint`).
        config: JSON of the checkpoint's model config (``cfg["model"]``); default: fairseq-signals'
            defaults (12 layers, 768 wide, 12 heads), which the shape check confirms or rejects.
        sample_rate, n_samples, normalize: the input ECG-FM was trained on (its tutorial: 500 Hz,
            5 s segments, standardised leads).
        leads: the checkpoint's input lead order; the first conv layer is permuted so the melp
            model takes the canonical order.
        heads, embed_dim: melp pooler settings (default: melp's own defaults, caption width = width).
    """
    src = Path(src)
    state, weights = read_checkpoint(src)
    raw, cfg_source = _read_config(config, src)
    report = ConversionReport("ecg-fm", str(weights), _sha256(weights))
    report.notes.append(f"config: {cfg_source}")
    _, back, ignored = _split_config(raw, "ecg-fm")
    report.config_ignored.update(ignored)
    ecg = _backbone_config(back, {}, report)
    if ecg["in_leads"] != 12:
        raise ValueError(f"config: in_d={ecg['in_leads']}; only 12-lead checkpoints are supported")
    rate = _check_input(sample_rate, n_samples)
    ecg.update(sample_rate=rate, n_samples=int(n_samples), leads=list(CANONICAL_LEADS), normalize=normalize)
    perm = _lead_permutation(leads)
    report.notes.append(
        f"source lead order {list(leads)} -> canonical {list(CANONICAL_LEADS)} (first conv permuted)"
    )
    prefix = ""
    anchor = [k for k in state if k.endswith("feature_extractor.conv_layers.0.0.weight")]
    if len(anchor) == 1:
        prefix = anchor[0][: -len("feature_extractor.conv_layers.0.0.weight")]
    heads_cfg = {"caption_dim": ecg["width"], **(heads or {})}
    melp_config = {"name": name, "embed_dim": embed_dim, "ecg": ecg, "text": None, "heads": heads_cfg}
    model = _build(melp_config, seed=seed)
    report.melp_config = model.config
    mapped = _convert_state(state, prefix, None, model, report, lead_perm=perm)
    missing_backbone = sorted(
        k for k in model.state_dict() if k.startswith("ecg_encoder.") and k not in mapped
    )
    if missing_backbone:
        raise ValueError(
            f"the checkpoint lacks backbone weights {missing_backbone[:8]} (truncated or another layout)"
        )
    return _finish(model, mapped, report, Path(out), dtype)
