"""Model contract tests: every registered config trains (forward/backward), embeddings, persistence."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import melp
from melp.losses import MELPLoss
from melp.models.config import resolve_config
from melp.models.encoders import encoder_names, encoder_spec
from melp.models.encoders.wav2vec2 import Wav2Vec2Encoder, grad_scale
from melp.models.registry import get_config

REPORTS = [
    "sinus rhythm. left axis deviation. abnormal ecg.",
    "atrial fibrillation with rapid ventricular response. abnormal ecg.",
    "sinus bradycardia. otherwise normal ecg.",
]

TINY_TEXT = {
    "name_or_path": "minilm",
    "max_length": 24,
    "from_config": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 64,
    },
}


def _reduced(name: str) -> dict:
    """Overrides that keep a config's structure (ECG type, causal, freezing) at CI size: the encoder's
    own registered test size, a tiny text tower and small heads (the same for every config)."""
    cfg = get_config(name)
    spec = encoder_spec(cfg["ecg"]["type"])
    text = dict(TINY_TEXT, freeze_layers=min(cfg["text"]["freeze_layers"], 1), causal=cfg["text"]["causal"])
    return {
        "embed_dim": 32,
        "ecg": {"sample_rate": 100, "n_samples": 400, **spec.test_size},
        "text": text,
        "heads": {"beat_heads": 2, "n_caption_queries": 4, "caption_heads": 2},
        "decoder": {"layers": 1, "heads": 2},
    }


@pytest.mark.parametrize("name", encoder_names())
def test_every_encoder_meets_the_contract(name):
    """Every registered encoder, at its registered test size: tokens (B, N, width) with N from
    output_lengths, a padding mask that hides the padding, and a gradient for every parameter."""
    from melp.models.encoders import build_encoder

    spec = encoder_spec(name)
    cfg = dataclasses.asdict(spec.config(**{"sample_rate": 100, "n_samples": 400, **spec.test_size}))
    torch.manual_seed(0)
    enc = build_encoder(cfg).eval()
    x = torch.randn(3, cfg["in_leads"], 400)
    tokens, mask = enc(x)
    n = int(enc.output_lengths(torch.tensor([400])))
    assert tokens.shape == (3, n, enc.width) and mask is None
    assert enc.stride >= 1 and n >= 400 // enc.stride - 1
    lengths = torch.tensor([250, 400, 120])
    noisy = x.clone()
    for b, k in enumerate(lengths.tolist()):
        noisy[b, :, k:] = 10 * torch.randn(cfg["in_leads"], 400 - k)
    t1, m1 = enc(x, lengths)
    t2, m2 = enc(noisy, lengths)
    assert torch.equal(m1, m2) and m1.shape == (3, n)
    assert m1.sum(1).tolist() == enc.output_lengths(lengths).clamp_min(1).tolist()
    torch.testing.assert_close(t1[m1], t2[m2], rtol=0, atol=1e-5)  # valid tokens ignore the padding
    enc.train()
    out, _ = enc(x)
    out.square().mean().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: {pname} got no gradient"


@pytest.fixture(scope="module")
def test_model():
    torch.manual_seed(0)
    return melp.create_model("melp-test")


def _batch(model, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 12, model.config["ecg"]["n_samples"], generator=g)
    return x, model.tokenize(REPORTS[:b])


@pytest.mark.parametrize("name", melp.list_models())
def test_every_registered_config_forward_backward_gradients(name):
    torch.manual_seed(0)
    model = melp.create_model(name, **_reduced(name))
    model.train()
    x, enc = _batch(model)
    out = model(ecg=x, **enc)
    b, d, q = 3, model.config["embed_dim"], model.config["heads"]["n_beat_queries"]
    m, s = model.config["max_sentences"], enc["input_ids"].shape[1]
    assert out["ecg_latent"].shape == (b, d) and out["text_latent"].shape == (b, d)
    assert out["beats"].shape == (b, q, d) and out["sentences"].shape == (b, m, d)
    assert out["sentence_mask"].sum(1).tolist() == [3, 2, 2]
    targets = enc["input_ids"][:, 1:]
    if model.config["decoder"]["sparse_logits"]:  # flattened to the non-pad targets
        real = enc["attention_mask"][:, 1:].bool()
        assert out["caption_logits"].shape == (int(real.sum()), len(model.tokenizer))
        assert torch.equal(out["caption_targets"], targets[real])
    else:
        assert out["caption_logits"].shape == (b, s - 1, len(model.tokenizer))
        assert torch.equal(out["caption_targets"], targets)
    torch.testing.assert_close(out["ecg_latent"].norm(dim=-1), torch.ones(b))
    losses = MELPLoss()(**out)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    n_frozen = model.config["text"]["freeze_layers"]
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{name}: {pname} got a zero gradient"
        else:
            assert p.grad is None
            assert any(pname.startswith(f"text.bert.encoder.layer.{i}.") for i in range(n_frozen)), pname
    frozen = sum(not p.requires_grad for p in model.parameters())
    assert (frozen > 0) == (n_frozen > 0)


def test_small_encoder_parameter_budget_matches_paper():
    enc = Wav2Vec2Encoder(get_config("melp-small")["ecg"])

    def count(mod):
        return sum(p.numel() for p in mod.parameters()) / 1e6

    assert count(enc) == pytest.approx(62.0, abs=0.1)
    assert count(enc.stem) == pytest.approx(0.40, abs=0.01)
    assert count(enc.feature_norm) + count(enc.input_proj) == pytest.approx(0.20, abs=0.01)
    assert count(enc.pos_conv) == pytest.approx(4.72, abs=0.01)
    assert count(enc.layers) == pytest.approx(56.7, abs=0.05)
    x = torch.randn(1, 12, 5000)
    with torch.no_grad():
        tokens, mask = enc.eval()(x)
        assert tokens.shape == (1, 312, 768) and mask is None  # spec §3.1: 312 frames of 16 samples


def test_positional_conv_weight_norm_has_one_magnitude_per_kernel_position():
    enc = Wav2Vec2Encoder(get_config("melp-test")["ecg"])
    g = enc.pos_conv.conv.parametrizations.weight.original0
    assert g.shape == (1, 1, 8)
    w = enc.pos_conv.conv.weight  # (D, D / groups, k)
    torch.testing.assert_close(w.norm(dim=(0, 1)), g.flatten().abs(), atol=1e-5, rtol=1e-5)


def test_grad_scale_scales_only_the_gradient():
    x = torch.randn(4, requires_grad=True)
    y = grad_scale(x, 0.1)
    (y * 3).sum().backward()
    assert torch.equal(y, x) and torch.allclose(x.grad, torch.full((4,), 0.3))


def test_embed_probe_rhythm_and_latents_are_consistent(test_model):
    model = test_model.eval()
    x, enc = _batch(model)
    with torch.no_grad():
        emb = model.embed(x)
        out = model(ecg=x, **enc)
        torch.testing.assert_close(emb["rhythm"], emb["beats"].mean(1))
        torch.testing.assert_close(emb["probe"] @ model.beat_proj, emb["rhythm"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.encode_ecg(x), F.normalize(emb["rhythm"], dim=-1))
        torch.testing.assert_close(model.encode_ecg(x), out["ecg_latent"])
        torch.testing.assert_close(model.encode_text(REPORTS), out["text_latent"])
        torch.testing.assert_close(model.encode_text(enc), out["text_latent"])
    model.train()


def test_logit_scale_init_clamp_and_no_weight_decay(test_model):
    model = copy.deepcopy(test_model)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == 0.0
    nwd = model.no_weight_decay()
    assert {"logit_scale", "beat_pooler.query", "caption_pooler.query", "beat_norm.weight"} <= nwd
    assert "beat_proj" not in nwd and "decoder.out_proj" not in nwd
    params = dict(model.named_parameters())
    assert all(params[n].ndim == 1 for n in nwd if not n.endswith("query") and n != "logit_scale")


def test_save_load_round_trip_is_bit_exact(test_model, tmp_path):
    model = test_model.eval()
    model.save_pretrained(tmp_path / "m")
    loaded = melp.load_model(tmp_path / "m")
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x, enc = _batch(model)
    with torch.no_grad():
        a, b = model(ecg=x, **enc), loaded(ecg=x, **enc)
    for k, v in a.items():
        assert torch.equal(v, b[k]) if torch.is_tensor(v) else v == b[k], k
    assert loaded.config == model.config
    assert (
        loaded.tokenize(["sinus rhythm."])["input_ids"].tolist()
        == model.tokenize(["sinus rhythm."])["input_ids"].tolist()
    )
    model.train()


def test_load_rejects_missing_or_unexpected_weights(test_model, tmp_path):
    from safetensors.torch import load_file, save_file

    test_model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    state = load_file(str(path))
    state.pop("beat_proj")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(path))
    with pytest.raises(RuntimeError, match=r"missing=\['beat_proj'\].*unexpected=\['extra.weight'\]"):
        melp.load_model(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="config.json"):
        melp.load_model(tmp_path / "m" / "tokenizer")


def test_malformed_configs_fail_loudly():
    from melp.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown config key 'ecg\.layer' \(valid keys here: .*layers"):
        get_config("melp-test", ecg={"layer": 3})
    with pytest.raises(ConfigError, match="unknown config key 'foo'"):
        resolve_config({"foo": 1})
    with pytest.raises(
        ValueError, match=r"ecg.type='lstm' unknown; choose one of \['resnet1d', 'wav2vec2'\]"
    ):
        get_config("melp-test", ecg={"type": "lstm"})
    with pytest.raises(ConfigError, match=r"config key 'text\.causal': expected bool, got str 'yes'"):
        get_config("melp-test", text={"causal": "yes"})
    with pytest.raises(ConfigError, match=r"config key 'ecg\.conv_layers\.0\.1': expected int"):
        get_config("melp-test", ecg={"conv_layers": [[32, 2.5, 2]]})
    with pytest.raises(ConfigError, match=r"ecg.conv_layers entries must be \[channels, kernel, stride\]"):
        get_config("melp-test", ecg={"conv_layers": [[32, 2]]})
    with pytest.raises(ConfigError, match="heads.n_beat_queries must be positive"):
        get_config("melp-test", heads={"n_beat_queries": 0})
    with pytest.raises(ConfigError, match="text.padding must be"):
        get_config("melp-test", text={"padding": "shortest"})
    with pytest.raises(ValueError, match="unknown model"):
        melp.create_model("melp-nonexistent")


def test_paper_config_values():
    cfg = get_config("melp-small")
    assert cfg["ecg"]["width"] == 768 and cfg["ecg"]["layers"] == 8 and cfg["ecg"]["sample_rate"] == 500
    assert cfg["text"] == {
        "name_or_path": "fuyingw/heart_bert",
        "from_config": None,
        "causal": True,
        "max_length": 128,
        "freeze_layers": 6,
        "freeze_embeddings": False,  # the paper trains the embeddings
        "padding": "longest",  # same values as padding to 128 (test_dynamic_padding_...), cheaper
    }
    assert cfg["heads"]["n_beat_queries"] == 12 and cfg["embed_dim"] == 256
    assert cfg["decoder"] == {
        "layers": 6,
        "heads": 8,
        "mlp_ratio": 4.0,
        "sparse_logits": False,
        "caption_vocab": None,
    }


def test_create_model_loads_named_text_checkpoint_weights():
    from transformers import BertModel

    from melp.text.tokenizer import resolve_text_path

    model = melp.create_model("melp-test", text_model="minilm")
    ref = BertModel.from_pretrained(resolve_text_path("minilm"))
    w = model.text.bert.embeddings.word_embeddings.weight
    assert w.shape[0] == ref.config.vocab_size + 1  # [BOS] row added
    assert torch.equal(w[:-1], ref.embeddings.word_embeddings.weight)
    assert torch.equal(
        model.text.bert.encoder.layer[5].output.dense.weight, ref.encoder.layer[5].output.dense.weight
    )
    assert model.decoder.ln_final.normalized_shape == (384,)


def test_wrong_lead_count_or_length_is_rejected_naming_the_contract(test_model):
    for bad in (torch.randn(2, 8, 1000), torch.randn(2, 12, 999), torch.randn(12, 1000)):
        for call in (test_model.encode_ecg, test_model.embed, test_model.ecg_tokens):
            with pytest.raises(
                ValueError, match=r"expects \(B, 12, 1000\): leads I, II, III, aVR, aVF.*100 Hz"
            ):
                call(bad)
    with pytest.raises(ValueError, match=r"model.preprocess"):
        test_model(torch.randn(2, 12, 500), **test_model.tokenize(["sinus rhythm."] * 2))


def test_attention_maps_values(test_model):
    from melp.eval.beats import attention_maps
    from melp.losses.beat import beat_attention

    model = test_model.eval()
    x = torch.randn(12, 1000, generator=torch.Generator().manual_seed(2))
    maps = attention_maps(model, x, "sinus rhythm. normal ecg. borderline")
    q = model.config["heads"]["n_beat_queries"]
    assert maps["sentences"] == ["sinus rhythm.", "normal ecg.", "borderline"]
    assert maps["frame_rate"] == 100 / 8  # 100 Hz input, conv stem stride 4 * 2
    assert maps["beat_time"].shape == (q, 125)
    torch.testing.assert_close(maps["beat_time"].sum(-1), torch.ones(q))
    sb = maps["sentence_beat"]
    assert sb.shape == (3, q)
    torch.testing.assert_close(sb.sum(-1), torch.ones(3))
    # the same beta as the beat loss: softmax over beats of tau1 * softmax over sentences of v.e
    with torch.no_grad():
        out = model(ecg=x[None], **model.tokenize(["sinus rhythm. normal ecg. borderline"]))
        beats, sents = out["beats"][0], out["sentences"][0][out["sentence_mask"][0]]
        a = (beats @ sents.T).softmax(-1)  # (Q, 3)
        torch.testing.assert_close(sb, (4.0 * a.T).softmax(-1))
        torch.testing.assert_close(sb, beat_attention(beats, sents))
    model.train()


def test_batch_without_any_sentence_trains_without_nan(test_model):
    model = copy.deepcopy(test_model).train()
    x = torch.randn(2, 12, 1000, generator=torch.Generator().manual_seed(3))
    out = model(ecg=x, **model.tokenize(["", ""]))
    assert not out["sentence_mask"].any() and torch.all(out["sentences"] == 0)
    losses = MELPLoss()(**out)
    assert losses["beat"].item() == 0.0 and torch.isfinite(losses["total"])
    losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.all(model.sent_proj.weight.grad == 0)


def test_sparse_logits_and_compact_vocab_give_the_dense_loss():
    """sparse_logits only drops ignored positions; a compact caption vocabulary is a different
    (smaller) softmax, checked against a hand computation from the dense hidden states."""
    torch.manual_seed(0)
    model = melp.create_model("melp-test").eval()
    x, enc = _batch(model)
    dense = MELPLoss()(**model(ecg=x, **enc))
    model.config["decoder"]["sparse_logits"] = True
    sparse = MELPLoss()(**model(ecg=x, **enc))
    torch.testing.assert_close(sparse["caption"], dense["caption"])
    ids = model.restrict_caption_vocab(REPORTS)
    assert model.eos_id in ids and model.pad_id not in ids
    out = model(ecg=x, **enc)
    assert out["caption_logits"].shape[-1] == len(ids) + 1
    # by hand: log-softmax over the K+1 compact classes at every real target position
    feats, _ = model.text_features(enc["input_ids"], enc["attention_mask"])
    hidden = model.decoder.hidden(feats[:, :-1], model.caption_context(*model.ecg_tokens(x)))
    logits = hidden @ model.decoder.out_proj  # (B, S-1, K+1)
    real = enc["attention_mask"][:, 1:].bool()
    index = {t: i for i, t in enumerate(ids)}
    tgt = torch.tensor([index.get(int(t), len(ids)) for t in enc["input_ids"][:, 1:][real]])
    expected = torch.nn.functional.cross_entropy(logits[real], tgt)
    torch.testing.assert_close(MELPLoss(caption=1.0)(**out)["caption"], expected)
    # generation only ever emits ids of the compact vocabulary
    text_ids = model.tokenizer(model.generate(x, strategy="greedy", max_length=10), add_special_tokens=False)
    assert set(sum(text_ids["input_ids"], [])) <= set(ids)


def test_dynamic_padding_encodes_like_full_padding():
    """text.padding="longest" gives the same latents and caption loss as padding to max_length."""
    torch.manual_seed(0)
    model = melp.create_model("melp-test").eval()
    x = torch.randn(3, 12, model.config["ecg"]["n_samples"])
    short = model.tokenize(REPORTS[:3])
    model.config["text"]["padding"] = "max_length"
    full = model.tokenize(REPORTS[:3])
    assert short["input_ids"].shape[1] < full["input_ids"].shape[1]
    torch.testing.assert_close(model.encode_text(short), model.encode_text(full))
    a, b = model(ecg=x, **short), model(ecg=x, **full)
    for key in ("text_latent", "sentences"):
        torch.testing.assert_close(a[key], b[key])
    torch.testing.assert_close(MELPLoss()(**a)["caption"], MELPLoss()(**b)["caption"])


def test_text_feature_cache_matches_the_frozen_tower():
    """With a frozen text tower, cached features give the same latents and losses (eval mode)."""
    torch.manual_seed(0)
    model = melp.create_model("melp-test")
    with pytest.raises(ValueError, match="fully frozen"):
        model.cache_text_features()
    model.text.requires_grad_(False)
    model.eval()
    x, enc = _batch(model)
    ref = model(ecg=x, **enc)
    model.cache_text_features()
    for _ in range(2):  # first call fills the cache, second is served from it
        out = model(ecg=x, **enc)
        for key in ("text_latent", "sentences"):
            torch.testing.assert_close(out[key], ref[key])
        real = ref["caption_targets"] != ref["pad_id"]  # pad positions are ignored by the loss
        torch.testing.assert_close(out["caption_logits"][real], ref["caption_logits"][real])
        torch.testing.assert_close(MELPLoss()(**out)["total"], MELPLoss()(**ref)["total"])
    assert len(model._text_cache) == len(set(REPORTS[:3]))
    losses = MELPLoss()(**out)
    losses["total"].backward()
    assert all(p.grad is None for p in model.text.parameters())


def test_documented_parameter_table_is_generated_from_the_configs():
    from pathlib import Path

    from melp.models.describe import render

    page = (Path(__file__).parents[1] / "docs" / "model.md").read_text()
    assert render(page) == page, (
        "docs/model.md is stale: run python -m melp.models.describe --write docs/model.md"
    )
