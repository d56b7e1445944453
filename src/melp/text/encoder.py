"""Text tower: a BERT-family encoder run with MELP's own (causal + padding) attention mask.

The weights live in a Hugging Face ``BertModel`` (so any BERT checkpoint loads with
``from_pretrained``), but the forward pass is written here over its sub-modules
(``embeddings.{word,position,token_type}_embeddings``, ``encoder.layer[i].attention.self.{query,key,value}``,
``...attention.output``, ``...intermediate``, ``...output``). This keeps the causal+padding mask
and the incremental (KV-cached) step identical across transformers 4.x and 5.x, uses
``scaled_dot_product_attention``, and never computes an LM head (fix of D14).

Dimensions: ``B`` batch, ``S`` token positions, ``H`` hidden width, ``nh`` heads, ``hd`` head dim.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def _check_bert(bert) -> None:
    cfg = bert.config
    pet = getattr(cfg, "position_embedding_type", "absolute")
    if pet != "absolute":
        raise ValueError(f"text tower: position_embedding_type={pet!r} is not supported (absolute only)")
    emb = bert.embeddings
    for name in ("word_embeddings", "position_embeddings", "LayerNorm", "dropout"):
        if not hasattr(emb, name):
            raise ValueError(
                f"text tower: {type(bert).__name__} lacks embeddings.{name}; use a BERT-family model"
            )


class TextTower(nn.Module):
    """BERT encoder with causal (default) or bidirectional self-attention.

    Args:
        bert: a ``transformers`` ``BertModel`` (no pooler needed).
        causal: left-to-right attention (the paper's setting) if True.
        freeze_layers: number of leading transformer layers whose parameters are frozen.
        freeze_embeddings: also freeze the embeddings (the paper trains them). Together with
            ``freeze_layers`` this makes the frozen prefix gradient-free, so backward stops at the
            first trainable layer (much cheaper on CPU).
    """

    def __init__(self, bert, causal: bool = True, freeze_layers: int = 0, freeze_embeddings: bool = False):
        super().__init__()
        _check_bert(bert)
        if getattr(bert, "pooler", None) is not None:
            bert.pooler = None  # unused; would never receive gradients
        self.bert = bert
        self.causal = causal
        cfg = bert.config
        self.hidden_size = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.attn_dropout = cfg.attention_probs_dropout_prob
        n_layers = len(bert.encoder.layer)
        if not 0 <= freeze_layers <= n_layers:
            raise ValueError(f"text.freeze_layers={freeze_layers} but the text model has {n_layers} layers")
        self.freeze_layers = freeze_layers
        for layer in bert.encoder.layer[:freeze_layers]:
            layer.requires_grad_(False)
        if freeze_embeddings:
            bert.embeddings.requires_grad_(False)

    @property
    def max_positions(self) -> int:
        return self.bert.config.max_position_embeddings

    def embed(self, ids: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Token + position (+ type 0) embeddings for ids (B, S) at positions start..start+S-1
        (or the explicit ``positions`` (S,)) -> (B, S, H)."""
        emb = self.bert.embeddings
        pos = torch.arange(start, start + ids.shape[1], device=ids.device) if positions is None else positions
        h = emb.word_embeddings(ids) + emb.position_embeddings(pos)[None]
        if getattr(emb, "token_type_embeddings", None) is not None:
            h = h + emb.token_type_embeddings.weight[0]
        return emb.dropout(emb.LayerNorm(h))

    def _layer(self, layer, h: torch.Tensor, mask: torch.Tensor | None, cache: dict | None) -> torch.Tensor:
        att = layer.attention
        b, s, _ = h.shape

        def split(x):  # (B, S, H) -> (B, nh, S, hd)
            return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(att.self.query(h)), split(att.self.key(h)), split(att.self.value(h))
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, nh, S, hd)
        ctx = ctx.transpose(1, 2).reshape(b, s, self.hidden_size)  # (B, S, H)
        a = att.output.LayerNorm(att.output.dropout(att.output.dense(ctx)) + h)
        inter = layer.intermediate(a)
        return layer.output.LayerNorm(layer.output.dropout(layer.output.dense(inter)) + a)

    def build_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Boolean (B, 1, S, S) mask, True = may attend: key is a real token and (if causal) key <= query."""
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        if self.causal:
            s = attention_mask.shape[1]
            tri = torch.ones(s, s, dtype=torch.bool, device=attention_mask.device).tril()
            keep = keep & tri  # (B, 1, S, S)
        else:
            keep = keep.expand(-1, -1, attention_mask.shape[1], -1)
        return keep

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Last hidden states (B, S, H) for ids (B, S) with mask (B, S) (1 = real token);
        ``positions`` (S,) overrides the position ids 0..S-1."""
        if input_ids.shape[1] > self.max_positions:
            raise ValueError(
                f"text sequence of {input_ids.shape[1]} tokens exceeds the text model's "
                f"max_position_embeddings={self.max_positions}; lower text.max_length"
            )
        mask = self.build_mask(attention_mask)
        h = self.embed(input_ids, positions=positions)
        for layer in self.bert.encoder.layer:
            h = self._layer(layer, h, mask, None)
        return h

    def step(self, input_ids: torch.Tensor, caches: list[dict]) -> torch.Tensor:
        """Incremental causal step: features (B, s, H) of new ids (B, s) given per-layer KV caches.

        ``caches`` holds one dict per layer (start with ``[{} for _ in layers]``); they are updated
        in place. All previous tokens are assumed real (no padding during generation).
        """
        if not self.causal:
            raise RuntimeError("incremental text encoding needs text.causal=true")
        past = caches[0]["k"].shape[2] if "k" in caches[0] else 0
        s = input_ids.shape[1]
        h = self.embed(input_ids, start=past)
        mask = None
        if s > 1:  # (s, past + s): new token i sees all past tokens and new tokens <= i
            mask = torch.ones(s, past + s, dtype=torch.bool, device=input_ids.device).tril(diagonal=past)
        for layer, cache in zip(self.bert.encoder.layer, caches):
            h = self._layer(layer, h, mask, cache)
        return h


def build_bert(hf_config):
    """Randomly initialised ``BertModel`` (no pooler) from a ``BertConfig``."""
    from transformers import BertModel

    return BertModel(hf_config, add_pooling_layer=False)


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' own logging and progress bars for the duration (both restored after).

    Its load report lists every checkpoint key the model does not use (an MLM head, a pooler) and
    draws a progress bar for a sub-second weight load; callers report what matters themselves."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_bert(name_or_path: str, vocab_size: int, *, local_files_only: bool = False):
    """Pretrained ``BertModel`` from a folder or hub id, with embeddings resized to ``vocab_size``."""
    from transformers import BertModel

    # a folder written by `melp pretrain-text` carries its masked-LM head (``cls.*``), which the
    # text tower never uses; we report only missing encoder weights (random init) and unused keys
    # other than the MLM / NSP heads
    with quiet_transformers():
        bert, info = BertModel.from_pretrained(
            name_or_path, add_pooling_layer=False, local_files_only=local_files_only, output_loading_info=True
        )
        if bert.config.vocab_size != vocab_size:  # room for [BOS]; new rows from the old rows' statistics
            bert.resize_token_embeddings(vocab_size)
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(("cls.", "pooler."))]
    if missing:
        log.warning(
            "%s: %d text-tower weights not in the checkpoint (randomly initialised): %s",
            name_or_path,
            len(missing),
            ", ".join(missing[:8]),
        )
    if unexpected:
        log.info(
            "%s: %d checkpoint weights unused by the text tower: %s",
            name_or_path,
            len(unexpected),
            ", ".join(unexpected[:8]),
        )
    return bert
