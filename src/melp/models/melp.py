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

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from melp.models.config import resolve_config
from melp.models.decoder import CaptionDecoder
from melp.models.poolers import AttentionalPooler
from melp.models.resnet1d import ResNet1dEncoder
from melp.models.sentences import pool_sentences, sentence_index
from melp.models.wav2vec2 import Wav2Vec2Encoder
from melp.text.encoder import TextTower, build_bert
from melp.text.tokenizer import (
    bos_id,
    load_tokenizer,
    resolve_text_path,
    sentence_separator_id,
    special_token_table,
    tokenize_reports,
)

ENCODERS = {"wav2vec2": Wav2Vec2Encoder, "resnet1d": ResNet1dEncoder}


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


class MELPModel(nn.Module):
    """MELP (ECG tower, text tower, poolers, caption decoder) built from a config dict.

    Args:
        config: a (partial) MELP config; validated with :func:`melp.models.config.resolve_config`.
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
        self.ecg_encoder = ENCODERS[cfg["ecg"]["type"]](cfg["ecg"])
        c = self.ecg_encoder.width
        self.text = TextTower(
            text_model,
            causal=tcfg["causal"],
            freeze_layers=tcfg["freeze_layers"],
            freeze_embeddings=tcfg["freeze_embeddings"],
        )
        h = self.text.hidden_size
        self.beat_pooler = AttentionalPooler(d, c, hcfg["beat_heads"], hcfg["n_beat_queries"])
        self.beat_norm = nn.LayerNorm(d)
        self.beat_proj = nn.Parameter(torch.randn(d, d) * c**-0.5)  # P (D, D), no bias
        self.caption_pooler = AttentionalPooler(h, c, hcfg["caption_heads"], hcfg["n_caption_queries"])
        self.caption_norm = nn.LayerNorm(h)
        self.text_proj = nn.Sequential(nn.Linear(h, d), nn.GELU(), nn.Linear(d, d))
        self.sent_proj = nn.Linear(h, d)
        self.decoder = CaptionDecoder(
            h, dcfg["layers"], dcfg["heads"], dcfg["mlp_ratio"], vocab, dcfg["caption_vocab"]
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg["logit_scale_init"])))

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Reports -> ``{"input_ids", "attention_mask"}`` LongTensors (B, S - 1), on CPU, where S is
        ``text.max_length`` or, with ``text.padding="longest"``, the batch's padded length."""
        tcfg = self.config["text"]
        return tokenize_reports(self.tokenizer, texts, tcfg["max_length"], tcfg["padding"])

    def _check_ecg(self, ecg: torch.Tensor) -> torch.Tensor:
        leads = self.config["ecg"]["in_leads"]
        if ecg.ndim != 3 or ecg.shape[1] != leads:
            raise ValueError(
                f"ecg must be (B, {leads}, T) in the canonical lead order, got {tuple(ecg.shape)}"
            )
        return ecg.to(device=self.device, dtype=self.logit_scale.dtype)

    # ------------------------------------------------------------------ towers
    def ecg_tokens(self, ecg: torch.Tensor) -> torch.Tensor:
        """ECG (B, L, T) -> encoder tokens (B, N, C)."""
        return self.ecg_encoder(self._check_ecg(ecg))

    def _beats(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.beat_norm(self.beat_pooler(tokens))  # (B, Q, D) pre-P
        return pooled, pooled @ self.beat_proj  # (B, Q, D) after P

    def caption_context(self, tokens: torch.Tensor) -> torch.Tensor:
        """Caption tokens (B, n, H) for the decoder from encoder tokens (B, N, C)."""
        return self.caption_norm(self.caption_pooler(tokens))

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Token features (B, S, H) and the end-of-sequence ``[CLS]`` feature (B, H) (spec §2.3);
        served from the per-report cache when :meth:`cache_text_features` is on."""
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
        caption_index: torch.Tensor | None = None,
    ) -> dict:
        """Training forward; returns the named outputs consumed by :class:`melp.losses.MELPLoss`.

        Args:
            ecg: (B, L, T) float; input_ids / attention_mask: (B, S) from :meth:`tokenize`.
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
            ``pad_id`` is the index the loss ignores (-100). ``text_ids (B,)``: an id per report
            text (equal reports, equal ids) for duplicate-aware contrastive targets.
        """
        sparse = self.config["decoder"]["sparse_logits"]
        if sparse and caption_index is None and attention_mask.device.type == "cpu":
            caption_index = caption_positions(input_ids, attention_mask, self.pad_id)  # host-side, no sync
        input_ids = input_ids.to(self.device, torch.long)
        attention_mask = attention_mask.to(self.device)
        tokens = self.ecg_tokens(ecg)
        _, beats = self._beats(tokens)
        ctx = self.caption_context(tokens)
        feats, cls = self.text_features(input_ids, attention_mask)
        sent, sent_mask = pool_sentences(
            feats, input_ids, attention_mask, self.special_ids, self.dot_id, self.config["max_sentences"]
        )
        sentences = self.sent_proj(sent) * sent_mask[..., None].to(sent.dtype)  # zero unused slots
        targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, self.pad_id)  # (B, S-1)
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
    def encode_ecg(self, ecg: torch.Tensor) -> torch.Tensor:
        """ECG (B, L, T) -> z_e (B, D), unit norm (zero-shot / retrieval)."""
        return F.normalize(self._beats(self.ecg_tokens(ecg))[1].mean(1), dim=-1)

    def encode_text(self, texts) -> torch.Tensor:
        """Reports (list of str, or a :meth:`tokenize` dict) -> z_t (B, D), unit norm."""
        enc = self.tokenize(list(texts)) if not isinstance(texts, dict) else texts
        ids = enc["input_ids"].to(self.device, torch.long)
        _, cls = self.text_features(ids, enc["attention_mask"].to(self.device))
        return F.normalize(self.text_proj(cls), dim=-1)

    def embed(self, ecg: torch.Tensor) -> dict[str, torch.Tensor]:
        """ECG embeddings: ``rhythm`` (B, D) mean of beats after P (un-normalised), ``beats``
        (B, Q, D) after P, ``probe`` (B, D) mean over queries before P (linear probing)."""
        pre, beats = self._beats(self.ecg_tokens(ecg))
        return {"rhythm": beats.mean(1), "beats": beats, "probe": pre.mean(1)}

    def restrict_caption_vocab(self, texts: list[str]) -> list[int]:
        """Give the caption decoder a compact output layer over the token ids occurring in
        ``texts`` (e.g. the training reports) plus ``[SEP]``; every other token becomes one "other"
        class. Re-initialises the output projection: call before training. Recorded in
        ``config["decoder"]["caption_vocab"]`` so save/load rebuilds the same model. Returns the ids."""
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

    @torch.no_grad()
    def attention_maps(self, ecg: torch.Tensor, report: str) -> dict:
        """Attention maps of one ECG (L, T) or (1, L, T) and its report.

        Returns ``beat_time`` (Q, N) head-averaged attention of each beat query over the ECG tokens,
        ``sentence_beat`` (n_s, Q) the beat-loss attention beta of each sentence over the beats,
        ``sentences`` (n_s decoded sentences), ``frame_rate`` (tokens per second).
        """
        from melp.losses.beat import beat_attention

        x = ecg if ecg.ndim == 3 else ecg[None]
        tokens = self.ecg_tokens(x[:1])
        beat_time = self.beat_pooler.attention_weights(tokens)[0]  # (Q, N)
        _, beats = self._beats(tokens)
        enc = self.tokenize([report])
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        feats, _ = self.text_features(ids, mask)
        m = self.config["max_sentences"]
        sent, smask = pool_sentences(feats, ids, mask, self.special_ids, self.dot_id, m)
        sentences = self.sent_proj(sent)[0][smask[0]]  # (n_s, D)
        idx, keep = sentence_index(ids, mask, self.special_ids, self.dot_id)
        texts = [
            self.tokenizer.decode(ids[0][keep[0] & (idx[0] == k)].tolist())
            for k in range(int(smask[0].sum()))
        ]
        return {
            "beat_time": beat_time,
            "sentence_beat": beat_attention(beats[0], sentences),
            "sentences": texts,
            "frame_rate": self.frame_rate,
        }

    def generate(
        self, ecg: torch.Tensor, strategy: str = "beam", max_length: int = 30, **kwargs
    ) -> list[str]:
        """Generate reports for ECGs (B, L, T); see :func:`melp.models.generation.generate`."""
        from melp.models.generation import generate

        return generate(self, ecg, strategy=strategy, max_length=max_length, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json``, ``model.safetensors``, ``text_config.json`` and ``tokenizer/``."""
        from melp.models.io import save_model

        save_model(self, directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> MELPModel:
        """Load a folder written by :meth:`save_pretrained` (or a hub id holding one)."""
        from melp.models.io import load_model

        return load_model(name_or_path)

    def extra_repr(self) -> str:
        return f"name={self.config['name']!r}"
