"""Evaluation: zero-shot classifier, probe, retrieval, generation scoring, embed export."""

from __future__ import annotations

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

    def encode_ecg(self, ecg):
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
