"""Text side: tokenisation layout, the custom BERT forward, causality, KV step, sentence pooling."""

import pytest
import torch

from melp.models.sentences import pool_sentences
from melp.text.encoder import TextTower, build_bert
from melp.text.tokenizer import (
    BOS_TOKEN,
    bos_id,
    load_tokenizer,
    sentence_separator_id,
    special_token_table,
    tokenize_reports,
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


def _bert(tok, **kw):
    from transformers import BertConfig

    cfg = dict(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48
    )
    cfg.update(kw)
    torch.manual_seed(0)
    return build_bert(BertConfig(**cfg))


def test_tokenize_layout(tok):
    enc = tokenize_reports(tok, ["sinus rhythm. normal ecg.", "a " * 50], max_length=12)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == (2, 11) and mask.shape == (2, 11)
    words = tok.convert_ids_to_tokens(ids[0].tolist())
    assert words == [BOS_TOKEN, "sin", "##us", "rhythm", ".", "normal", "ec", "##g", ".", "[SEP]", "[PAD]"]
    assert mask[0].tolist() == [1] * 10 + [0]
    # truncated: the last real token is still [SEP]
    assert mask[1].all() and ids[1, -1].item() == tok.sep_token_id and ids[1, 0].item() == bos_id(tok)
    assert sentence_separator_id(tok) == tok.convert_tokens_to_ids(".")
    assert tok.convert_tokens_to_ids(BOS_TOKEN) == len(tok) - 1  # added after the checkpoint's vocab


def test_bidirectional_tower_matches_hf_bert(tok):
    bert = _bert(tok).eval()
    tower = TextTower(bert, causal=False).eval()
    enc = tokenize_reports(tok, ["left axis deviation. abnormal ecg.", "normal."], max_length=16)
    ours = tower(enc["input_ids"], enc["attention_mask"])
    ref = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    m = enc["attention_mask"].bool()
    torch.testing.assert_close(ours[m], ref[m], atol=1e-5, rtol=1e-5)


def test_causal_tower_later_tokens_and_pads_do_not_leak(tok):
    tower = TextTower(_bert(tok), causal=True).eval()
    enc = tokenize_reports(tok, ["sinus rhythm. left axis deviation. normal ecg."], max_length=20)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    base = tower(ids, mask)
    changed = ids.clone()
    changed[0, 6] = tok.convert_tokens_to_ids("atrial")
    out = tower(changed, mask)
    torch.testing.assert_close(out[0, :6], base[0, :6], atol=0, rtol=0)
    assert not torch.allclose(out[0, 6:], base[0, 6:])
    # a pad's id changes nothing for the real tokens and for a trailing summary position
    ids2 = torch.cat([ids, torch.full((1, 1), tok.cls_token_id)], 1)
    mask2 = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
    pad_pos = int(mask[0].sum())
    noisy = ids2.clone()
    noisy[0, pad_pos] = 1234
    a, b = tower(ids2, mask2), tower(noisy, mask2)
    torch.testing.assert_close(a[0, :pad_pos], b[0, :pad_pos], atol=0, rtol=0)
    torch.testing.assert_close(a[0, -1], b[0, -1], atol=1e-6, rtol=0)


def test_incremental_step_equals_full_forward(tok):
    tower = TextTower(_bert(tok), causal=True).eval()
    ids = tokenize_reports(tok, ["sinus rhythm. normal ecg."], max_length=12)["input_ids"][:, :9]
    full = tower(ids, torch.ones_like(ids))
    caches = [{} for _ in tower.bert.encoder.layer]
    first = tower.step(ids[:, :3], caches)  # a prompt of 3 tokens, then one token at a time
    steps = [first] + [tower.step(ids[:, i : i + 1], caches) for i in range(3, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_freeze_layers(tok):
    tower = TextTower(_bert(tok, num_hidden_layers=3), freeze_layers=2)
    frozen = [all(not p.requires_grad for p in layer.parameters()) for layer in tower.bert.encoder.layer]
    assert frozen == [True, True, False]
    assert tower.bert.embeddings.word_embeddings.weight.requires_grad
    with pytest.raises(ValueError, match="freeze_layers"):
        TextTower(_bert(tok), freeze_layers=5)


def _loop_sentences(feats, ids, mask, special, dot, m):
    """Per-sample reference: split after each '.', drop special tokens, skip empty spans."""
    out = torch.zeros(ids.shape[0], m, feats.shape[-1])
    out_mask = torch.zeros(ids.shape[0], m, dtype=torch.bool)
    for b in range(ids.shape[0]):
        spans, cur = [], []
        for t in range(ids.shape[1]):
            if mask[b, t] and not special[ids[b, t]]:
                cur.append(feats[b, t])
            if ids[b, t] == dot:
                spans.append(cur)
                cur = []
        spans.append(cur)  # trailing text without '.' is a sentence too (D13 fix)
        spans = [s for s in spans if s][:m]
        for k, s in enumerate(spans):
            out[b, k] = torch.stack(s).mean(0)
            out_mask[b, k] = True
    return out, out_mask


def test_sentence_pooling_equals_loop_reference(tok):
    reports = [
        "sinus rhythm. left axis deviation. normal ecg.",
        "",  # zero sentences
        "atrial fibrillation",  # one sentence, no '.'
        "sinus rhythm. borderline ecg",  # trailing sentence without '.'
        "a. b. c. d. e. f.",  # more sentences than slots
        ". sinus rhythm..",  # a span holding only '.' is still a sentence (it has a real token)
    ]
    enc = tokenize_reports(tok, reports, max_length=24)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = special_token_table(tok, len(tok))
    dot = sentence_separator_id(tok)
    feats = torch.randn(*ids.shape, 5, generator=torch.Generator().manual_seed(0))
    got, got_mask = pool_sentences(feats, ids, mask, special, dot, max_sentences=4)
    ref, ref_mask = _loop_sentences(feats, ids, mask, special, dot, 4)
    assert got_mask.tolist() == ref_mask.tolist()
    assert got_mask.sum(1).tolist() == [3, 0, 1, 2, 4, 3]
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_load_bert_reports_missing_weights_not_the_mlm_head(tmp_path, caplog):
    """A folder from `melp pretrain-text` holds an MLM head (cls.*): loading the tower says nothing.
    A checkpoint lacking encoder weights is named in a warning (those weights start random)."""
    import logging

    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertForMaskedLM

    from melp.text.encoder import load_bert

    cfg = BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48
    )
    torch.manual_seed(0)
    mlm = BertForMaskedLM(cfg)
    mlm.save_pretrained(tmp_path / "mlm")
    with caplog.at_level(logging.INFO, logger="melp"):
        bert = load_bert(str(tmp_path / "mlm"), 121, local_files_only=True)
    assert not [r for r in caplog.records if r.name.startswith("melp")]
    assert bert.get_input_embeddings().weight.shape == (121, 32)  # resized for [BOS]
    torch.testing.assert_close(
        bert.encoder.layer[1].output.dense.weight, mlm.bert.encoder.layer[1].output.dense.weight
    )

    state = load_file(tmp_path / "mlm" / "model.safetensors")
    dropped = [k for k in state if ".layer.1.output.dense." in k]
    save_file(
        {k: v for k, v in state.items() if k not in dropped},
        tmp_path / "mlm" / "model.safetensors",
        metadata={"format": "pt"},
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="melp"):
        load_bert(str(tmp_path / "mlm"), 120, local_files_only=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 text-tower weights not in the checkpoint" in warnings[0]
    assert "encoder.layer.1.output.dense.weight" in warnings[0]
