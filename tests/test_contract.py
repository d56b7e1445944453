"""The model's input contract and the one data path, end to end.

* padding: the valid length reaches the encoder and both poolers, so a short record's outputs do not
  depend on what its padding holds (every encoder, every output, generation included);
* training validation and ``melp zeroshot`` read the same records the same way: equal AUROC on the
  same store, folds and task, for the four PTB-XL tasks;
* a bidirectional text tower cannot train the caption term or generate (it would see the future).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import melp
from melp.losses import MELPLoss
from melp.models import get_config

DATA = Path(__file__).parents[1] / "data"


def _short_record_pair(n_samples: int, valid: int, seed: int = 0):
    """Two copies of a batch whose first record has ``valid`` samples: zero padding vs loud noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 12, n_samples, generator=g)
    x[0, :, valid:] = 0
    noisy = x.clone()
    noisy[0, :, valid:] = 5 * torch.randn(12, n_samples - valid, generator=g)
    return x, noisy, torch.tensor([valid, n_samples])


ENCODERS = {
    "wav2vec2": None,  # melp-test's own
    "resnet1d": {
        "type": "resnet1d",
        "sample_rate": 100,
        "n_samples": 1000,
        "channels": [8, 16],
        "blocks": [1, 1],
    },
}


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_padding_never_changes_a_short_records_outputs(encoder):
    cfg = get_config("melp-test")
    if ENCODERS[encoder]:
        cfg["ecg"] = ENCODERS[encoder]
    torch.manual_seed(0)
    model = melp.create_model(cfg).eval()
    t = model.config["ecg"]["n_samples"]
    x, noisy, lengths = _short_record_pair(t, valid=6 * t // 10)  # a 6 s record in a 10 s window
    with torch.no_grad():
        clean, loud = model.embed(x, lengths=lengths), model.embed(noisy, lengths=lengths)
        unmasked = model.embed(noisy)
        for key in ("rhythm", "beats", "probe"):
            torch.testing.assert_close(loud[key], clean[key], rtol=0, atol=1e-6)
            assert (unmasked[key][0] - clean[key][0]).abs().max() > 1e-3, key  # the mask is what protects it
            torch.testing.assert_close(
                unmasked[key][1], clean[key][1], rtol=0, atol=1e-5
            )  # full record as is
        torch.testing.assert_close(
            model.encode_ecg(noisy, lengths), model.encode_ecg(x, lengths), rtol=0, atol=1e-6
        )
        ids_clean = model.generate(x, strategy="greedy", max_length=8, lengths=lengths)
        ids_loud = model.generate(noisy, strategy="greedy", max_length=8, lengths=lengths)
    assert ids_clean == ids_loud


def test_wav2vec2_padded_record_equals_the_record_at_its_own_length():
    # zero-padded frames must be invisible: to the stem's GroupNorm, the positional convolution (it pads
    # with zeros itself), the transformer's attention and both poolers
    torch.manual_seed(0)
    model = melp.create_model("melp-test").eval()
    x = torch.randn(1, 12, 1000)

    def heads(tokens, mask):  # both poolers on encoder tokens (the model's public input is fixed-length)
        return (*model.beat_embeddings(tokens, mask), model.caption_context(tokens, mask))

    with torch.no_grad():
        own = heads(*model.ecg_encoder(x[:, :, :600]))  # the record at its own length: no padding at all
        noisy = torch.cat([x[:, :, :600], torch.randn(1, 12, 400)], -1)
        padded = heads(*model.ecg_tokens(noisy, torch.tensor([600])))
    for got, want in zip(padded, own):  # probe (pre-P), beats (after P), caption tokens
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_wav2vec2_masked_group_norm_equals_the_unpadded_record():
    from melp.models.encoders.wav2vec2 import Wav2Vec2Encoder

    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(get_config("melp-test")["ecg"]).eval()
    x = torch.randn(1, 12, 1000)
    with torch.no_grad():
        short = enc.stem(x[:, :, :600])  # the record at its own length
        padded = enc.stem(torch.cat([x[:, :, :600], torch.zeros(1, 12, 400)], -1), torch.tensor([600]))
    n = short.shape[-1]
    assert int(enc.output_lengths(torch.tensor([600]))) == n  # 600 samples -> 75 frames of 8
    torch.testing.assert_close(padded[..., :n], short, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def ptbxl_store(tmp_path_factory):
    from melp.data.readers.ptbxl import subset_root
    from melp.data.store import prepare

    tmp = tmp_path_factory.mktemp("contract")
    root = subset_root(DATA / "ptbxl-mini", tmp / "root", per_fold=6)
    prepare("ptbxl", root, tmp / "store", workers=0, progress=False)
    return tmp / "store"


def test_training_validation_equals_melp_zeroshot_for_the_four_ptbxl_tasks(ptbxl_store, tmp_path):
    from melp.data.store import ECGStore
    from melp.eval.zeroshot import run_zeroshot
    from melp.train.config import apply_overrides, load_config
    from melp.train.run import pretrain

    tasks = ["super_class", "sub_class", "form", "rhythm"]
    cfg = load_config("melp-tiny")
    cfg = apply_overrides(cfg, [f"data.store={ptbxl_store}", f"out={tmp_path / 'run'}", "model.name=melp-test",
                                "data.folds=1,2,3,4,5,6,7,8", "data.batch_size=8", "trainer.max_steps=2",
                                "val.every_n_steps=2", "trainer.progress_bar=false", "val.batch_size=5"])  # fmt: skip
    from melp.train.config import ValSetConfig

    cfg.val.sets = [ValSetConfig(task=t, folds=[9], name=t) for t in tasks]
    torch.manual_seed(0)
    summary = pretrain(cfg)
    logged = {t: float(summary["module"].trainer.callback_metrics[f"val/{t}_auroc"]) for t in tasks}
    model = melp.load_model(tmp_path / "run" / "best_model")
    store = ECGStore(ptbxl_store)
    rows = store.select(folds=[9])
    for task in tasks:
        res = run_zeroshot(model, store, task, rows, n_boot=0)
        assert res["macro_auroc"] == pytest.approx(logged[task], abs=1e-6), task
    # and both left out the records without a statement of the task (here: form and rhythm lose some)
    n_form = run_zeroshot(model, store, "form", rows, n_boot=0)["n_records"]
    assert n_form == store.manifest["labels_form"].iloc[rows].notna().sum() < len(rows)


def test_bidirectional_text_tower_refuses_captioning_and_generation():
    torch.manual_seed(0)
    model = melp.create_model("melp-test", text={"causal": False})
    enc = model.tokenize(["sinus rhythm. normal ecg.", "atrial fibrillation."])
    out = model(torch.randn(2, 12, 1000), enc["input_ids"], enc["attention_mask"])
    assert out["caption_logits"] is None and out["caption_targets"] is None
    with pytest.raises(ValueError, match="causal text tower"):
        MELPLoss()(**out)
    clip_only = MELPLoss(caption=0.0)(**out)  # the CLIP and beat terms stay valid
    assert torch.isfinite(clip_only["total"]) and clip_only["caption"] == 0
    with pytest.raises(ValueError, match="causal text tower"):
        model.generate(torch.randn(1, 12, 1000), strategy="greedy", max_length=6)


def test_lengths_are_checked():
    model = melp.create_model("melp-test").eval()
    with pytest.raises(ValueError, match=r"lengths must be \(B,\) integer"):
        model.embed(torch.randn(2, 12, 1000), lengths=torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match=r"lengths must be \(B,\) integer"):
        model.embed(torch.randn(2, 12, 1000), lengths=torch.tensor([100]))
