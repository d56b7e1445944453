"""The assembled MELP model: ECG tower + poolers, causal text tower, caption decoder.

Dimensions: ``B`` batch, ``L`` leads, ``T`` samples, ``N`` ECG tokens, ``C`` ECG width,
``S`` text positions, ``H`` text width, ``D`` shared embedding width, ``Q`` beat queries,
``M`` sentence slots, ``V`` vocabulary.

Which embedding for which use (see also docs/model.md):

* ``encode_ecg`` / ``embed()["rhythm"]`` normalised -> zero-shot classification and retrieval
  (cosine with ``encode_text``), the CLIP space.
* ``embed()["beats"]`` (B, Q, D) -> beat-level analysis, sentence/beat attention.
* ``embed()["probe"]`` (B, D) -> linear probing (pre-P, un-normalised; spec §3.4 / D21).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from melp.models import io
from melp.models.config import resolve_config
from melp.models.decoder import CaptionDecoder
from melp.models.encoders import build_encoder
from melp.models.poolers import AttentionalPooler
from melp.models.sentences import pool_sentences, sentence_index
from melp.text.encoder import TextTower, build_bert
from melp.text.tokenizer import (
    bos_id,
    load_tokenizer,
    resolve_text_path,
    sentence_separator_id,
    special_token_table,
    tokenize_reports,
)


def text_hf_config(text_cfg: dict, tokenizer):
    """``BertConfig`` for a randomly initialised text tower (no network).

    Base = the ``config.json`` of ``text.name_or_path`` when it is a local folder, else BERT-base
    defaults; then ``text.from_config`` overrides; vocabulary size and pad id from the tokenizer.
    """
    from transformers import BertConfig

    path = Path(resolve_text_path(text_cfg["name_or_path"]))
    base = BertConfig.from_pretrained(str(path)) if (path / "config.json").is_file() else BertConfig()
    cfg = base.to_dict()
    cfg.update(text_cfg.get("from_config") or {})
    cfg.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    for k in ("architectures", "model_type", "transformers_version"):
        cfg.pop(k, None)
    return BertConfig(**cfg)


_HASH = ((1_000_003, 2_147_483_647), (999_983, 2_147_483_629))  # (base, prime modulus < 2^31)


def report_hash_weights(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(2, length) int64 table ``base^t mod p`` of the two report hashes (see :func:`report_ids`)."""
    rows = [[pow(base, t, mod) for t in range(length)] for base, mod in _HASH]
    return torch.tensor(rows, dtype=torch.long, device=device)


def report_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) int64 id of each report's real tokens (equal reports -> equal ids, whatever the batch
    padding), computed on the device without a host sync: two polynomial hashes, each
    sum_t (id_t + 1) * base^t mod p with p < 2^31 (every term < 2^48, no overflow), combined.

    ``weights``: a (2, >= S) table from :func:`report_hash_weights` already on the device (the
    model keeps one as a buffer, so no table is built or copied per call)."""
    s = input_ids.shape[1]
    if weights is None or weights.shape[1] < s:
        weights = report_hash_weights(s, input_ids.device)
    tokens = (input_ids.long() + 1) * attention_mask.long()  # (B, S), 0 at pads
    out = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    for k, (_, mod) in enumerate(_HASH):
        out = out * mod + (tokens * weights[k, :s]).sum(1) % mod  # < 2^62 after two rounds
    return out


def caption_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Flat indices (N,) into the (B * (S-1)) caption targets of the non-pad ones.

    Meant for the data pipeline (CPU tensors from :meth:`MELPModel.tokenize`): the training
    forward then gathers the N positions with ``index_select`` instead of a boolean mask, so the
    data-dependent count is known on the host and the device never has to report it (no sync)."""
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, pad_id)  # (B, S-1)
    return (targets.reshape(-1) != pad_id).nonzero().squeeze(1)


class TextTowerRequired(ValueError):
    """An operation needs the text tower, and the model is encoder-only (``config["text"] is None``)."""


class MELPModel(nn.Module):
    """MELP (ECG tower, text tower, poolers, caption decoder) built from a config dict.

    Args:
        config: a (partial) MELP config; validated with :func:`melp.models.config.resolve_config`.
            ``"text": null`` builds an encoder-only model (ECG tower and poolers, no text tower or
            decoder): embeddings, probing and fine-tuning work, text operations raise
            :class:`TextTowerRequired`.
        tokenizer: optional pre-loaded tokenizer (default: load ``text.name_or_path`` offline).
        text_model: optional pre-built ``BertModel`` (e.g. pretrained weights); default: random
            init from :func:`text_hf_config`. The constructor never touches the network.
    """

    def __init__(self, config: dict, tokenizer=None, text_model=None):
        super().__init__()
        self.config = resolve_config(
            config, config.get("name", "config") if isinstance(config, dict) else "config"
        )
        cfg = self.config
        tcfg, hcfg, dcfg = cfg["text"], cfg["heads"], cfg["decoder"]
        if tcfg is None:
            if tokenizer is not None or text_model is not None:
                raise ValueError("an encoder-only config (text: null) takes no tokenizer or text_model")
            self.tokenizer = None
        else:
            self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(tcfg["name_or_path"])
            if text_model is None:
                text_model = build_bert(text_hf_config(tcfg, self.tokenizer))
            vocab = text_model.config.vocab_size
            if vocab < len(self.tokenizer):
                raise ValueError(
                    f"text model vocabulary ({vocab}) is smaller than the tokenizer's ({len(self.tokenizer)})"
                )
            self.pad_id = int(self.tokenizer.pad_token_id)
            self.eos_id = int(self.tokenizer.sep_token_id)
            self.cls_id = int(self.tokenizer.cls_token_id)
            self.bos_id = bos_id(self.tokenizer)
            self.dot_id = sentence_separator_id(self.tokenizer)
            self.register_buffer("special_ids", special_token_table(self.tokenizer, vocab), persistent=False)
            # report-hash table on the model's device (report_ids without a per-step host->device copy)
            self.register_buffer("hash_weights", report_hash_weights(tcfg["max_length"]), persistent=False)

        d = cfg["embed_dim"]
        self.ecg_encoder = build_encoder(cfg["ecg"])
        c = self.ecg_encoder.width
        if tcfg is None:
            self.text = None
            cap = hcfg["caption_dim"]
        else:
            self.text = TextTower(
                text_model,
                causal=tcfg["causal"],
                freeze_layers=tcfg["freeze_layers"],
                freeze_embeddings=tcfg["freeze_embeddings"],
            )
            h = self.text.hidden_size
            cap = h if hcfg["caption_dim"] is None else hcfg["caption_dim"]
            if cap != h:
                raise ValueError(
                    f"heads.caption_dim={cap} but the text tower is {h} wide; the caption decoder reads "
                    "the caption tokens at the text width (set heads.caption_dim to null)"
                )
        self.beat_pooler = AttentionalPooler(
            d, c, hcfg["beat_heads"], hcfg["n_beat_queries"], query_init=hcfg["beat_query_init"],
            time_prior=hcfg["beat_time_prior"],
        )  # fmt: skip
        self.beat_norm = nn.LayerNorm(d)
        self.beat_proj = nn.Parameter(torch.randn(d, d) * c**-0.5)  # P (D, D), no bias
        self.caption_pooler = AttentionalPooler(cap, c, hcfg["caption_heads"], hcfg["n_caption_queries"])
        self.caption_norm = nn.LayerNorm(cap)
        if tcfg is None:
            self.text_proj = self.sent_proj = self.decoder = None
        else:
            self.text_proj = nn.Sequential(nn.Linear(h, d), nn.GELU(), nn.Linear(d, d))
            self.sent_proj = nn.Linear(h, d)
            self.decoder = CaptionDecoder(
                h, dcfg["layers"], dcfg["heads"], dcfg["mlp_ratio"], vocab, dcfg["caption_vocab"]
            )
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg["logit_scale_init"])))

    @property
    def has_text(self) -> bool:
        """False for an encoder-only model (no text tower, no caption decoder)."""
        return self.text is not None

    def _require_text(self, what: str) -> None:
        if self.text is None:
            raise TextTowerRequired(
                f"{what} needs a text tower, but model {self.config['name']!r} is encoder-only (a converted "
                "or classifier encoder): pretrain a text side on it with the training config's model.init "
                "(docs/model.md)"
            )

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def tokenize(self, texts: str | list[str]) -> dict[str, torch.Tensor]:
        """Reports (one string or a list) -> ``{"input_ids", "attention_mask"}`` LongTensors (B, S - 1),
        on CPU, where S is ``text.max_length`` or, with ``text.padding="longest"``, the batch's padded
        length."""
        self._require_text("tokenize")
        tcfg = self.config["text"]
        texts = [texts] if isinstance(texts, str) else list(texts)
        return tokenize_reports(self.tokenizer, texts, tcfg["max_length"], tcfg["padding"])

    def input_contract(self) -> str:
        """One line stating the input the model expects (shape, leads, rate, normalisation)."""
        e = self.config["ecg"]
        return (
            f"(B, {e['in_leads']}, {e['n_samples']}): leads {', '.join(e['leads'])}; {e['n_samples']} samples "
            f"= {e['n_samples'] / e['sample_rate']:g} s at {e['sample_rate']:g} Hz; {e['normalize']} "
            "normalisation per record"
        )

    def _check_ecg(
        self, ecg: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        e = self.config["ecg"]
        if not torch.is_tensor(ecg):
            raise TypeError(f"ecg must be a torch.Tensor, got {type(ecg).__name__}")
        if ecg.ndim != 3 or ecg.shape[1] != e["in_leads"] or ecg.shape[2] != e["n_samples"]:
            raise ValueError(
                f"ecg has shape {tuple(ecg.shape)} but model {self.config['name']!r} expects "
                f"{self.input_contract()}; model.preprocess(signal, fs, lead_names) turns a raw record "
                "into this input"
            )
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=self.device)
            if lengths.shape != (ecg.shape[0],) or lengths.dtype.is_floating_point:
                raise ValueError(f"lengths must be (B,) integer valid samples, got {tuple(lengths.shape)}")
            lengths = lengths.long()
        return ecg.to(device=self.device, dtype=self.logit_scale.dtype), lengths

    def preprocess(
        self, signal: np.ndarray | torch.Tensor, fs: float, lead_names: list[str], *, missing: str = "error"
    ) -> tuple[torch.Tensor, int]:
        """Turn one raw record into this model's input, as the training data were prepared.

        Steps (``melp.data.signal``): reorder the leads by name into the model's lead order, resample
        ``fs`` -> the model's rate (anti-aliased polyphase), keep the first ``n_samples`` or zero-pad
        at the end, normalise over the valid samples only (the model's ``ecg.normalize``).

        Args:
            signal: (L, T) array or tensor in physical units (mV), leads in any order.
            fs: its sampling rate in Hz.
            lead_names: the L lead names (any case; ``AVR`` == ``aVR``); extra channels are ignored.
            missing: ``"error"`` (default) rejects a record lacking one of the model's leads;
                ``"zero"`` feeds such a lead as 0 mV before normalisation (what random lead
                masking does in training).

        Returns:
            ``(ecg, valid_length)``: float32 tensor (in_leads, n_samples) on CPU and the number of
            real (not padded) samples. Batch records with ``torch.stack``.
        """
        from melp.data import signal as sig

        x = signal.detach().cpu().numpy() if torch.is_tensor(signal) else np.asarray(signal)
        names = [str(n) for n in lead_names]
        if x.ndim != 2 or x.shape[0] != len(names):
            raise ValueError(
                f"signal must be (L, T) with one row per lead name; got shape {x.shape} and {len(names)} names"
            )
        if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
            raise ValueError("signal must be numeric and finite (NaN/Inf found or non-numeric dtype)")
        if not (isinstance(fs, (int, float)) and not isinstance(fs, bool) and fs > 0):
            raise ValueError(f"fs must be a positive sampling rate in Hz, got {fs!r}")
        if missing not in ("error", "zero"):
            raise ValueError(f"missing must be 'error' or 'zero', got {missing!r}")
        e = self.config["ecg"]
        canon, absent = sig.reorder_leads(x.astype(np.float64), names, missing="zero")  # (12, T)
        lacking = [n for n in e["leads"] if n in absent]
        if lacking and missing == "error":
            raise ValueError(
                f"record lacks lead(s) {', '.join(lacking)} (it has {', '.join(names)}); pass missing='zero' "
                "to feed them as 0 mV (as random lead masking does in training)"
            )
        out = canon[[sig.CANONICAL_LEADS.index(n) for n in e["leads"]]]  # (in_leads, T)
        out = sig.resample(out, float(fs), float(e["sample_rate"]))
        out, valid = sig.crop_or_pad(out, int(e["n_samples"]))
        out = sig.normalize(out, valid, e["normalize"])
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)), int(valid)

    # ------------------------------------------------------------------ towers
    def ecg_tokens(
        self, ecg: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ECG (B, L, T) -> ``(encoder tokens (B, N, C), valid (B, N) bool or None)``.

        ``lengths`` (B,): valid samples of each record (None = all valid); the padding beyond is
        masked in the encoder and in both poolers, so it never changes an output."""
        ecg, lengths = self._check_ecg(ecg, lengths)
        return self.ecg_encoder(ecg, lengths)

    def beat_embeddings(
        self, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Beat embeddings of encoder tokens (B, N, C) with valid ``mask`` (B, N):
        ``(pre-P (B, Q, D), after P (B, Q, D))`` (spec §3.3)."""
        pooled = self.beat_norm(self.beat_pooler(tokens, mask))  # (B, Q, D) pre-P
        return pooled, pooled @ self.beat_proj  # (B, Q, D) after P

    def caption_context(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Caption tokens (B, n, H) for the decoder from encoder tokens (B, N, C) and their mask."""
        return self.caption_norm(self.caption_pooler(tokens, mask))

    def sentence_embeddings(self, report: str) -> tuple[torch.Tensor, list[str]]:
        """The projected sentence embeddings (n_s, D) of one report and the sentences' text."""
        enc = self.tokenize([report])
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        feats, _ = self.text_features(ids, mask)
        sent, smask = pool_sentences(
            feats, ids, mask, self.special_ids, self.dot_id, self.config["max_sentences"]
        )
        idx, keep = sentence_index(ids, mask, self.special_ids, self.dot_id)
        texts = [
            self.tokenizer.decode(ids[0][keep[0] & (idx[0] == k)].tolist())
            for k in range(int(smask[0].sum()))
        ]
        return self.sent_proj(sent)[0][smask[0]], texts

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Token features (B, S, H) and the end-of-sequence ``[CLS]`` feature (B, H) (spec §2.3);
        served from the per-report cache when :meth:`cache_text_features` is on."""
        self._require_text("text_features")
        if getattr(self, "_text_cache", None) is not None:
            return self._cached_text_features(input_ids, attention_mask)
        return self._text_features(input_ids, attention_mask)

    def cache_text_features(self, enabled: bool = True) -> None:
        """Lock the text tower (eval mode, no dropout) and memoise its outputs per report.

        With a fully frozen text tower the features of a report never change, so each distinct
        report is encoded once and later batches only train the ECG side, the heads and the
        decoder (the paper trains the upper text layers; this is a CPU-budget option). Pad
        positions get zero features: only the loss-ignored pad targets could see them. The cache
        lives in memory (about S*H floats per distinct report) and is not saved.
        """
        self._require_text("cache_text_features")
        if enabled and any(p.requires_grad for p in self.text.parameters()):
            raise ValueError(
                "the text-feature cache needs a fully frozen text tower (training config: model.freeze: [text.])"
            )
        self._text_cache = {} if enabled else None

    def _cached_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        cache = self._text_cache
        real = attention_mask.bool().cpu()
        ids = input_ids.cpu()
        keys = [tuple(ids[i][real[i]].tolist()) for i in range(len(ids))]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
        if todo:
            was_training = self.text.training
            self.text.eval()
            with torch.no_grad():
                feats, cls = self._text_features(input_ids[todo], attention_mask[todo])
            self.text.train(was_training)
            for j, i in enumerate(todo):
                cache[keys[i]] = (feats[j][real[i].to(feats.device)].clone(), cls[j].clone())
        b, s = input_ids.shape
        first = cache[keys[0]][1]
        out = first.new_zeros((b, s, first.shape[-1]))  # (B, S, H), zeros at pads
        cls = first.new_empty((b, first.shape[-1]))  # (B, H)
        for i, k in enumerate(keys):
            f, c = cache[k]
            out[i, real[i].to(out.device)] = f
            cls[i] = c
        return out, cls

    def _text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Token features (B, S, H) and the end-of-sequence ``[CLS]`` feature (B, H) (spec §2.3).

        ``[CLS]`` always sits at position ``text.max_length - 1`` (as when padding to the full
        length), so a report encodes identically whatever padding its batch used."""
        b, s = input_ids.shape
        cls = torch.full((b, 1), self.cls_id, dtype=input_ids.dtype, device=input_ids.device)
        ids = torch.cat([input_ids, cls], dim=1)  # (B, S+1): [CLS] after the pads
        mask = torch.cat([attention_mask, torch.ones_like(cls)], dim=1)
        last = max(self.config["text"]["max_length"] - 1, s)
        positions = torch.arange(s + 1, device=ids.device)
        positions[-1] = last  # (S+1,)
        hidden = self.text(ids, mask, positions)  # (B, S+1, H)
        return hidden[:, :-1], hidden[:, -1]

    # ------------------------------------------------------------------ training forward
    def forward(
        self,
        ecg: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        lengths: torch.Tensor | None = None,
        caption_index: torch.Tensor | None = None,
    ) -> dict:
        """Training forward; returns the named outputs consumed by :class:`melp.losses.MELPLoss`.

        Args:
            ecg: (B, L, T) float; input_ids / attention_mask: (B, S) from :meth:`tokenize`;
            lengths: (B,) valid samples per record (None = all valid).
            caption_index: optional (N,) flat indices of the non-pad caption targets
                (:func:`caption_positions`, computed by the data pipeline); used with
                ``decoder.sparse_logits`` so that no host sync is needed to size the selection.

        Returns:
            ``ecg_latent (B, D)``, ``text_latent (B, D)`` (unit norm), ``logit_scale ()`` (= exp(l)),
            ``beats (B, Q, D)``, ``sentences (B, M, D)``, ``sentence_mask (B, M)``,
            ``caption_logits (B, S-1, V)``, ``caption_targets (B, S-1)``, ``pad_id`` (int).
            With ``decoder.sparse_logits`` the caption pair is flattened to the non-pad targets:
            ``caption_logits (N, V)``, ``caption_targets (N,)`` (same loss value). With a compact
            ``decoder.caption_vocab`` the logits have K+1 classes, targets are compact indices and
            ``pad_id`` is the index the loss ignores (-100). With ``text.causal=false`` the caption pair is
            None (no valid captioning target exists). ``text_ids (B,)``: an id per report
            text (equal reports, equal ids) for duplicate-aware contrastive targets.
        """
        self._require_text("the training forward")
        sparse = self.config["decoder"]["sparse_logits"] and self.text.causal
        if sparse and caption_index is None and attention_mask.device.type == "cpu":
            caption_index = caption_positions(input_ids, attention_mask, self.pad_id)  # host-side, no sync
        input_ids = input_ids.to(self.device, torch.long)
        attention_mask = attention_mask.to(self.device)
        tokens, mask = self.ecg_tokens(ecg, lengths)
        _, beats = self.beat_embeddings(tokens, mask)
        ctx = self.caption_context(tokens, mask)
        feats, cls = self.text_features(input_ids, attention_mask)
        sent, sent_mask = pool_sentences(
            feats, input_ids, attention_mask, self.special_ids, self.dot_id, self.config["max_sentences"]
        )
        sentences = self.sent_proj(sent) * sent_mask[..., None].to(sent.dtype)  # zero unused slots
        targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, self.pad_id)  # (B, S-1)
        if self.text.causal:
            hidden = self.decoder.hidden(feats[:, :-1], ctx)  # (B, S-1, H)
            if sparse:  # the loss ignores every other position
                if caption_index is None:  # inputs already on the device: one sync sizes the selection
                    caption_index = (targets.reshape(-1) != self.pad_id).nonzero().squeeze(1)
                caption_index = caption_index.to(hidden.device, non_blocking=True)
                # (B, S-1, H) -> (B*(S-1), H) -> (N_keep, H); (B, S-1) -> (N_keep,)
                hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, caption_index)
                targets = targets.reshape(-1).index_select(0, caption_index)
            logits = self.decoder.project(hidden)  # (B, S-1, V) / (N_keep, V); V -> K+1 if compact
            targets, ignore_id = self.decoder.map_targets(targets, self.pad_id)
        else:  # teacher forcing on a bidirectional text tower would see the tokens it must predict
            logits, targets, ignore_id = None, None, self.pad_id
        return {
            "ecg_latent": F.normalize(beats.mean(1), dim=-1),
            "text_latent": F.normalize(self.text_proj(cls), dim=-1),
            "logit_scale": self.logit_scale.exp(),
            "beats": beats,
            "sentences": sentences,
            "sentence_mask": sent_mask,
            "caption_logits": logits,
            "caption_targets": targets,
            "pad_id": ignore_id,
            "text_ids": report_ids(input_ids, attention_mask, self.hash_weights),
        }

    # ------------------------------------------------------------------ inference API
    def encode_ecg(self, ecg: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """ECG (B, L, T) (valid ``lengths`` (B,), None = all) -> z_e (B, D), unit norm (zero-shot / retrieval)."""
        return F.normalize(self.beat_embeddings(*self.ecg_tokens(ecg, lengths))[1].mean(1), dim=-1)

    def encode_text(self, texts: str | list[str] | dict) -> torch.Tensor:
        """Reports (one string, a list of B strings, or a :meth:`tokenize` dict) -> z_t (B, D), unit
        norm; one string gives (1, D)."""
        self._require_text("encode_text")
        enc = texts if isinstance(texts, dict) else self.tokenize(texts)
        ids = enc["input_ids"].to(self.device, torch.long)
        _, cls = self.text_features(ids, enc["attention_mask"].to(self.device))
        return F.normalize(self.text_proj(cls), dim=-1)

    def embed(self, ecg: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """ECG embeddings: ``rhythm`` (B, D) mean of beats after P (un-normalised), ``beats``
        (B, Q, D) after P, ``probe`` (B, D) mean over queries before P (linear probing).
        ``lengths`` (B,): valid samples per record (None = all valid)."""
        pre, beats = self.beat_embeddings(*self.ecg_tokens(ecg, lengths))
        return {"rhythm": beats.mean(1), "beats": beats, "probe": pre.mean(1)}

    def restrict_caption_vocab(self, texts: list[str]) -> list[int]:
        """Give the caption decoder a compact output layer over the token ids occurring in
        ``texts`` (e.g. the training reports) plus ``[SEP]``; every other token becomes one "other"
        class. Re-initialises the output projection: call before training. Recorded in
        ``config["decoder"]["caption_vocab"]`` so save/load rebuilds the same model. Returns the ids."""
        self._require_text("restrict_caption_vocab")
        ids = set()
        for start in range(0, len(texts), 512):
            enc = tokenize_reports(
                self.tokenizer, list(texts[start : start + 512]), self.config["text"]["max_length"], "longest"
            )
            ids.update(enc["input_ids"][enc["attention_mask"].bool()].unique().tolist())
        ids.add(self.eos_id)
        ids -= {self.pad_id, self.bos_id, self.cls_id}
        vocab_ids = sorted(int(i) for i in ids)
        self.decoder.set_vocab(vocab_ids)
        self.decoder.to(self.device)
        self.config["decoder"]["caption_vocab"] = vocab_ids
        return vocab_ids

    def clamp_logit_scale(self) -> None:
        """Clamp l to [0, logit_scale_max]; call after every optimizer step."""
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, float(self.config["logit_scale_max"]))

    def no_weight_decay(self) -> set[str]:
        """Names of parameters to exclude from weight decay: 1-D tensors, query tokens, logit scale (D15)."""
        return {
            n
            for n, p in self.named_parameters()
            if p.ndim <= 1 or n.endswith("pooler.query") or n == "logit_scale"
        }

    @property
    def frame_rate(self) -> float:
        """ECG tokens per second of signal."""
        return self.config["ecg"]["sample_rate"] / self.ecg_encoder.stride

    def generate(
        self, ecg: torch.Tensor, strategy: str = "beam", max_length: int | None = None, **kwargs
    ) -> list[str]:
        """Generate reports for ECGs (B, L, T); see :func:`melp.models.generation.generate`
        (``max_length`` None = :data:`melp.models.generation.MAX_LENGTH`)."""
        from melp.models.generation import MAX_LENGTH, generate

        self._require_text("generate")
        return generate(self, ecg, strategy=strategy, max_length=max_length or MAX_LENGTH, **kwargs)

    # ------------------------------------------------------------------ persistence
    def encoder_only(self) -> MELPModel:
        """A copy without the text tower and decoder: ECG encoder, poolers, norms, P and the logit
        scale, same weights, device and dtype (what a classifier or a converted encoder keeps)."""
        if not self.has_text:
            return copy.deepcopy(self)
        cfg = copy.deepcopy(self.config)
        cfg["text"], cfg["decoder"] = None, None
        cfg["heads"]["caption_dim"] = int(self.caption_norm.normalized_shape[0])
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten; keep the caller's RNG
            enc = MELPModel(cfg)
        src = self.state_dict()
        enc.load_state_dict({k: src[k] for k in enc.state_dict()}, strict=True)
        return enc.to(device=self.device, dtype=self.logit_scale.dtype).train(self.training)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` (with the melp version and a config hash), ``model.safetensors`` and,
        with a text tower, ``text_config.json`` and ``tokenizer/``; returns the folder."""
        return io.save_model(self, directory)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> MELPModel:
        """Load a saved model (= ``melp.load_model``), in eval mode.

        Args:
            path_or_id: a folder written by :meth:`save_pretrained` / ``melp convert``, its
                ``model.safetensors`` or ``config.json``, or a Hugging Face hub id ``owner/name``
                (cached snapshot first, else downloaded: naming a hub id is the explicit request).
                A string that looks like a path is never sent to the Hub (see
                :func:`melp.models.io.resolve_model_dir`).
            revision: hub branch / tag / commit (hub ids only).
            cache_dir: Hugging Face cache folder (hub ids only).
            device: where to put the model (default CPU).
            dtype: floating dtype of the parameters (default: as saved).

        Raises:
            FileNotFoundError: no such folder / a required file is missing / hub id unavailable.
            RuntimeError: the weights do not match the architecture (missing/unexpected keys, shapes).
        """
        root = io.resolve_model_dir(path_or_id, revision=revision, cache_dir=cache_dir)
        files = io.read_model_folder(root)
        io.check_config_hash(files)
        config = resolve_config(files.config, str(root / io.CONFIG))
        if files.text_config is None:
            model = cls(config)
        else:
            from transformers import BertConfig

            tokenizer = load_tokenizer(files.tokenizer)
            bert = build_bert(BertConfig.from_json_file(str(files.text_config)))
            model = cls(config, tokenizer=tokenizer, text_model=bert)
        state = files.state
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or bad_shape:
            raise RuntimeError(
                f"{root / io.WEIGHTS} does not match the architecture in {root / io.CONFIG}: "
                f"missing={missing[:10]} unexpected={unexpected[:10]} wrong_shape={bad_shape[:10]} "
                "(re-save the model with the current melp version)"
            )
        floats = [v.dtype for v in state.values() if v.is_floating_point()]
        model.to(dtype or (floats[0] if floats else torch.float32))  # integer buffers keep theirs
        model.load_state_dict(state, strict=True)
        if device is not None:
            model.to(device)
        return model.eval()

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload this model with a model card to the Hugging Face Hub; see
        :func:`melp.models.hub.push_to_hub` (keyword arguments pass through)."""
        from melp.models.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    def extra_repr(self) -> str:
        return f"name={self.config['name']!r}"
