"""The synthetic MIMIC-IV-ECG layout (benchmarks' data) and the prepare worker path at its scale."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from melp.data.store import ECGStore, prepare, verify_store
from melp.data.synthetic import LEADS, write_mimic_layout

N = 48


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return write_mimic_layout(tmp_path_factory.mktemp("mimic") / "root", N, seed=7)


def test_synthetic_layout_is_deterministic_and_reads_as_written(layout, tmp_path):
    assert _digest(write_mimic_layout(tmp_path / "again", N, seed=7)) == _digest(layout)
    assert _digest(write_mimic_layout(tmp_path / "other", N, seed=8)) != _digest(layout)
    out = tmp_path / "store"
    counts = prepare("mimic", layout, out, rate=500, seconds=10, workers=0, progress=False)
    assert counts["kept"] + counts["rejected"] == N and counts["missing"] == 0
    assert set(counts["rejected_by_reason"]) <= {"short report"}  # checksums and units all pass
    store = ECGStore(out)
    records = pd.read_csv(layout / "record_list.csv", dtype=str)
    for i in range(0, len(store), 7):  # stored values = the file's digital samples / 200 (float16)
        subject, study = store.manifest["id"].iloc[i].split("_")
        rel = records.loc[records["study_id"] == study, "path"].iloc[0]
        digital = np.fromfile(layout / f"{rel}.dat", dtype="<i2").reshape(-1, 12).T  # (12, 5000)
        x, length = store.signal(i)
        assert length == 5000
        np.testing.assert_array_equal(x, (digital / 200.0).astype(np.float16).astype(np.float32))
    reports = store.manifest["report"].tolist()
    assert all(r.endswith(".") and len(r.split()) >= 4 for r in reports)
    assert any("sinus rhythm" in r for r in reports) and len(set(reports)) > N // 4
    assert store.meta["leads"] == ["I", "II", "III", "aVR", "aVF", "aVL", *LEADS[6:]]


def test_parallel_prepare_writes_the_same_store_and_verifies(layout, tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    prepare("mimic", layout, one, rate=500, seconds=10, workers=0, chunk_size=5, progress=False)
    prepare("mimic", layout, two, rate=500, seconds=10, workers=2, chunk_size=5, progress=False)
    for name in ("signals.npy", "manifest.parquet", "rejects.parquet", "meta.json"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    report = verify_store(two)  # the chunk checksums computed while writing match the bytes on disk
    assert report["ok"] and report["bad_chunks"] == []
