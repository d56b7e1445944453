"""Cardiology masked-LM stage: corpus folds, seeded masking, training lowers held-out perplexity."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from melp.text.mlm import fixed_mask, pretrain_text, read_corpus

DATA = Path(__file__).parents[1] / "data"


class _Tok:  # the two attributes fixed_mask needs
    mask_token_id = 4

    def __len__(self):
        return 50


def test_fixed_mask_is_seeded_and_skips_special_tokens():
    ids = torch.randint(5, 50, (200, 100))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -10:] = True  # [CLS] and padding
    a_ids, a_lab = fixed_mask(ids, special, _Tok(), 0.15, seed=7)
    b_ids, b_lab = fixed_mask(ids, special, _Tok(), 0.15, seed=7)
    assert torch.equal(a_ids, b_ids) and torch.equal(a_lab, b_lab)
    assert not torch.equal(fixed_mask(ids, special, _Tok(), 0.15, seed=8)[1], a_lab)
    chosen = a_lab != -100
    assert not chosen[special].any()
    assert torch.equal(a_lab[chosen], ids[chosen])  # labels are the original tokens
    assert torch.equal(a_ids[~chosen], ids[~chosen])  # nothing else is touched
    frac = chosen.sum().item() / (~special).sum().item()
    assert 0.14 < frac < 0.16  # 17,800 real tokens at p = 0.15
    as_mask = (a_ids[chosen] == 4).float().mean().item()
    assert 0.77 < as_mask < 0.83  # 80% become [MASK]


def test_read_corpus_folds_and_text_files(tmp_path):
    df = pd.DataFrame(
        {
            "report": [f"report {k}." for k in range(1, 11)] + ["sinusrhythmus normales ekg", None],
            "strat_fold": list(range(1, 11)) + [3, 4],
        }
    )
    df.to_csv(tmp_path / "db.csv", index=False)
    train, held = read_corpus(tmp_path / "db.csv")
    assert train == [f"report {k}." for k in range(1, 9)] + ["sinus rhythm. normal ecg."]  # English, no NaN
    assert held == ["report 9."]  # fold 9 held out; fold 10 is never read
    lines = [f"line {i}" for i in range(40)]
    (tmp_path / "c.txt").write_text("\n".join(lines[:10] + [""] + lines[10:]))
    train, held = read_corpus(tmp_path / "c.txt")
    assert held == ["line 19", "line 39"] and len(train) == 38


def test_train_tokenizer_needs_a_scratch_model(tmp_path):
    (tmp_path / "c.txt").write_text("sinus rhythm.\n" * 30)
    with pytest.raises(ValueError, match="from-scratch"):
        pretrain_text(tmp_path / "c.txt", "minilm", tmp_path / "out", train_tokenizer=100, steps=1)


def test_mlm_from_scratch_lowers_perplexity_and_feeds_melp(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    import melp

    db = pd.read_csv(DATA / "ptbxl-mini" / "ptbxl_database.csv", usecols=["report", "strat_fold"])
    english = db[db["report"].str.startswith("sinus rhythm", na=False)]
    corpus = tmp_path / "reports.txt"
    corpus.write_text("\n".join(english["report"].head(400)))
    (tmp_path / "bert.json").write_text(
        json.dumps(
            {
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "max_position_embeddings": 64,
            }
        )
    )
    out = tmp_path / "lm"
    torch.manual_seed(0)
    res = pretrain_text(
        corpus,
        str(tmp_path / "bert.json"),
        out,
        train_tokenizer=300,
        steps=100,
        lr=3e-3,
        batch_size=32,
        max_length=48,
    )
    assert res.n_train == 380 and res.n_heldout == 20
    assert res.perplexity_before > 100  # random init over a ~300-token vocabulary
    assert res.perplexity_after < res.perplexity_before / 2
    saved = json.loads((out / "mlm_metrics.json").read_text())
    assert saved["perplexity_after"] == pytest.approx(res.perplexity_after)
    tok = AutoTokenizer.from_pretrained(out)
    assert 100 < len(tok) <= 300 and tok.convert_ids_to_tokens(tok(".")["input_ids"])[1] == "."
    lm = AutoModelForMaskedLM.from_pretrained(out)
    # the folder is directly usable as the MELP text tower (weights carried over)
    model = melp.create_model("melp-test", text_model=str(out))
    emb = model.text.bert.embeddings.word_embeddings.weight
    assert torch.equal(emb[: len(tok)], lm.bert.embeddings.word_embeddings.weight[: len(tok)])
