"""`melp benchmark`: the suite equals the single evaluations on the same inputs, test sets never shrink
silently, the ICBEB window, reduced-lead evaluation masks exactly as training does."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import melp
from melp.data.readers.ptbxl import subset_root
from melp.data.store import ECGStore, prepare

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    root = subset_root(DATA / "ptbxl-mini", tmp / "root", per_fold=8)
    prepare("ptbxl", root, tmp / "ptbxl", progress=False)
    torch.manual_seed(0)
    return melp.create_model("melp-test").eval(), ECGStore(tmp / "ptbxl"), tmp


def test_benchmark_equals_the_single_evaluations(setup, capsys):
    from melp.eval.benchmark import BenchmarkConfig, run_benchmark
    from melp.eval.probe import HeadConfig, run_probe
    from melp.eval.splits import choose_splits
    from melp.eval.zeroshot import run_zeroshot

    model, store, tmp = setup
    cfg = BenchmarkConfig(n_boot=20, head_epochs=4, draws=2, fractions=(0.1, 1.0))
    res = run_benchmark(model, {"ptbxl": store}, tmp / "out", cfg)
    printed = capsys.readouterr().out
    rows = store.select(folds=[9])  # PTB-XL mini: fold 9 stands in for the test fold
    for name, task in (("ptbxl_super", "super_class"), ("ptbxl_rhythm", "rhythm")):
        alone = run_zeroshot(model, store, task, rows, n_boot=0)
        assert res["sets"][name]["zeroshot"]["macro_auroc"] == pytest.approx(alone["macro_auroc"], abs=1e-12)
        assert res["sets"][name]["n_test"] == alone["n_records"]
        assert f"{name}: {alone['n_records']} labelled val records (published split:" in printed
        assert "fold 9" in res["sets"][name]["test"]
    probe = res["sets"]["ptbxl_super"]["probe"]
    splits = choose_splits(store)
    for seed in (42, 43):  # the 10 % probe over two label draws
        alone = run_probe(
            model, store, "super_class", splits, (0.1,), n_boot=0, config=HeadConfig(seed=seed, epochs=4)
        )
        assert alone["macro_auroc"]["0.1"] == pytest.approx(probe["0.1"]["draws"][seed - 42], abs=1e-12)
    assert probe["0.1"]["mean"] == pytest.approx(np.mean(probe["0.1"]["draws"]))
    assert probe["0.1"]["sd"] == pytest.approx(np.std(probe["0.1"]["draws"], ddof=1))
    assert probe["1"]["seeds"] == [42] and probe["1"]["sd"] == 0.0
    assert res["zeroshot_average"] is None  # CPSC and CSN missing: no six-set average
    assert any("cpsc: no store given" in n for n in res["notes"])
    md = (tmp / "out" / "results.md").read_text()
    assert "MERL (published) | 74.2 | 75.7 | 65.9 | 78.5 | 82.8 | 74.4 | 75.2" in md
    assert "MELP (published)" in md and "secondary sources" in md
    ours = 100 * res["sets"]["ptbxl_super"]["zeroshot"]["macro_auroc"]
    assert f"| this model | {ours:.1f} |" in md
    csv = pd.read_csv(tmp / "out" / "results.csv")
    assert set(csv["metric"]) == {"zeroshot_macro_auroc", "probe_macro_auroc"} and len(csv) == 4 * 3
    assert json.loads((tmp / "out" / "results.json").read_text())["sets"].keys() == res["sets"].keys()
    assert (tmp / "out" / "benchmark.png").stat().st_size > 10_000


def test_a_shrunken_test_set_is_an_error_a_partial_dataset_a_note():
    from melp.eval.benchmark import _count_note

    def store(**counts):
        return SimpleNamespace(path="S", meta={"counts": {"missing": 0, "rejected": 0, **counts}})

    assert _count_note("cpsc", store(), 1376, "test").endswith("(published split: 1376)")
    with pytest.raises(ValueError, match=r"shrank: 1370.*1376.*flat lead 6.*--allow-flat-leads"):
        _count_note("cpsc", store(rejected=6, rejected_by_reason={"flat lead": 6}), 1370, "test")
    assert "partial dataset" in _count_note("cpsc", store(missing=900), 476, "test")
    assert "partial dataset" in _count_note("ptbxl_form", store(), 5, "val")  # a subset table, no rejects


def _cpsc_store(tmp: Path) -> ECGStore:
    """The five real CPSC 2018 samples as a test split (10-60 s records) at 100 Hz x 10 s."""
    from melp.data.readers.cpsc import ICBEB_CLASSES

    table = pd.concat([pd.read_csv(DATA / "splits" / f"icbeb_{p}.csv") for p in ("train", "val", "test")])
    rows = table[table["filename"].isin([f"A198{i}" for i in range(5)])]
    splits = tmp / "splits"
    splits.mkdir(exist_ok=True)
    rows.to_csv(splits / "icbeb_test.csv", index=False)
    for part in ("train", "val"):
        rows.iloc[:0].to_csv(splits / f"icbeb_{part}.csv", index=False)
    assert set(ICBEB_CLASSES) <= set(rows.columns)
    prepare(
        "cpsc", DATA / "real-format-samples" / "cpsc2018", tmp / "cpsc", progress=False, splits=str(splits)
    )
    return ECGStore(tmp / "cpsc")


def test_icbeb_window_keeps_5_s_and_reports_the_papers_unmasked_variant(setup):
    from melp.eval.benchmark import BenchmarkConfig, run_benchmark
    from melp.eval.features import FeatureBank

    model, _, tmp = setup
    store = _cpsc_store(tmp)
    assert len(store.select(split="test")) == 5 and min(store.manifest["length"]) == 1000  # all >= 10 s
    bank = FeatureBank(model, store, window=500)  # 5 s at 100 Hz
    item = bank.dataset[0]
    assert item["length"] == 500 and torch.all(item["ecg"][:, 500:] == 0)
    paper = FeatureBank(model, store, window=500, padding_as_signal=True).dataset[0]
    assert paper["length"] == 1000  # padding normalised with the signal, no mask: the paper's code
    res = run_benchmark(model, {"cpsc": store}, tmp / "cpsc_out", BenchmarkConfig(n_boot=0, probe=False))
    entry = res["sets"]["cpsc"]
    rows = store.select(split="test")
    from melp.eval.zeroshot import run_zeroshot

    masked = run_zeroshot(model, store, "icbeb", rows, n_boot=0, bank=bank)
    assert entry["zeroshot"]["macro_auroc"] == pytest.approx(masked["macro_auroc"], abs=1e-12)
    assert "zeroshot_paper_window" in entry and "partial dataset" in entry["count_note"]
    assert "unmasked window" in (tmp / "cpsc_out" / "results.md").read_text()


def test_reduced_leads_are_masked_exactly_as_in_training(setup):
    from melp.data.datasets import PretrainDataset, leads_kept, prepare_ecg
    from melp.eval.features import FeatureBank

    model, store, _ = setup
    keep = leads_kept("I,II,V2")
    assert keep.tolist() == [True, True] + [False] * 5 + [True] + [False] * 4
    bank = FeatureBank(model, store, leads="I,II,V2")
    got = bank.get(np.array([0, 1]), "rhythm")
    x, length = store.signal(0)
    want = model.embed(prepare_ecg(x, length, keep=keep)[None], lengths=torch.tensor([length]))["rhythm"]
    np.testing.assert_allclose(got[0], want[0].detach().numpy(), atol=1e-5)  # batch size 2 vs 1
    # the same masking as random lead masking in training: zeroed before the normalisation
    ds = PretrainDataset(store, np.array([0]), lead_mask_p=0.0, train=False)
    clean = ds[0]["ecg"]
    assert not torch.allclose(clean, prepare_ecg(x, length, keep=keep))
    with pytest.raises(ValueError, match="not lead names"):
        leads_kept("I,II,V7")


def test_benchmark_cli_and_one_line_errors(setup, capsys):
    from melp.cli import main

    model, store, tmp = setup
    model.save_pretrained(tmp / "model")
    base = ["benchmark", "--model", str(tmp / "model"), "--out", str(tmp / "cli")]
    assert main([*base, "--ptbxl", str(store.path), "--no-probe", "--n-boot", "0", "--leads", "I,II"]) == 0
    out = capsys.readouterr().out
    assert "## Zero-shot classification" in out and "PTBXL-Super" in out
    saved = json.loads((tmp / "cli" / "results.json").read_text())
    assert saved["config"]["leads"] == ["I", "II"]
    assert main(base) == 1  # no store at all
    assert "give at least one store" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--ptbxl", str(store.path), "--leads", "I,XX"])
