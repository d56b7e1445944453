"""Metrics by value: hand-computed AUROC, max-F1 and accuracy; bootstrap reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from melp.eval.metrics import (
    auroc_per_class,
    bootstrap_mean_auroc,
    bootstrap_metrics,
    classification_metrics,
    macro_auroc,
    max_f1_per_class,
)

# class 0: positives score 0.9 and 0.4, negatives 0.8 and 0.1 -> 3 of 4 pairs ordered -> AUROC 0.75
# class 1: constant labels -> no AUROC, skipped by the macro average
# class 2: perfect ranking -> AUROC 1
Y = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
S = np.array([[0.9, 0.3, 0.7], [0.8, 0.2, 0.1], [0.4, 0.6, 0.2], [0.1, 0.5, 0.8]])


def test_auroc_by_hand():
    auc = auroc_per_class(Y, S)
    assert auc[0] == pytest.approx(0.75)
    assert np.isnan(auc[1])
    assert auc[2] == pytest.approx(1.0)
    assert macro_auroc(Y, S) == pytest.approx((0.75 + 1.0) / 2)


def test_auroc_ties_count_half_and_torch_input():
    y = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    s = torch.tensor([[0.5], [0.5], [0.9], [0.1]])
    # pairs (pos, neg): (0.5,0.5)=1/2, (0.5,0.1)=1, (0.9,0.5)=1, (0.9,0.1)=1 -> 3.5/4
    assert macro_auroc(y, s) == pytest.approx(0.875)


def test_auroc_matches_sklearn_on_random_data():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, 4)).astype(float)
    s = np.round(rng.normal(size=(200, 4)) + y, 1)  # rounding creates ties
    ours = auroc_per_class(y, s)
    ref = [roc_auc_score(y[:, k], s[:, k]) for k in range(4)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_all_constant_gives_nan():
    assert np.isnan(macro_auroc(np.zeros((3, 2)), np.ones((3, 2))))


def test_max_f1_by_hand():
    # class 0 thresholds: >=0.9 F1 2/3, >=0.8 F1 1/2, >=0.4 F1 4/5, >=0.1 F1 2/3 -> best 0.8 at 0.4;
    # predictions there [1,1,1,0] vs labels [1,0,1,0] -> accuracy 3/4
    f1, thr, acc = max_f1_per_class(Y, S)
    assert f1[0] == pytest.approx(0.8)
    assert thr[0] == pytest.approx(0.4)
    assert acc[0] == pytest.approx(0.75)
    assert np.isnan(f1[1])  # no positive
    assert f1[2] == pytest.approx(1.0) and thr[2] == pytest.approx(0.7) and acc[2] == pytest.approx(1.0)


def test_max_f1_tied_scores_are_one_threshold():
    # labels [1,0,0] all with the same score: only threshold "all positive": F1 = 2/(1+2+1) = 0.5
    f1, thr, acc = max_f1_per_class(np.array([[1.0], [0.0], [0.0]]), np.array([[0.3], [0.3], [0.3]]))
    assert f1[0] == pytest.approx(0.5) and acc[0] == pytest.approx(1 / 3)


def test_classification_metrics_fields():
    m = classification_metrics(Y, S, ["a", "b", "c"])
    assert m["macro_auroc"] == pytest.approx(0.875)
    assert m["macro_f1"] == pytest.approx(0.9)  # mean of 0.8 and 1.0, class b skipped
    assert np.isnan(m["per_class"]["b"]["auroc"])
    assert m["per_class"]["a"]["n_pos"] == 2


def test_bootstrap_reproducible_and_brackets_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(150, 3)).astype(float)
    s = rng.normal(size=(150, 3)) + 1.5 * y
    a = bootstrap_metrics(y, s, n_boot=300, seed=7)
    b = bootstrap_metrics(y, s, n_boot=300, seed=7, chunk=17)  # chunking does not change results
    c = bootstrap_metrics(y, s, n_boot=300, seed=8)
    assert a["macro_auroc"] == b["macro_auroc"]
    np.testing.assert_array_equal(a["per_class_auroc"]["lo"], b["per_class_auroc"]["lo"])
    assert a["macro_auroc"] != c["macro_auroc"]
    point = macro_auroc(y, s)
    assert a["macro_auroc"]["lo"] < point < a["macro_auroc"]["hi"]
    assert 0.02 < a["macro_auroc"]["hi"] - a["macro_auroc"]["lo"] < 0.2


def test_bootstrap_one_resample_equals_direct_computation():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(40, 2)).astype(float)
    s = rng.normal(size=(40, 2))
    out = bootstrap_metrics(y, s, n_boot=1, seed=5)
    idx = np.random.default_rng(5).integers(0, 40, size=(1, 40))[0]
    assert out["macro_auroc"]["mean"] == pytest.approx(macro_auroc(y[idx], s[idx]))


def test_bootstrap_mean_auroc_by_value():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=(60, 3)).astype(float)
    s1, s2, s3 = (rng.normal(size=(60, 3)) + w * y for w in (0.5, 1.0, 2.0))
    out = bootstrap_mean_auroc(y, [s1, s2], n_boot=200, seed=3)
    assert out["value"] == pytest.approx((macro_auroc(y, s1) + macro_auroc(y, s2)) / 2)
    assert out["lo"] < out["value"] < out["hi"]
    # one matrix: the same resamples as bootstrap_metrics with that seed
    one = bootstrap_mean_auroc(y, [s1], n_boot=200, seed=3)
    ref = bootstrap_metrics(y, s1, n_boot=200, seed=3)["macro_auroc"]
    assert (one["lo"], one["hi"]) == pytest.approx((ref["lo"], ref["hi"]))
    # the first resample by hand, for the paired difference
    diff = bootstrap_mean_auroc(y, [s3], baseline=[s1, s2], n_boot=1, seed=9)
    idx = np.random.default_rng(9).integers(0, 60, size=(1, 60))[0]
    want = macro_auroc(y[idx], s3[idx]) - (macro_auroc(y[idx], s1[idx]) + macro_auroc(y[idx], s2[idx])) / 2
    assert diff["lo"] == pytest.approx(want) and diff["hi"] == pytest.approx(want)
    # a model against itself: the paired difference is exactly 0 in every resample
    same = bootstrap_mean_auroc(y, [s1], baseline=[s1], n_boot=50)
    assert same["value"] == same["lo"] == same["hi"] == 0.0
    with pytest.raises(ValueError, match="no score matrix"):
        bootstrap_mean_auroc(y, [])


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="must both be"):
        macro_auroc(np.zeros((3, 2)), np.zeros((3, 3)))
