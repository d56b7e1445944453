"""Evaluation: zero-shot classifier, probe, retrieval, generation scoring, embed export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from melp.eval.zeroshot import build_classifier, zero_shot_logits


class _LookupModel(torch.nn.Module):
    """Text latents looked up from a table; ECG latents are the (normalised) first D samples."""

    def __init__(self, table: dict[str, list[float]]):
        super().__init__()
        self.table = table
        self.calls: list[list[str]] = []

    def encode_text(self, texts):
        self.calls.append(list(texts))
        return torch.nn.functional.normalize(torch.tensor([self.table[t] for t in texts]), dim=1)

    def encode_ecg(self, ecg, lengths=None):
        return torch.nn.functional.normalize(ecg[:, 0, :2], dim=1)


def test_build_classifier_ensembles_prompts_by_value():
    table = {"a one.": [1.0, 0.0], "a two.": [0.0, 1.0], "b.": [3.0, -3.0]}
    model = _LookupModel(table)
    model.train()
    prompts = {"A": ["A one.", "a two."], "B": ["b."]}  # upper case is lowered before encoding
    w = build_classifier(model, ["B", "A"], prompts)
    s = 2**-0.5
    torch.testing.assert_close(w, torch.tensor([[s, s], [-s, s]]))  # (D=2, K=2), columns B, A
    assert model.training  # mode restored
    ecg = torch.zeros(2, 12, 5)
    ecg[0, 0, :2] = torch.tensor([1.0, 0.0])
    ecg[1, 0, :2] = torch.tensor([0.0, 2.0])
    torch.testing.assert_close(zero_shot_logits(model, ecg, w), torch.tensor([[s, s], [-s, s]]))


def test_build_classifier_names_missing_class():
    with pytest.raises(KeyError, match="ZZZ"):
        build_classifier(_LookupModel({}), ["NORM", "ZZZ"])


# ----------------------------------------------------------------------------- retrieval


def test_retrieval_metrics_on_constructed_similarity():
    import numpy as np

    from melp.eval.retrieval import ranks, retrieval_metrics

    # 4 queries x 12 candidates, correct candidate = diagonal; place it at ranks 1, 3, 6 and 12
    sim = np.tile(np.linspace(1.0, 0.0, 12), (4, 1))  # column j has the (j+1)-th best score
    truth = np.zeros((4, 12), dtype=bool)
    for q, col in enumerate([0, 2, 5, 11]):
        truth[q, col] = True
    np.testing.assert_array_equal(ranks(sim, truth), [1, 3, 6, 12])
    m = retrieval_metrics(sim, truth)
    assert m["R@1"] == 0.25 and m["R@5"] == 0.5 and m["R@10"] == 0.75
    assert m["median_rank"] == 4.5 and m["mean_rank"] == 5.5


def test_retrieval_ties_count_against_and_several_correct():
    import numpy as np

    from melp.eval.retrieval import ranks

    sim = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9]])
    truth = np.array([[True, False, False], [True, False, True]])
    # row 0: one wrong candidate ties with the correct one -> rank 2;
    # row 1: best correct is 0.9 (col 2), the wrong col 1 ties -> rank 2
    np.testing.assert_array_equal(ranks(sim, truth), [2, 2])
    with pytest.raises(ValueError, match="at least one correct"):
        ranks(sim, np.zeros_like(truth))


# ----------------------------------------------------------------------------- generation scores


def test_text_scores_by_value():
    from melp.eval.generation import text_scores

    refs = ["sinus rhythm. normal ecg.", "atrial fibrillation. left bundle branch block."]
    perfect = text_scores(refs, refs)
    assert perfect["bleu4"] == pytest.approx(100.0) and perfect["rougeL"] == pytest.approx(1.0)
    # ROUGE-L of "sinus rhythm." vs "sinus rhythm. normal ecg.": LCS 2 tokens, P=1, R=2/4 -> F=2/3
    part = text_scores(["sinus rhythm.", "atrial fibrillation. left bundle branch block."], refs)
    assert part["rougeL"] == pytest.approx((2 / 3 + 1) / 2)
    assert 0 < part["bleu4"] < 100
    with pytest.raises(ValueError, match="references"):
        text_scores(["a"], refs)


# ----------------------------------------------------------------------------- probe head


def test_linear_head_learns_separable_features_and_stops_early():
    import numpy as np

    from melp.eval.probe import HeadConfig, predict_head, train_linear_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0.5], axis=1).astype(np.float32)
    cfg = HeadConfig(epochs=60, patience=5, seed=1)
    head, info = train_linear_head(x[:200], y[:200], x[200:250], y[200:250], cfg)
    from melp.eval.metrics import macro_auroc

    assert macro_auroc(y[250:], predict_head(head, x[250:])) > 0.95
    assert info["best_val_auroc"] == max(h["val_macro_auroc"] for h in info["history"])
    assert info["epochs_run"] <= 60
    # deterministic: same seed -> same head
    head2, _ = train_linear_head(
        x[:200], y[:200], x[200:250], y[200:250], HeadConfig(epochs=60, patience=5, seed=1)
    )
    torch.testing.assert_close(head.weight, head2.weight)


# ----------------------------------------------------------------------------- real store + tiny model

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A store of 8 real PTB-XL mini records per fold (72) and the tiny `melp-test` model."""
    import melp
    from melp.data.readers.ptbxl import subset_root
    from melp.data.store import ECGStore, prepare

    tmp = tmp_path_factory.mktemp("eval")
    root = subset_root(DATA / "ptbxl-mini", tmp / "root", per_fold=8)
    prepare("ptbxl", root, tmp / "store", workers=0, progress=False)
    torch.manual_seed(0)
    return melp.create_model("melp-test").eval(), ECGStore(tmp / "store"), tmp


def test_zeroshot_end_to_end_matches_direct_computation(tiny):
    import json

    import numpy as np
    import pandas as pd

    from melp.data.datasets import DownstreamDataset, batches
    from melp.eval.metrics import macro_auroc
    from melp.eval.splits import portion_rows
    from melp.eval.zeroshot import run_zeroshot

    model, store, tmp = tiny
    rows = portion_rows(store, folds=[9])
    res = run_zeroshot(model, store, "ptbxl_super_class", rows, out=tmp / "zs", n_boot=100)
    # recompute by hand: class embedding = normalised mean of its phrasings' text latents
    from melp.eval.prompts import load_prompts

    prompts = load_prompts()
    ds = DownstreamDataset(store, "super_class", rows)
    y, classes = ds.label_matrix(), ds.classes
    assert (
        res["n_records"]
        == len(ds)
        == len(rows) - store.manifest["labels_super_class"].iloc[rows].isna().sum()
    )
    with torch.no_grad():
        w = torch.stack(
            [torch.nn.functional.normalize(model.encode_text(prompts[c]).mean(0), dim=0) for c in classes], 1
        )
        batch = next(batches(ds, 1000))
        scores = (model.encode_ecg(batch["ecg"], lengths=batch["length"]) @ w).numpy()
    assert res["macro_auroc"] == pytest.approx(macro_auroc(y, scores), abs=1e-5)
    saved = json.loads((tmp / "zs" / "zeroshot_super_class.json").read_text())
    assert saved["macro_auroc"] == pytest.approx(res["macro_auroc"])
    assert saved["ci"]["auroc"]["lo"] <= saved["ci"]["auroc"]["hi"]
    table = pd.read_csv(tmp / "zs" / "zeroshot_super_class_per_class.csv")
    assert list(table["class"]) == classes
    assert (tmp / "zs" / "zeroshot_super_class_roc.png").stat().st_size > 10_000
    sc = pd.read_csv(tmp / "zs" / "zeroshot_super_class_scores.csv")
    np.testing.assert_allclose(sc[[f"score_{c}" for c in classes]].to_numpy(), scores, atol=1e-4)


def test_probe_splits_and_random_baseline(tiny, capsys):
    import json

    from melp.cli import main
    from melp.eval.cli import _random_twin
    from melp.eval.probe import HeadConfig, run_probe
    from melp.eval.splits import choose_splits

    model, store, tmp = tiny
    splits = choose_splits(store, val_fraction=0.2)
    # mini store has no fold 10: test = fold 9, val = 20% of the folds 1-8 patients
    assert set(store.manifest["fold"].iloc[splits.test]) == {9}
    assert set(store.manifest["fold"].iloc[splits.train]) <= set(range(1, 9))
    pat = store.manifest["patient"]
    assert not set(pat.iloc[splits.train]) & set(pat.iloc[splits.val])
    res = run_probe(model, store, "super_class", splits, (0.5, 1.0), out=tmp / "probe", n_boot=0,
                    config=HeadConfig(epochs=3))  # fmt: skip
    labelled = store.manifest["labels_super_class"].iloc[splits.train].notna().sum()
    assert res["fractions"]["1"]["n_train"] == labelled
    assert res["fractions"]["0.5"]["n_train"] == round(0.5 * labelled)
    assert (tmp / "probe" / "probe_super_class.json").exists()
    # the random-init baseline: same architecture, weights drawn from --seed, global RNG untouched
    torch.manual_seed(123)
    state = torch.get_rng_state()
    twin, twin2, other = _random_twin(model, 7), _random_twin(model, 7), _random_twin(model, 8)
    assert torch.equal(torch.get_rng_state(), state)
    weights = {k: v for k, v in model.state_dict().items() if v.is_floating_point() and v.ndim >= 2}
    assert all(torch.equal(twin.state_dict()[k], twin2.state_dict()[k]) for k in weights)
    assert sum(not torch.equal(twin.state_dict()[k], v) for k, v in weights.items()) > 0.9 * len(weights)
    assert any(not torch.equal(twin.state_dict()[k], other.state_dict()[k]) for k in weights)
    base = run_probe(twin, store, "super_class", splits, (1.0,), n_boot=0, config=HeadConfig(epochs=3))
    assert base["method"] == "probe" and base["macro_auroc"]["1"] != res["macro_auroc"]["1"]
    model.save_pretrained(tmp / "probe_model")
    args = ["probe", "--model", str(tmp / "probe_model"), "--data", str(store.path), "--device", "cpu",
            "--task", "super_class", "--fractions", "1", "--epochs", "3", "--n-boot", "0", "--val-fraction",
            "0.2", "--out", str(tmp / "probe_cli"), "--random-init", "--seed", "7"]  # fmt: skip
    assert main(args) == 0
    saved = json.loads((tmp / "probe_cli" / "probe_random_super_class.json").read_text())
    assert saved["method"] == "probe_random"
    # the CLI baseline is the seed-7 twin (same splits seed): same number as the library call
    direct = run_probe(twin, store, "super_class", choose_splits(store, val_fraction=0.2, seed=7), (1.0,),
                       n_boot=0, config=HeadConfig(epochs=3, seed=7))  # fmt: skip
    assert saved["macro_auroc"]["1"] == pytest.approx(direct["macro_auroc"]["1"], abs=1e-9)


def test_retrieval_generation_identification_embed(tiny):
    import numpy as np

    from melp.eval.embed import embed_store, load_embeddings, save_embeddings
    from melp.eval.generation import run_generation
    from melp.eval.retrieval import patient_identification, run_retrieval

    model, store, tmp = tiny
    rows = store.select(folds=[9])
    r = run_retrieval(model, store, rows, out=tmp)
    assert (
        r["n_unique_reports"] <= len(rows)
        and 0 <= r["ecg_to_report"]["R@1"] <= r["ecg_to_report"]["R@10"] <= 1
    )
    g = run_generation(model, store, rows[:2], out=tmp, strategy="greedy", max_length=6)
    assert g["n"] == 2 and (tmp / "generation.csv").exists()
    emb = embed_store(model, store, rows[:5])
    assert emb["beats"].shape == (5, 12, 32) and emb["rhythm"].shape == (5, 32)
    np.testing.assert_allclose(emb["rhythm"], emb["beats"].mean(1), atol=1e-5)
    for suffix in (".npy", ".parquet"):
        back = load_embeddings(save_embeddings(emb, tmp / f"emb{suffix}"))
        assert back["id"] == emb["id"]
        for k in ("rhythm", "beats", "probe"):
            np.testing.assert_array_equal(back[k], emb[k])
    # patient identification (values by hand: test_eval_values): this subset has no repeated patient
    assert store.manifest["patient"].is_unique
    with pytest.raises(ValueError, match="no patient has two records"):
        patient_identification(model, store, np.arange(len(store)))


def test_finetune_trains_a_copy_and_reports_test_metrics(tiny):
    from melp.eval.finetune import FinetuneConfig, run_finetune
    from melp.eval.splits import choose_splits

    model, store, tmp = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    splits = choose_splits(store, val_fraction=0.2)
    res = run_finetune(
        model,
        store,
        "super_class",
        splits,
        (1.0,),
        out=tmp / "ft",
        n_boot=0,
        config=FinetuneConfig(epochs=2, batch_size=16, patience=1),
    )
    r = res["fractions"]["1"]
    assert 1 <= r["best_epoch"] <= r["epochs_run"] <= 2 and 0 <= r["macro_auroc"] <= 1
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])  # the caller's model is untouched
    # and the encoder itself was trained (not only the head): run finetune directly and compare
    from melp.eval.finetune import finetune

    clf, info = finetune(
        model, store, "super_class", splits.train, splits.val, FinetuneConfig(epochs=1, batch_size=16)
    )
    tuned = clf.model.state_dict()
    changed = [k for k in before if k.startswith("ecg_encoder.") and not torch.equal(tuned[k], before[k])]
    assert len(changed) > 0.5 * sum(k.startswith("ecg_encoder.") for k in before), changed[:5]


def test_cli_zeroshot_retrieve_embed(tiny, capsys):
    import json

    from melp.cli import main

    model, store, tmp = tiny
    model.save_pretrained(tmp / "model")
    args = ["--model", str(tmp / "model"), "--data", str(store.path), "--device", "cpu"]
    assert (
        main(
            [
                "zeroshot",
                *args,
                "--task",
                "super_class",
                "rhythm",
                "--folds",
                "9",
                "--n-boot",
                "20",
                "--out",
                str(tmp / "cli"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "zero-shot super_class: macro AUROC" in out and "zero-shot rhythm" in out
    assert "macro_auroc" in json.loads((tmp / "cli" / "zeroshot_super_class.json").read_text())
    assert main(["retrieve", *args, "--folds", "9", "--out", str(tmp / "cli")]) == 0
    assert main(["embed", *args, "--out", str(tmp / "cli" / "emb.parquet")]) == 0
    assert "wrote 72 embeddings" in capsys.readouterr().out


def test_cli_finetune_random_init_is_a_separate_baseline(tiny, capsys):
    import json

    from melp.cli import main

    model, store, tmp = tiny
    model.save_pretrained(tmp / "model_ft")
    args = [
        "finetune",
        "--model",
        str(tmp / "model_ft"),
        "--data",
        str(store.path),
        "--device",
        "cpu",
        "--task",
        "super_class",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--n-boot",
        "0",
        "--val-fraction",
        "0.2",
        "--out",
        str(tmp / "ft_cli"),
    ]
    assert main([*args, "--random-init"]) == 0
    assert "finetune_random super_class 100%: test macro AUROC" in capsys.readouterr().out
    res = json.loads((tmp / "ft_cli" / "finetune_random_super_class.json").read_text())
    assert res["method"] == "finetune_random" and 0 <= res["macro_auroc"]["1"] <= 1
    assert not (tmp / "ft_cli" / "finetune_super_class.json").exists()  # the pretrained run's name stays free


# ----------------------------------------------------------------------------- keeping a classifier
def _score_table(path):
    import pandas as pd

    return pd.read_csv(path)


def test_probe_save_reproduces_the_runs_test_scores_and_predicts_records(tiny, capsys):
    import json

    import numpy as np

    from melp.cli import main
    from melp.data.datasets import DownstreamDataset
    from melp.data.store import ECGStore
    from melp.eval.classifier import load_classifier, predict_store
    from melp.eval.metrics import max_f1_per_class
    from melp.eval.splits import choose_splits

    model, store, tmp = tiny
    store = ECGStore(store.path)  # as the CLI reads it (another test edits the fixture's manifest)
    model.save_pretrained(tmp / "model_p")
    clf_dir, out = tmp / "clf_probe", tmp / "probe_save"
    common = ["--model", str(tmp / "model_p"), "--data", str(store.path), "--device", "cpu"]
    args = ["probe", *common, "--task", "super_class", "--fractions", "0.5", "1", "--epochs", "5"]
    assert (
        main([*args, "--n-boot", "0", "--val-fraction", "0.2", "--out", str(out), "--save", str(clf_dir)])
        == 0
    )
    assert f"saved the 100% classifier to {clf_dir}" in capsys.readouterr().out
    names = sorted(p.name for p in clf_dir.iterdir())
    assert names == ["classifier.json", "config.json", "head.safetensors", "model.safetensors"]
    clf = load_classifier(clf_dir)
    meta = json.loads((clf_dir / "classifier.json").read_text())
    assert meta["method"] == "probe" and meta["fraction"] == 1.0 and clf.classes == store.tasks["super_class"]
    assert "validation portion" in meta["threshold_rule"]
    splits = choose_splits(store, val_fraction=0.2)
    # the saved classifier gives the run's own test scores (encoder + standardiser + head)
    test_rows = DownstreamDataset(store, "super_class", splits.test).rows  # the labelled test records
    test = predict_store(clf, store, test_rows)
    run_scores = _score_table(out / "probe_super_class_100pct_scores.csv")
    assert list(test["id"]) == list(run_scores["id"].astype(str))
    for c in clf.classes:
        np.testing.assert_allclose(test[f"p_{c}"], run_scores[f"score_{c}"], atol=2e-5)
    # thresholds: max F1 on the validation portion (not test), from those same scores
    val_ds = DownstreamDataset(store, "super_class", splits.val)
    val = predict_store(clf, store, val_ds.rows)
    y_val = val_ds.label_matrix()
    _, thr, _ = max_f1_per_class(y_val, val[[f"p_{c}" for c in clf.classes]].to_numpy())
    expected = [None if np.isnan(t) else float(t) for t in thr]
    for got, want in zip(clf.thresholds, expected):
        assert (got is None and want is None) or abs(got - want) < 1e-5
    decided = val[[f"pred_{c}" for c in clf.classes]].to_numpy(dtype=float, na_value=np.nan)
    probs = val[[f"p_{c}" for c in clf.classes]].to_numpy()
    for k, t in enumerate(clf.thresholds):
        if t is not None:
            np.testing.assert_array_equal(decided[:, k], (probs[:, k] >= t).astype(float))
    # predict: the whole store to CSV, then one raw WFDB record (wfdb lead order, through preprocess)
    assert (
        main(["predict", "--model", str(clf_dir), "--data", str(store.path), "--out", str(tmp / "p.csv")])
        == 0
    )
    table = _score_table(tmp / "p.csv")
    assert len(table) == len(store) and "predicted positives per class" in capsys.readouterr().out
    row = int(test_rows[0])
    record = tmp / "root" / str(store.manifest["path"].iloc[row])  # relative to the prepared root
    assert (
        main(["predict", "--model", str(clf_dir), "--record", str(record), "--out", str(tmp / "r.csv")]) == 0
    )
    printed = capsys.readouterr().out
    one = _score_table(tmp / "r.csv")
    assert len(one) == 1 and all(f"  {c} " in printed for c in clf.classes)
    same = test[test["id"] == str(store.manifest["id"].iloc[row])]
    for c in clf.classes:  # the store holds float16 signals; the record is read at full precision
        assert abs(float(one[f"p_{c}"][0]) - float(same[f"p_{c}"].iloc[0])) < 2e-3


def test_finetune_save_keeps_the_finetuned_encoder(tiny):
    import numpy as np

    import melp
    from melp.data.datasets import DownstreamDataset
    from melp.eval.classifier import load_classifier, predict_store
    from melp.eval.finetune import FinetuneConfig, run_finetune
    from melp.eval.splits import choose_splits

    model, store, tmp = tiny
    splits = choose_splits(store, val_fraction=0.2)
    cfg = FinetuneConfig(epochs=1, batch_size=16, patience=1)
    run_finetune(
        model,
        store,
        "super_class",
        splits,
        (1.0,),
        out=tmp / "ft_s",
        n_boot=0,
        config=cfg,
        save=tmp / "clf_ft",
    )
    clf = load_classifier(tmp / "clf_ft")
    assert not clf.model.has_text and clf.info["method"] == "finetune"
    saved = melp.load_model(tmp / "clf_ft").state_dict()
    changed = [k for k, v in saved.items() if not torch.equal(v, model.state_dict()[k])]
    assert any(k.startswith("ecg_encoder.") for k in changed)  # the fine-tuned encoder, not the original
    run_scores = _score_table(tmp / "ft_s" / "finetune_super_class_100pct_scores.csv")
    test = predict_store(clf, store, DownstreamDataset(store, "super_class", splits.test).rows)
    for c in clf.classes:
        np.testing.assert_allclose(test[f"p_{c}"], run_scores[f"score_{c}"], atol=2e-5)


def test_encoder_only_model_embeds_and_probes_and_text_commands_say_one_line(tiny, capsys, caplog):
    from melp.cli import main

    model, store, tmp = tiny
    model.encoder_only().save_pretrained(tmp / "enc_only")
    common = ["--model", str(tmp / "enc_only"), "--data", str(store.path), "--device", "cpu"]
    for cmd in (["zeroshot", "--task", "super_class"], ["retrieve"], ["generate"]):
        caplog.clear()
        assert main([cmd[0], *common, *cmd[1:], "--out", str(tmp / "x")]) == 2
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "needs a text tower" in errors[0].getMessage()
        assert "\n" not in errors[0].getMessage() and "Traceback" not in capsys.readouterr().err
    assert main(["embed", *common, "--out", str(tmp / "enc_emb.npy")]) == 0
    probe = ["probe", *common, "--task", "super_class", "--fractions", "1", "--epochs", "2", "--n-boot", "0"]
    assert main([*probe, "--val-fraction", "0.2", "--out", str(tmp / "enc_probe")]) == 0
    assert "probe super_class 100%" in capsys.readouterr().out


def test_eval_commands_default_to_the_models_normalisation(tiny, capsys):
    import numpy as np

    import melp
    from melp.cli import main
    from melp.eval.embed import embed_store, load_embeddings

    model, store, tmp = tiny
    cfg = dict(model.config, ecg={**model.config["ecg"], "normalize": "zscore"})
    zs = melp.create_model(cfg).eval()
    zs.load_state_dict(model.state_dict())
    zs.save_pretrained(tmp / "model_z")
    args = [
        "embed",
        "--model",
        str(tmp / "model_z" / "model.safetensors"),  # the CLI takes the folder or its weights file
        "--data",
        str(store.path),
        "--device",
        "cpu",
        "--folds",
        "9",
    ]
    assert main([*args, "--out", str(tmp / "z.npy")]) == 0
    got = load_embeddings(tmp / "z.npy")["probe"]
    rows = store.select(folds=[9])
    np.testing.assert_allclose(got, embed_store(zs, store, rows, normalize="zscore")["probe"], atol=1e-6)
    assert np.abs(got - embed_store(zs, store, rows, normalize="minmax")["probe"]).max() > 1e-3
