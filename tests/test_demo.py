"""`melp demo` in its seconds-long mode: every stage runs and the summary/figures are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from melp.pipeline import DemoConfig, default_root, run_demo


def test_default_root_is_the_shipped_mini():
    root = default_root()
    assert root == Path(__file__).parents[1] / "data" / "ptbxl-mini"
    assert (root / "ptbxl_database.csv").exists()


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--root"):
        run_demo(DemoConfig(out=tmp_path / "o", root=tmp_path / "nowhere", fast=True))


def test_fast_demo_writes_summary_and_figures(tmp_path, capsys):
    summary = run_demo(DemoConfig(out=tmp_path / "demo", fast=True, workers=0, per_fold=5))
    out = capsys.readouterr().out
    for k in range(1, 6):
        assert f"[{k}/5]" in out  # progress at each stage
    assert "zero-shot super_class macro AUROC" in out and "generated vs true" in out
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert (
        saved["test_fold"] == 9
        and saved["select_fold"] == 8
        and saved["n_records"] == 45
        and saved["train_folds"] == [1, 2, 3, 4, 5, 6, 7]  # the selection fold 8 is held out
    )
    from melp.data.datasets import DownstreamDataset
    from melp.data.store import ECGStore

    store = ECGStore(tmp_path / "demo" / "store")
    for task in ("super_class", "sub_class", "form", "rhythm"):
        auc = saved["zeroshot"][task]["macro_auroc"]
        y = DownstreamDataset(store, task, store.select(folds=[9])).label_matrix()
        defined = bool(((y.sum(0) > 0) & (y.sum(0) < len(y))).any())  # a class with both labels
        assert (auc is not None) == defined, task  # None exactly when no class has both labels
        assert auc is None or 0 <= auc <= 1
    assert saved["zeroshot"]["super_class"]["macro_auroc"] is not None
    assert set(saved["probe"]["macro_auroc"]) == {"0.01", "0.1", "1"}
    assert set(saved["probe_random"]["macro_auroc"]) == {"0.01", "0.1", "1"}
    assert {"ecg_to_report", "report_to_ecg"} <= set(saved["retrieval"])
    # the beat level of the test fold, as beat_diagnostics gives it for the exported model
    import melp
    from melp.eval.beats import beat_diagnostics

    want = beat_diagnostics(melp.load_model(saved["model"]).eval(), store, store.select(folds=[9]))
    assert saved["beats"]["median_record_ratio"] == pytest.approx(want["median_record_ratio"], abs=1e-5)
    assert saved["beats"]["n_records"] == want["n_records"] > 0
    assert "sentence->beat max/min" in out
    assert saved["generation"]["n"] == 2 and len(saved["generation"]["examples"]) == 2
    for fig in (
        "figures/attention.png",
        "figures/probe_fractions.png",
        "figures/zeroshot_super_class_roc.png",
    ):
        assert fig in saved["figures"] and (tmp_path / "demo" / fig).stat().st_size > 5_000
    assert saved["seconds"]["total"] > 0
    assert (
        summary["zeroshot"]["super_class"]["macro_auroc"] == saved["zeroshot"]["super_class"]["macro_auroc"]
    )
