"""Evaluation results computed by hand: stores whose records carry chosen embeddings (tests/fakes.py).

Each test fails when the piece it names is broken: ranking with ties and merged duplicate reports,
patient identification (records without a patient id never match), the linear probe against an
uninformative baseline, and zero-shot scoring.
"""

from __future__ import annotations

import numpy as np
import pytest
from fakes import VectorModel, vector_store

from melp.eval.metrics import macro_auroc


def test_retrieval_ranks_by_hand(tmp_path):
    from melp.eval.retrieval import run_retrieval

    # ECG latents (first 3 samples of lead I) and reports; r3 shares report "a" with r0
    vectors = np.array([[1, 0.125, 0], [0.875, 1, 0], [1, 0, 0.5], [0, 0, 1]])
    store = vector_store(tmp_path / "raw", vectors, reports=["a", "b", "c", "a"])
    model = VectorModel(3, {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1]})
    res = run_retrieval(model, store, np.arange(4))
    # ECG -> report: r0 "a" first; r1 cos(b)=0.75 > cos(a)=0.66; r2 cos(a)=0.89 above its "c" (0.45)
    # -> rank 2; r3 ("a"): cos(c)=1 above, cos(b)=0 ties with cos(a)=0 (ties count against) -> rank 3
    e2r = res["ecg_to_report"]
    assert (e2r["R@1"], e2r["R@5"], e2r["median_rank"], e2r["mean_rank"]) == (0.5, 1.0, 1.5, 1.75)
    # report -> ECG (3 unique reports): "a" finds r0 first; "b" finds r1; "c": r3 (1.0) above r2 -> 2
    r2e = res["report_to_ecg"]
    assert (
        r2e["n_queries"] == 3
        and r2e["R@1"] == pytest.approx(2 / 3)
        and r2e["mean_rank"] == pytest.approx(4 / 3)
    )
    assert res["n_unique_reports"] == 3


def test_patient_identification_by_hand_and_unknown_patients_never_match(tmp_path):
    from melp.eval.retrieval import patient_identification

    # patients A, B, C with two identical records each; a singleton distractor "D" identical to A;
    # a record without a patient id identical to B (it must not become a gallery entry)
    a, b, c = [1, 0, 0], [0, 1, 0], [0, 0, 1]
    vectors = np.array([a, a, b, b, c, c, a, b])
    patients = ["A", "A", "B", "B", "C", "C", "D", ""]
    store = vector_store(tmp_path / "raw", vectors, patients=patients)
    res = patient_identification(VectorModel(3), store, np.arange(8), seed=3)
    # A's probe ties with D's gallery record (ties count against): rank 2; B and C: rank 1
    assert res["n_probes"] == 3 and res["n_gallery"] == 4
    assert (
        res["R@1"] == pytest.approx(2 / 3) and res["R@5"] == 1.0 and res["mean_rank"] == pytest.approx(4 / 3)
    )


def _probe_store(tmp_path, informative: bool):
    rng = np.random.default_rng(0)
    n = 120
    y = np.stack([rng.random(n) < 0.5, rng.random(n) < 0.3], 1).astype(int)
    signal = (2 * y - 1) * 0.5 + rng.normal(0, 0.25, (n, 2))  # separable along each axis
    vectors = signal if informative else rng.normal(0, 1, (n, 2))
    vectors = np.round(vectors * 64) / 64  # exact in float16
    split = ["train"] * 80 + ["val"] * 20 + ["test"] * 20
    store = vector_store(tmp_path / ("inf" if informative else "rnd"), vectors, labels={"A": list(y[:, 0]),
                         "B": list(y[:, 1])}, split=split)  # fmt: skip
    return store, y


def test_probe_beats_an_uninformative_baseline_by_value(tmp_path):
    from melp.eval.probe import HeadConfig, run_probe
    from melp.eval.splits import choose_splits

    cfg = HeadConfig(epochs=40, patience=40)
    results = {}
    for informative in (True, False):
        store, y = _probe_store(tmp_path, informative)
        splits = choose_splits(store)
        assert splits.description.startswith("published split") and len(splits.test) == 20
        res = run_probe(VectorModel(2), store, "labels", splits, (0.1, 1.0), n_boot=0, config=cfg)
        results[informative] = res["macro_auroc"]
        assert res["fractions"]["0.1"]["n_train"] == 8 and res["fractions"]["1"]["n_train"] == 80
    assert results[True]["1"] > 0.95 and results[True]["0.1"] > 0.85  # the features hold the labels
    assert 0.2 < results[False]["1"] < 0.8  # noise features: chance level
    assert results[True]["1"] - results[False]["1"] > 0.25


def test_zeroshot_scores_are_cosines_with_the_prompt_means(tmp_path):
    from melp.eval.zeroshot import run_zeroshot, zero_shot_scores

    vectors = np.array([[1, 0], [0.5, 0.5], [0, 1], [-1, 0.25]])
    labels = {"N": [1, 1, 0, 0], "M": [0, 1, 1, 0]}
    store = vector_store(tmp_path / "raw", vectors, labels=labels)
    model = VectorModel(2, {"normal.": [1, 0], "ok.": [1, 0.5], "mi.": [0, 1]})
    prompts = {"N": ["normal.", "ok."], "M": ["mi."]}
    res = run_zeroshot(model, store, "labels", np.arange(4), prompts=prompts, n_boot=0)
    w_n = np.array([1, 0]) + np.array([1, 0.5]) / np.linalg.norm([1, 0.5])
    w = np.stack([w_n / np.linalg.norm(w_n), [0, 1]], 1)  # (D, K): class order N, M (CSV order)
    z = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    y = np.array([labels["N"], labels["M"]]).T
    assert res["macro_auroc"] == pytest.approx(macro_auroc(y, z @ w), abs=1e-6)
    y2, scores, classes, ids = zero_shot_scores(model, store, "labels", np.arange(4), prompts=prompts)
    np.testing.assert_allclose(scores, z @ w, atol=1e-6)  # cosines with the normalised prompt means
    assert classes == ["N", "M"] and ids == ["r0", "r1", "r2", "r3"] and (y2 == y).all()
    assert res["per_class"]["N"]["auroc"] == 1.0 and res["n_records"] == 4
