"""Datasets over a store: min-max by hand, masking before normalisation, masking statistics, fractions."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from melp.data import signal as sig
from melp.data.datasets import (
    DownstreamDataset,
    PretrainDataset,
    label_fraction,
    lead_mask,
    prepare_ecg,
    select_rows,
)
from melp.data.readers.base import Index, Reader, Signal, register_reader
from melp.data.store import ECGStore, prepare

BASE = np.array([0.0, 1.0, -1.0, 0.5])  # 4 samples at 100 Hz; the store keeps 5 -> 1 padded sample


@register_reader
class _DatasetFake(Reader):
    name = "fake_test_datasets"

    @property
    def tasks(self):
        return {"t": ["b", "a", "c"]}

    def index(self):
        labels = [["a"], ["b", "c"], None, ["a", "b"], ["b"], ["c"]]  # e2: not labelled
        n = len(labels)
        e = pd.DataFrame(
            {
                "id": [f"e{i}" for i in range(n)],
                "path": [f"e{i}" for i in range(n)],
                "patient": [f"p{i}" for i in range(n)],
                "split": ["train"] * 4 + ["val"] * 2,
                "fold": [1, 2, 3, 4, 9, 9],
                "report": ["sinus rhythm", "", "x", "y", "z", "w"],
                "labels_t": labels,
            }
        )
        return Index(e)

    def load(self, entry):
        i = int(entry["id"][1:])
        data = np.stack([k + BASE + i for k in range(12)])  # lead k (canonical order) = k + i + BASE
        return Signal(data, list(sig.CANONICAL_LEADS), 100.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "store"
    prepare("fake_test_datasets", out.parent, out, rate=100, seconds=0.05, min_seconds=0, progress=False)
    return ECGStore(out)


def test_minmax_hand_example_through_downstream_dataset(store):
    ds = DownstreamDataset(store, "t", normalize="minmax")
    assert ds.classes == ["b", "a", "c"]
    item = ds[0]  # record e0: lead k = k + [0, 1, -1, 0.5], padded to 5 samples
    # min -1 (lead 0), max 12 (lead 11): (x + 1) / 13; the padded sample stays 0
    expected = np.zeros((12, 5), dtype=np.float32)
    for k in range(12):
        expected[k, :4] = (k + BASE + 1) / 13
    np.testing.assert_allclose(item["ecg"].numpy(), expected, atol=1e-6)
    assert item["ecg"].dtype == torch.float32 and item["id"] == "e0"
    assert item["labels"].tolist() == [0.0, 1.0, 0.0]  # class order b, a, c; labels by name
    assert ds[1]["labels"].tolist() == [1.0, 0.0, 1.0]


def test_downstream_drops_unlabeled_and_selects_rows(store):
    ds = DownstreamDataset(store, "t")
    assert [ds.ids[i] for i in ds.rows] == ["e0", "e1", "e3", "e4", "e5"]  # e2 is not labelled
    assert store.manifest["labels_t"].iloc[2] is None and store.meta["counts"]["unlabelled"] == {"t": 1}
    val = DownstreamDataset(store, "t", select_rows(store, split="val"))
    assert [val.ids[i] for i in val.rows] == ["e4", "e5"]
    np.testing.assert_array_equal(val.label_matrix(), [[1, 0, 0], [0, 0, 1]])
    assert list(select_rows(store, folds=[1, 2])) == [0, 1]
    assert list(select_rows(store, folds=[1, 2, 3], limit=2)) == [0, 1]
    with pytest.raises(ValueError, match="no records in folds"):
        select_rows(store, folds=[7])
    with pytest.raises(KeyError, match="no task 'rhythm'"):
        DownstreamDataset(store, "rhythm")
    z = DownstreamDataset(store, "t", normalize="zscore")[0]["ecg"].numpy()
    np.testing.assert_allclose(z[:, :4].mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, :4].std(1), 1, atol=1e-4)
    assert np.all(z[:, 4] == 0)


def test_pretrain_masks_before_normalising(store):
    ds = PretrainDataset(store, generator=torch.Generator().manual_seed(3))
    assert [ds.ids[i] for i in ds.rows] == ["e0", "e2", "e3", "e4", "e5"]  # e1 has an empty report
    item = ds[0]
    keep = lead_mask(0.5, torch.Generator().manual_seed(3)).numpy()  # the same draw
    assert 0 < keep.sum() < 12
    raw = np.stack([k + BASE for k in range(12)])
    raw[~keep] = 0.0  # masked lead = baseline 0 in raw units, then min-max over everything valid
    lo, hi = raw.min(), raw.max()
    expected = np.zeros((12, 5), dtype=np.float32)
    expected[:, :4] = (raw - lo) / (hi - lo + 1e-8)
    np.testing.assert_allclose(item["ecg"].numpy(), expected, atol=1e-6)
    assert item["report"] == "sinus rhythm" and item["patient"] == "p0" and item["id"] == "e0"
    # eval mode: no masking
    clean = PretrainDataset(store, train=False)[0]["ecg"].numpy()
    np.testing.assert_allclose(clean[:, :4], (np.stack([k + BASE for k in range(12)]) + 1) / 13, atol=1e-6)


def test_pretrain_shift_drops_the_start_and_shrinks_the_valid_length(store):
    # draws in order: lead mask (p=0 -> none), shift in 0..min(max_shift, length // 2) = 0..2
    gen_seed = next(
        s
        for s in range(100)
        if int(torch.randint(0, 3, (1,), generator=torch.Generator().manual_seed(s))) == 2
    )
    ds = PretrainDataset(
        store, lead_mask_p=0.0, max_shift=5, generator=torch.Generator().manual_seed(gen_seed)
    )
    x = ds[0]["ecg"].numpy()  # e0: lead k = k + [0, 1, -1, 0.5]; shifted by 2 -> k + [-1, 0.5], 2 valid
    tail = np.stack([k + BASE[2:] for k in range(12)])
    expected = np.zeros((12, 5), dtype=np.float32)
    expected[:, :2] = (tail - tail.min()) / (tail.max() - tail.min())
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_pretrain_noise_only_on_valid_samples_of_kept_leads(store):
    nonzero_masked_levels = 0
    for seed in range(8):  # several masks: the result must not hang on one draw
        ds = PretrainDataset(
            store, lead_mask_p=0.5, noise_std=0.1, generator=torch.Generator().manual_seed(seed)
        )
        clean = PretrainDataset(store, lead_mask_p=0.5, generator=torch.Generator().manual_seed(seed))[0][
            "ecg"
        ]
        x = ds[0]["ecg"]
        keep = lead_mask(0.5, torch.Generator().manual_seed(seed)).numpy()
        diff = (x - clean).numpy()
        # masked leads keep exactly the clean value (the normalised 0 mV level), padding stays 0
        assert np.all(diff[~keep] == 0) and np.all(x.numpy()[:, 4] == 0), seed
        assert 0.03 < diff[keep, :4].std() < 0.3, seed
        raw = np.stack([k + BASE for k in range(12)])
        raw[~keep] = 0.0
        level = (0 - raw.min()) / (raw.max() - raw.min() + 1e-8)  # where 0 mV lands after min-max
        np.testing.assert_allclose(x.numpy()[~keep, :4], level, atol=1e-6)
        nonzero_masked_levels += int((~keep).any() and level > 1e-3)
    assert nonzero_masked_levels > 0  # the check above is not satisfied by zeros alone
    with pytest.raises(ValueError, match="must be >= 0"):
        PretrainDataset(store, noise_std=-1.0)


def test_lead_mask_statistics_and_never_all_masked():
    g = torch.Generator().manual_seed(0)
    masks = torch.stack([lead_mask(0.5, g) for _ in range(20000)]).float()  # (20000, 12)
    # P(keep) per lead = 0.5 / (1 - 2^-12) after redrawing all-masked draws
    np.testing.assert_allclose(masks.mean(0).numpy(), 0.5 / (1 - 2**-12), atol=0.015)
    assert masks.sum(1).min() >= 1
    g = torch.Generator().manual_seed(1)
    heavy = torch.stack([lead_mask(0.9, g) for _ in range(20000)]).float()
    # E[#kept | >= 1 kept] = 12 * 0.1 / (1 - 0.9^12) = 1.672
    assert heavy.sum(1).min() >= 1
    assert heavy.sum(1).mean().item() == pytest.approx(1.2 / (1 - 0.9**12), abs=0.03)
    with pytest.raises(ValueError):
        lead_mask(1.0)


def test_label_fraction_keeps_a_positive_per_class():
    n = 200
    labels = np.zeros((n, 4), dtype=np.float32)
    labels[:, 0] = 1  # common class
    labels[::10, 1] = 1  # 20 positives
    labels[[5, 77], 2] = 1  # 2 positives
    labels[133, 3] = 1  # a single positive
    pick = label_fraction(labels, 0.01, seed=42)  # budget 2, but 4 classes need a positive each
    assert labels[pick].sum(0).min() >= 1 and 133 in pick and len(pick) <= 4
    pick10 = label_fraction(labels, 0.1, seed=42)
    assert len(pick10) == 20 and labels[pick10].sum(0).min() >= 1 and len(set(pick10)) == 20
    np.testing.assert_array_equal(pick10, label_fraction(labels, 0.1, seed=42))  # seeded
    assert not np.array_equal(pick10, label_fraction(labels, 0.1, seed=7))
    np.testing.assert_array_equal(label_fraction(labels, 1.0), np.arange(n))
    empty_class = np.zeros((10, 2))
    empty_class[:, 0] = 1
    assert len(label_fraction(empty_class, 0.5)) == 5  # a class without positives is skipped


def test_downstream_fraction_and_collate(store):
    ds = DownstreamDataset(store, "t", fraction=0.5, seed=0)
    assert ds.label_matrix().sum(0).min() >= 1 and len(ds) == 3  # round(0.5 * 5) with b, a, c covered
    batch = next(iter(DataLoader(PretrainDataset(store, train=False), batch_size=3)))
    assert batch["ecg"].shape == (3, 12, 5) and batch["report"] == ["sinus rhythm", "x", "y"]


def test_prepare_ecg_does_not_modify_input():
    x = np.arange(24, dtype=np.float32).reshape(12, 2)
    keep = torch.zeros(12, dtype=torch.bool)
    keep[0] = True
    out = prepare_ecg(x, 2, keep=keep)
    assert x[5, 0] == 10  # input untouched
    assert out[0].tolist() == [0.0, 1.0] and out[1:].abs().sum() == 0  # only lead 0 kept: [0, 1] -> [0, 1]
