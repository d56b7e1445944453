"""The store: values written, rejects by reason, resumability (kill -9), idempotence, workers."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melp.data import signal as sig
from melp.data import store as store_mod
from melp.data.readers.base import BadRecord, Index, Reader, Signal, register_reader
from melp.data.store import ECGStore, StoreError, prepare

# A fake source. Record i: 12 leads in PTB-XL order, 250 Hz, value = i/10 + lead/100 + a slow sine
# (offsets small enough for float16 to keep the sine's shape).
# Special records exercise every reject reason and the padding.
FAKE_SOURCE = """
import os, time
import numpy as np, pandas as pd
from melp.data.readers.base import BadRecord, Index, Reader, Signal, register_reader

ORDER = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]

@register_reader
class FakeReader(Reader):
    name = "fake_test_store"
    description = "test source"

    @property
    def tasks(self):
        return {"t": ["a", "b"]}

    def index(self):
        n = int(self.options.get("n", 40))
        e = pd.DataFrame({
            "id": [f"r{i:03d}" for i in range(n)], "path": [f"r{i:03d}.dat" for i in range(n)],
            "patient": [str(i // 2) for i in range(n)], "split": ["train" if i % 4 else "val" for i in range(n)],
            "fold": [1 + i % 10 for i in range(n)], "report": [f"report {i}" for i in range(n)],
            "labels_t": [["a"] if i % 3 == 0 else ["b"] for i in range(n)],
        })
        return Index(e, missing=["gone/1.dat", "gone/2.dat"], rejects=[{"id": "x", "file": "x.dat", "reason": "duplicate id: x"}])

    def load(self, entry):
        time.sleep(float(os.environ.get("MELP_TEST_SLEEP", "0")))  # not a reader option: not a setting
        i = int(entry["id"][1:])
        n = 500 if i != 13 else 250  # record 13 is 1 s long -> padded
        t = np.arange(n) / 250
        data = np.stack([i / 10 + k / 100 + 0.1 * np.sin(2 * np.pi * 1.0 * t) for k in range(12)])
        if i == 3:
            data[2, 10] = np.nan
        if i == 5:
            raise BadRecord("corrupt header: gain missing")
        if i == 7:
            data = data * 1e5
        if i == 11:
            data[:] = 0.0
        leads = ORDER[:6] if i == 9 else ORDER
        return Signal(data[: len(leads)], leads, 250.0)
"""
exec(FAKE_SOURCE)  # registers the reader in this process (and in forked workers)
EXPECTED_REJECTS = {
    "r003": "non-finite",
    "r005": "corrupt header",
    "r007": "float16 overflow",
    "r009": "wrong leads",
    "r011": "flat record",
    "x": "duplicate id",
}


def _prep(out, **kw):
    kw.setdefault("progress", False)
    return prepare("fake_test_store", out.parent, out, rate=100, seconds=2, **kw)


def test_prepare_values_rejects_and_manifest(tmp_path):
    out = tmp_path / "s"
    counts = _prep(out, chunk_size=8)
    assert counts["kept"] == 35 and counts["rejected"] == 6 and counts["missing"] == 2
    assert counts["rejected_by_reason"] == {
        "corrupt header": 1,
        "duplicate id": 1,
        "flat record": 1,
        "float16 overflow": 1,
        "non-finite": 1,
        "wrong leads": 1,
    }
    st = ECGStore(out)
    rej = st.rejects
    assert {r.id: r.reason.split(":")[0] for r in rej.itertuples()} == EXPECTED_REJECTS
    assert st.signals.shape == (40, 12, 200) and st.signals.dtype == np.float16
    m = st.manifest
    assert list(m.columns[:12]) == [
        "row",
        "id",
        "path",
        "patient",
        "source",
        "split",
        "fold",
        "report",
        "report_original",
        "orig_rate",
        "orig_length",
        "length",
    ]
    assert m["row"].tolist() == [int(i[1:]) for i in m["id"]]  # row = slot of the entry
    assert m.loc[m.id == "r013", "length"].item() == 100 and m.loc[m.id == "r020", "length"].item() == 200
    assert m.loc[m.id == "r013", "orig_length"].item() == 250 and m.orig_rate.eq(250.0).all()
    assert m.loc[m.id == "r012", "labels_t"].item().tolist() == ["a"]
    assert st.meta["tasks"] == {"t": ["a", "b"]} and st.meta["n_samples"] == 200
    # values: record 20, canonical lead aVF is source lead AVF (index 5) = 2.05 + sine (interior)
    k = list(m.id).index("r020")
    x, length = st.signal(k)
    t = np.arange(200) / 100
    expected = 2 + 5 / 100 + 0.1 * np.sin(2 * np.pi * t)
    np.testing.assert_allclose(x[sig.CANONICAL_LEADS.index("aVF"), 20:180], expected[20:180], atol=0.003)
    np.testing.assert_allclose(
        x[sig.CANONICAL_LEADS.index("aVL"), 20:180], expected[20:180] - 0.01, atol=0.003
    )
    x13, n13 = st.signal(list(m.id).index("r013"))
    assert n13 == 100 and np.all(x13[:, 100:] == 0)
    assert len(st.select(split="val")) == 10 and set(m.iloc[st.select(folds=[1, 2])].fold) == {1, 2}


def test_rerun_is_noop_and_settings_change_needs_overwrite(tmp_path):
    out = tmp_path / "s"
    _prep(out)
    stamp = {f: (out / f).stat().st_mtime_ns for f in ("signals.npy", "manifest.parquet", "meta.json")}
    _prep(out)
    assert stamp == {f: (out / f).stat().st_mtime_ns for f in stamp}
    with pytest.raises(StoreError, match=r"rate: 100.0 -> 50.0.*--overwrite"):
        prepare("fake_test_store", tmp_path, out, rate=50, seconds=2, progress=False)
    counts = prepare("fake_test_store", tmp_path, out, rate=50, seconds=2, overwrite=True, progress=False)
    assert counts["kept"] == 35 and ECGStore(out).n_samples == 100


def test_workers_give_identical_store(tmp_path):
    _prep(tmp_path / "a", chunk_size=8, workers=0)
    _prep(tmp_path / "b", chunk_size=8, workers=2)
    for f in ("signals.npy", "manifest.parquet", "rejects.parquet", "meta.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_resume_after_crash_in_process(tmp_path, monkeypatch):
    _prep(tmp_path / "ref", chunk_size=8)
    real, calls = store_mod._run_chunk, []

    def crashing(*args, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt  # die after two chunks
        calls.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(store_mod, "_run_chunk", crashing)
    with pytest.raises(KeyboardInterrupt):
        _prep(tmp_path / "s", chunk_size=8)
    assert not (tmp_path / "s" / "meta.json").exists()
    with pytest.raises(StoreError, match="rerun it to finish"):
        ECGStore(tmp_path / "s")
    assert len(list((tmp_path / "s" / ".chunks").glob("chunk_*.json"))) == 2
    monkeypatch.setattr(store_mod, "_run_chunk", real)
    _prep(tmp_path / "s", chunk_size=8)
    for f in ("signals.npy", "manifest.parquet", "rejects.parquet", "meta.json"):
        assert (tmp_path / "ref" / f).read_bytes() == (tmp_path / "s" / f).read_bytes(), f


def test_resume_after_kill_9(tmp_path):
    """A real SIGKILL in the middle of a run; the rerun equals an uninterrupted run byte for byte."""
    script = tmp_path / "run.py"
    script.write_text(
        FAKE_SOURCE
        + textwrap.dedent(f"""
        import sys
        from melp.data.store import prepare
        prepare("fake_test_store", {str(tmp_path)!r}, sys.argv[1], rate=100, seconds=2, chunk_size=4,
                progress=False)
    """)
    )
    _prep(tmp_path / "ref", chunk_size=4)
    env = dict(os.environ, OMP_NUM_THREADS="1", MELP_TEST_SLEEP="0.02")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "s")], env=env)
    chunks = tmp_path / "s" / ".chunks"
    deadline = time.time() + 60
    while len(list(chunks.glob("chunk_*.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(chunks.glob("chunk_*.json")))
    assert 3 <= done < 10 and not (tmp_path / "s" / "meta.json").exists()
    _prep(tmp_path / "s", chunk_size=4)  # resume in this process (same reader, same settings)
    for f in ("signals.npy", "manifest.parquet", "rejects.parquet", "meta.json"):
        assert (tmp_path / "ref" / f).read_bytes() == (tmp_path / "s" / f).read_bytes(), f
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["counts"]["kept"] == 35


def test_refuses_foreign_files_and_missing_lead_option(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "signals.npy").write_bytes(b"not a store")
    with pytest.raises(StoreError, match="unknown version"):
        _prep(out)
    counts = _prep(out, overwrite=True, allow_missing_leads=True)
    assert counts["rejected_by_reason"].get("wrong leads") is None and counts["kept"] == 36
    st = ECGStore(out)
    x, _ = st.signal(list(st.manifest.id).index("r009"))
    assert np.all(x[6:] == 0) and np.all(x[:6, :150] != 0)  # V1-V6 zero-filled


def test_process_record_rejects_overflow_not_inf():
    data = np.tile(np.linspace(0.0, 70000.0, 100), (12, 1))  # peak 70000 > 65504 (float16 max)
    out = store_mod.process_record(data, list(sig.CANONICAL_LEADS), 100, 100, 100)
    assert out == "float16 overflow: |x| reaches 70000 > 65504 (check the units)"
    ok, length = store_mod.process_record(data / 10, list(sig.CANONICAL_LEADS), 100, 100, 120)
    assert ok.dtype == np.float16 and length == 100 and np.isfinite(ok).all()
    np.testing.assert_array_equal(ok[:, :100], (data / 10).astype(np.float16))  # same rate: values unchanged
    assert np.all(ok[:, 100:] == 0)


def test_store_file_layout_is_parquet_and_json(tmp_path):
    out = tmp_path / "s"
    _prep(out)
    assert isinstance(pd.read_parquet(out / "manifest.parquet"), pd.DataFrame)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["leads"] == list(sig.CANONICAL_LEADS) and meta["source"] == "fake_test_store"
    assert np.load(out / "signals.npy", mmap_mode="r").shape == (40, 12, 200)
    assert sorted(p.name for p in Path(out).iterdir() if not p.name.startswith(".")) == [
        "manifest.parquet",
        "meta.json",
        "rejects.parquet",
        "signals.npy",
    ]


def test_register_reader_requires_name():
    with pytest.raises(ValueError):

        @register_reader
        class Nameless(Reader):
            def index(self):
                return Index(pd.DataFrame())

            def load(self, entry):
                raise BadRecord("x")

    assert Signal(np.zeros((1, 1)), ["I"], 1.0).rate == 1.0
