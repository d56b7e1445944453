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
