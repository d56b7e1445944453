"""`prepare` on corpora mixing good records with every kind of bad input we know of.

Each bad record must be rejected with a reason (category before the colon) and the file it came
from, or repaired as documented in docs/data-sources.md; every good record must be kept with
the values a direct read gives; the summary counts must add up.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_builders import (
    BAD_RATE,
    BAD_SECONDS,
    MIMIC_LEADS,
    build_bad_chapman,
    build_bad_cinc,
    build_bad_code15,
    build_bad_corpus,
    build_bad_corpus_2,
    build_bad_cpsc,
    build_bad_mimic,
    build_bad_ptbxl,
    build_code15,
    build_label_corpus,
    build_mimic,
    ecg_like,
)

from melp.data.store import ECGStore, prepare

T = BAD_RATE * BAD_SECONDS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "raw"
    exp = build_bad_corpus(root)
    out = root.parent / "store"
    counts = prepare("generic", root, out, rate=BAD_RATE, seconds=BAD_SECONDS, workers=0, progress=False)
    return exp, counts, ECGStore(out)


def test_corpus_has_at_least_12_kinds_of_bad_input(corpus):
    exp, _, _ = corpus
    bad_kinds = {e["kind"] for e in exp.values() if e["expect"] != "keep"}
    assert len(bad_kinds) >= 12, sorted(bad_kinds)


def test_every_bad_record_is_rejected_with_reason_and_file(corpus):
    exp, _, store = corpus
    rej = store.rejects
    for rid, e in exp.items():
        if e["expect"] != "reject":
            continue
        rows = rej[(rej["id"] == rid.split("#")[0]) & (rej["file"] == e["file"])]
        assert len(rows) == 1, (rid, e["kind"], rej.to_dict("records"))
        reason = rows["reason"].iloc[0]
        assert reason.split(":", 1)[0] == e["reason"], (rid, reason)
        assert len(reason) > len(e["reason"]) + 2, f"{rid}: reason has no details: {reason!r}"


def test_good_and_repaired_records_are_kept_with_direct_read_values(corpus):
    exp, _, store = corpus
    m = store.manifest.set_index("id")
    kept = {rid for rid, e in exp.items() if e["expect"] in ("keep", "repair")}
    assert set(m.index) == kept
    for rid in sorted(kept):
        x, length = store.signal(m.index.get_loc(rid))
        e = exp[rid]
        if e["expect"] == "keep":
            assert length == T, rid
            want = np.asarray(e["value"], dtype=np.float64)[:, :T].astype(np.float16).astype(np.float32)
            if "uV" in e["kind"]:  # uV -> mV conversion: equal up to float16 rounding
                np.testing.assert_allclose(x, want, rtol=2e-3, atol=1e-6, err_msg=rid)
            else:
                np.testing.assert_array_equal(x, want, err_msg=rid)
    assert m.loc["good0", "report"] == "sinus rhythm. normal ecg."


def test_short_record_is_padded_with_valid_length(corpus):
    exp, _, store = corpus
    m = store.manifest.set_index("id")
    x, length = store.signal(m.index.get_loc("short"))
    assert length == 1500 and m.loc["short", "orig_length"] == 1500
    np.testing.assert_array_equal(x[:, :1500], exp["short"]["value"].astype(np.float16).astype(np.float32))
    assert not x[:, 1500:].any()


def test_unexpected_rate_is_resampled(corpus):
    _, _, store = corpus
    m = store.manifest.set_index("id")
    x, length = store.signal(m.index.get_loc("rate1000"))
    assert m.loc["rate1000", "orig_rate"] == 1000.0 and m.loc["rate1000", "orig_length"] == 4000
    assert length == T  # 4 s at 1000 Hz -> 2000 samples at 500 Hz
    t = np.arange(T) / BAD_RATE
    want = np.sin(2 * np.pi * 5 * t)[None, :] * np.linspace(0.5, 1.5, 12)[:, None]  # a 5 Hz sine, 500 Hz grid
    np.testing.assert_allclose(x[:, 50:-50], want[:, 50:-50], atol=3e-3)


def test_summary_counts_add_up(corpus):
    exp, counts, store = corpus
    n = Counter(e["expect"] for e in exp.values())
    assert counts["kept"] == n["keep"] + n["repair"] == len(store)
    assert counts["rejected"] == n["reject"] == len(store.rejects)
    assert counts["missing"] == n["missing"] == 2
    assert sorted(counts["missing_examples"]) == ["absent.npy", "wfdb/nodat.hea"]
    want = Counter(e["reason"] for e in exp.values() if e["expect"] == "reject")
    assert counts["rejected_by_reason"] == dict(want)


def test_code15_corrupt_hdf5_missing_part_and_zero_tracing(tmp_path):
    exams = [{"exam_id": 10 + i, "patient_id": i, "valid": 4000, "labels": {"AF": i % 2}} for i in range(3)]
    build_code15(tmp_path, exams)
    build_code15(
        tmp_path,
        [
            {"exam_id": 90, "patient_id": 9, "valid": 4000, "labels": {}},
            {"exam_id": 91, "patient_id": 9, "valid": 4000, "labels": {}},
        ],
        part="exams_part1.hdf5",
    )
    (tmp_path / "exams_part1.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 50)  # corrupt HDF5
    table = pd.read_csv(tmp_path / "exams.csv")
    extra = table.iloc[[0, 0, 0]].copy()
    extra["exam_id"] = [77, 0, 55]
    extra["trace_file"] = ["exams_part0.hdf5", "exams_part0.hdf5", "exams_part9.hdf5"]
    pd.concat([table, extra]).to_csv(tmp_path / "exams.csv", index=False)
    # exam 77: not in the HDF5; exam 0: the all-zero dummy row; exam 55: its part file is absent
    out = tmp_path / "store"
    counts = prepare("code15", tmp_path, out, rate=100, seconds=10, progress=False)
    store = ECGStore(out)
    assert sorted(store.manifest["id"]) == ["10", "11", "12"]
    rej = store.rejects.set_index("id")
    assert rej.loc["90", "file"] == "exams_part1.hdf5" and rej.loc["90", "reason"].startswith(
        "unreadable HDF5:"
    )
    assert rej.loc["91", "reason"].startswith("unreadable HDF5:")
    assert rej.loc["77", "reason"] == "not in file: exam 77 absent from exams_part0.hdf5"
    assert rej.loc["0", "reason"].startswith("flat record") and rej.loc["0", "file"] == "exams_part0.hdf5#3"
    assert counts["missing"] == 1 and counts["missing_examples"] == ["exams_part9.hdf5#55"]
    assert store.manifest["length"].tolist() == [1000, 1000, 1000]  # 4000 @ 400 Hz -> 10 s @ 100 Hz


def test_mimic_short_reports_and_missing_files_in_store(tmp_path):
    studies = [
        {"subject_id": 10000032, "study_id": 1, "reports": ["Sinus rhythm", "Normal ECG"]},
        {"subject_id": 10000032, "study_id": 2, "reports": ["Sinus rhythm"]},
        {
            "subject_id": 10000117,
            "study_id": 3,
            "reports": ["Atrial fibrillation", "Abnormal ECG"],
            "write": False,
        },
        {"subject_id": 10000117, "study_id": 4, "reports": ["Sinus rhythm", "Left axis deviation"]},
    ]
    signals = build_mimic(tmp_path, studies, n_samples=1000)
    counts = prepare("mimic", tmp_path, tmp_path / "store", rate=500, seconds=2, progress=False)
    store = ECGStore(tmp_path / "store")
    assert counts["kept"] == 2 and counts["missing"] == 1
    assert counts["rejected_by_reason"] == {"short report": 1}
    m = store.manifest.set_index("id")
    assert m.loc["10000032_1", "report"] == "sinus rhythm. normal ecg."
    assert m.loc["10000032_1", "report_original"] == "Sinus rhythm. Normal ECG"
    x, length = store.signal(m.index.get_loc("10000117_4"))
    assert length == 1000
    want = signals["10000117_4"].astype(np.float16).astype(np.float32)  # MIMIC order is canonical
    np.testing.assert_array_equal(x[:, :1000], want)


def test_flags_keep_flat_lead_and_zero_fill_missing_leads(corpus, tmp_path):
    exp, _, store = corpus
    root = store.path.parent / "raw"
    counts = prepare(
        "generic",
        root,
        tmp_path / "s2",
        rate=BAD_RATE,
        seconds=BAD_SECONDS,
        progress=False,
        allow_flat_leads=True,
        allow_missing_leads=True,
    )
    s2 = ECGStore(tmp_path / "s2")
    m = s2.manifest.set_index("id")
    assert counts["kept"] == len(store) + 2 and {"flatlead", "lead8"} <= set(m.index)
    x, _ = s2.signal(m.index.get_loc("lead8"))
    assert not x[2:6].any()  # III, aVR, aVF, aVL zero-filled
    x8 = ecg_like(8, 2000, seed=225).astype(np.float16).astype(np.float32)  # I, II, V1-V6 as written
    np.testing.assert_array_equal(x[[0, 1, 6, 7, 8, 9, 10, 11]], x8)
    x, _ = s2.signal(m.index.get_loc("flatlead"))
    assert np.all(x[2] == np.float16(0.25))


# ----------------------------------------------------------------------------- corpus 2: classes of bad input
#
# Every source's own layout with plausible unusual inputs (fixtures_builders: build_bad_corpus_2,
# build_label_corpus, build_bad_<source>). Each kind is rejected naming its file with a reason of the
# expected category, repaired as documented, or read correctly: kept records are compared BY VALUE
# with what the builder computed from the integers it wrote (or wfdb / scipy computed), never with
# melp's own readers.

DATA = Path(__file__).parents[1] / "data"
PLAIN = ("(", "a plain", "plain ", "CPSC record")


def check_corpus(exp: dict, store: ECGStore, counts: dict) -> None:
    """Rejects (id, file, category), kept set, values, labels/split/fold/patient and counts of one store."""
    exp = {k: e for k, e in exp.items() if e["expect"] != "none"}
    rej = store.rejects
    m = store.manifest.set_index("id")
    kept = {rid for rid, e in exp.items() if e["expect"] in ("keep", "repair")}
    assert set(m.index) == kept, (sorted(set(m.index) - kept), sorted(kept - set(m.index)))
    want_rej: dict[str, list] = {}
    for rid, e in exp.items():
        if e["expect"] == "reject":
            want_rej.setdefault(rid.split("#")[0], []).append((e["file"], e["reason"]))
    assert sorted(set(rej["id"])) == sorted(want_rej), rej.to_dict("records")
    for rid, want in want_rej.items():
        rows = rej[rej["id"] == rid]
        got = sorted(zip(rows["file"], (r.split(":", 1)[0] for r in rows["reason"])))
        assert got == sorted(want), (rid, exp[rid]["kind"], rows["reason"].tolist())
        for reason, (_, cat) in zip(rows["reason"], want):
            assert len(reason) > len(cat) + 10, f"{rid}: reason without details: {reason!r}"
    label_cols = [c for c in m.columns if c.startswith("labels_")]
    for rid in sorted(kept):
        e, pos = exp[rid], m.index.get_loc(rid)
        if e.get("value") is not None:
            x, length = store.signal(pos)
            want = np.asarray(e["value"], dtype=np.float64)
            n = min(want.shape[1], T)
            assert length == n, (rid, length, n)
            scale = max(float(np.abs(want).max()), 1e-6)
            np.testing.assert_allclose(
                x[:, :n],
                want[:, :n].astype(np.float16),
                rtol=2e-3,
                atol=1e-3 * scale,
                err_msg=f"{rid}: {e['kind']}",
            )
            assert not x[:, n:].any(), rid
        if "labels" in e:
            got = m.loc[rid, label_cols[0]]
            if e["labels"] is None:
                assert got is None, (rid, got)
            else:
                assert got is not None and set(got) == set(e["labels"]), (rid, e["kind"], got, e["labels"])
        for key in ("split", "fold"):
            if key in e:
                assert m.loc[rid, key] == e[key], (rid, key, m.loc[rid, key])
        if "patient" in e:
            assert (
                pd.isna(m.loc[rid, "patient"])
                if e["patient"] is None
                else m.loc[rid, "patient"] == e["patient"]
            )
    assert counts["kept"] == len(kept) and counts["rejected"] == len(rej) == sum(map(len, want_rej.values()))
    assert counts["missing"] == 0, counts["missing_examples"]


def _prepare(name, root, tmp, **options):
    out = tmp / f"store_{name}"
    counts = prepare(
        name if name in ("cinc", "cpsc", "chapman", "code15", "mimic", "ptbxl") else "generic",
        root,
        out,
        rate=BAD_RATE,
        seconds=BAD_SECONDS,
        progress=False,
        **options,
    )
    return counts, ECGStore(out)


@pytest.fixture(scope="module")
def corpus2(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad2")
    exp = build_bad_corpus_2(tmp / "raw")
    counts, store = _prepare("generic2", tmp / "raw", tmp)
    return exp, counts, store


def test_corpus2_formats_headers_containers_arrays_lengths_leads(corpus2):
    exp, counts, store = corpus2
    check_corpus(exp, store, counts)
    assert not Path(exp["_unpickled_marker"]["file"]).exists()  # the object .npy was never unpickled


def test_corpus2_repairs_are_the_documented_ones(corpus2):
    exp, _, store = corpus2
    m = store.manifest.set_index("id")
    assert m.loc["rate_499_7", "orig_rate"] == 499.7 and m.loc["rate_257", "orig_rate"] == 257.0
    assert m.loc["long60", "orig_length"] == 60 * 500 and m.loc["long60", "length"] == T
    assert m.loc["npy_TL", "orig_length"] == T and m.loc["v4_T", "orig_length"] == T
    assert {e["expect"] for e in exp.values()} >= {"keep", "repair", "reject"}


def test_label_cells_splits_paths_duplicates_and_links(tmp_path):
    exp = build_label_corpus(tmp_path / "raw")
    for table, prefix in (("cells.csv", "c"), ("lists.csv", "ll_")):
        part = {k: e for k, e in exp.items() if k.startswith("ll_") == (prefix == "ll_")}
        counts, store = _prepare(table.split(".")[0], tmp_path / "raw", tmp_path, csv=table)
        check_corpus(part, store, counts)
        want = ["AF", "NORM"] if prefix == "c" else ["AFIB", "PAC", "NORM"]
        assert store.tasks == {"labels": want}  # a stray '2' does not turn AF into metadata


SOURCES = {
    "cinc": build_bad_cinc,
    "cpsc": build_bad_cpsc,
    "chapman": build_bad_chapman,
    "code15": build_bad_code15,
    "mimic": build_bad_mimic,
    "ptbxl": lambda root: build_bad_ptbxl(root, DATA / "ptbxl-mini"),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_with_its_bad_inputs(source, tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    exp = SOURCES[source](root)
    counts, store = _prepare(source, root, tmp_path)
    check_corpus(exp, store, counts)


def test_code_test_layout_without_labels_is_unlabelled_not_negative(tmp_path):
    import h5py

    x = ecg_like(12, 1600, seed=950).astype(np.float32)
    x[:, 0] += 2.0
    with h5py.File(tmp_path / "ecg_tracings.hdf5", "w") as fh:
        fh["tracings"] = np.stack([x.T, -x.T])  # (2, 1600, 12)
    counts, store = _prepare("code15", tmp_path, tmp_path)
    assert counts["kept"] == 2 and counts["unlabelled"] == {"code": 2}
    assert store.manifest["labels_code"].tolist() == [None, None]
    from melp.data.datasets import DownstreamDataset

    assert len(DownstreamDataset(store, "code")) == 0  # left out of the task, never all-negative


def test_a_repeated_column_name_stops_the_table_with_its_name(tmp_path):
    np.save(tmp_path / "a.npy", ecg_like(12, T, seed=951))
    (tmp_path / "records.csv").write_text("file,AF,NORM,AF\na.npy,1,0,0\n")  # pandas would rename it AF.1
    with pytest.raises(ValueError, match=r"column\(s\) \['AF'\] appear twice"):
        prepare("generic", tmp_path, tmp_path / "s", rate=BAD_RATE, seconds=BAD_SECONDS, progress=False)
    assert not (tmp_path / "s").exists()


def test_new_corpus_has_over_40_new_kinds(corpus2, tmp_path):
    old = {e["kind"] for e in build_bad_corpus(tmp_path / "old").values()}
    kinds = {e["kind"] for e in corpus2[0].values()} | {
        e["kind"] for e in build_label_corpus(tmp_path / "lab").values()
    }
    for source, build in SOURCES.items():
        (tmp_path / source).mkdir()
        kinds |= {e["kind"] for e in build(tmp_path / source).values()}
    new = {k for k in kinds - old if not k.startswith(PLAIN) and k != "marker"}
    assert len(new) >= 100, len(new)  # 40 asked for; the corpus holds well over 100


# ----------------------------------------------------------------------------- stores: damage and reruns
#
# Nothing already written may be lost or silently altered: a damaged store is refused when opened or
# read (naming the file or the record), `verify_store` names the damaged records, a rerun of prepare
# never clobbers a store without --overwrite, and an interrupted run resumes to the same bytes.

STORE_FILES = ("signals.npy", "manifest.parquet", "rejects.parquet", "meta.json")


def _small_root(root: Path, n: int = 12, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        np.save(root / f"r{k:02d}.npy", ecg_like(12, T, seed=seed + k))
    np.save(root / "flat.npy", np.zeros((12, T)))  # one reject, so rejects.parquet is not empty
    files = [f"r{k:02d}.npy" for k in range(n)] + ["flat.npy"]
    pd.DataFrame({"file": files, "report": ["sinus rhythm"] * len(files)}).to_csv(
        root / "records.csv", index=False
    )
    return root


def _small(root: Path, out: Path, **kw) -> dict:
    opts = {"leads": ",".join(MIMIC_LEADS), "sample_rate": BAD_RATE}
    return prepare(
        "generic", root, out, rate=BAD_RATE, seconds=BAD_SECONDS, progress=False, chunk_size=4, **opts, **kw
    )


def _bytes(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stores")
    _small(_small_root(tmp / "raw_a", seed=0), tmp / "a")
    _small(_small_root(tmp / "raw_b", seed=100), tmp / "b")  # same shape, other content
    return tmp


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_same_shape_signals_from_another_store_are_caught_at_read_and_by_verify(two_stores, tmp_path):
    from melp.data.store import StoreError, verify_store

    s = _copy(two_stores / "a", tmp_path / "s")
    (s / "signals.npy").write_bytes((two_stores / "b" / "signals.npy").read_bytes())
    store = ECGStore(s)  # shape, dtype and size match: opening cannot tell
    with pytest.raises(StoreError, match=r"record r00 \(manifest position 0\) does not match its checksum"):
        store.signal(0)
    res = verify_store(s)
    assert not res["ok"] and sorted(res["bad_records"]) == sorted(store.manifest["id"])


def test_one_edited_sample_names_exactly_its_record(two_stores, tmp_path):
    from melp.data.store import StoreError, verify_store

    s = _copy(two_stores / "a", tmp_path / "s")
    sig = np.load(s / "signals.npy", mmap_mode="r+")
    row = int(ECGStore(s).manifest.set_index("id").loc["r05", "row"])
    sig[row, 3, 17] = np.nan  # NaN injected into one record
    sig.flush()
    del sig
    store = ECGStore(s)
    with pytest.raises(StoreError, match="record r05"):
        store.signal(store.manifest.index[store.manifest["id"] == "r05"][0])
    store.signal(0)  # the others still read
    assert verify_store(s)["bad_records"] == ["r05"]


@pytest.mark.parametrize(
    ("damage", "names"),
    [
        ("other_shape", "signals.npy does not belong to this store"),
        ("truncated_signals", "signals.npy cannot be opened"),
        ("edited_manifest", "manifest.parquet does not match its checksum"),
        ("missing_rejects", "rejects.parquet does not match its checksum"),
        ("corrupt_meta", "meta.json is damaged"),
        ("version_2", "store version 2, this melp reads 3"),
        ("edited_meta_rate", "meta.json is inconsistent"),
    ],
)
def test_damaged_store_is_named_refused_by_prepare_and_rebuilt_with_overwrite(
    two_stores, tmp_path, damage, names
):
    from melp.data.store import StoreError

    s = _copy(two_stores / "a", tmp_path / "s")
    if damage == "other_shape":  # a 250 Hz store's signals.npy in a 500 Hz store
        other = np.zeros((13, 12, 1000), dtype=np.float16)
        np.save(s / "signals.npy", other)
    elif damage == "truncated_signals":
        data = (s / "signals.npy").read_bytes()
        (s / "signals.npy").write_bytes(data[: len(data) // 2])
    elif damage == "edited_manifest":
        m = pd.read_parquet(s / "manifest.parquet")
        m.loc[0, "report"] = "atrial fibrillation"
        m.to_parquet(s / "manifest.parquet", index=False)
    elif damage == "missing_rejects":
        (s / "rejects.parquet").unlink()
    elif damage == "corrupt_meta":
        (s / "meta.json").write_text('{"version": 3, "rate": ')
    elif damage == "version_2":
        import json

        meta = json.loads((s / "meta.json").read_text())
        meta["version"] = 2
        (s / "meta.json").write_text(json.dumps(meta))
    elif damage == "edited_meta_rate":  # someone makes a 500 Hz store "fit" a 250 Hz model
        import json

        meta = json.loads((s / "meta.json").read_text())
        meta["rate"] = 250.0
        (s / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=names):
        ECGStore(s)
    before = _bytes(s)
    with pytest.raises(StoreError, match="--overwrite"):
        _small(two_stores / "raw_a", s)  # the rerun refuses and leaves every byte as it was
    assert _bytes(s) == before
    _small(two_stores / "raw_a", s, overwrite=True)
    for name in STORE_FILES:
        assert (s / name).read_bytes() == (two_stores / "a" / name).read_bytes(), name


def test_interrupted_run_resumes_same_bytes_and_refuses_other_settings(two_stores, tmp_path, monkeypatch):
    from melp.data import store as store_mod
    from melp.data.store import StoreError

    real, calls = store_mod._run_chunk, []

    def crashing(*args, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after two chunks
        calls.append(args[0])
        return real(*args, **kw)

    s = tmp_path / "s"
    monkeypatch.setattr(store_mod, "_run_chunk", crashing)
    with pytest.raises(KeyboardInterrupt):
        _small(two_stores / "raw_a", s)
    monkeypatch.setattr(store_mod, "_run_chunk", real)
    partial = _bytes(s)
    assert not (s / "meta.json").exists() and len([k for k in partial if k.startswith(".chunks/chunk_")]) == 2
    with pytest.raises(StoreError, match=r"different settings \(rate: 500.0 -> 250.0"):
        prepare(
            "generic",
            two_stores / "raw_a",
            s,
            rate=250,
            seconds=BAD_SECONDS,
            progress=False,
            chunk_size=4,
            leads=",".join(MIMIC_LEADS),
            sample_rate=BAD_RATE,
        )
    with pytest.raises(StoreError, match="min_seconds: 1.0 -> 0.5"):
        _small(two_stores / "raw_a", s, min_seconds=0.5)
    assert _bytes(s) == partial  # nothing of the interrupted run was touched
    # a damaged chunk result of the interrupted run is redone; a damaged settings file is named
    chunk = sorted((s / ".chunks").glob("chunk_*.json"))[0]
    chunk.write_text("{not json")
    _small(two_stores / "raw_a", s)
    for name in STORE_FILES:
        assert (s / name).read_bytes() == (two_stores / "a" / name).read_bytes(), name


def test_damaged_settings_of_an_interrupted_run_is_named_and_overwrite_recovers(
    two_stores, tmp_path, monkeypatch
):
    from melp.data import store as store_mod
    from melp.data.store import StoreError

    s = tmp_path / "s"
    monkeypatch.setattr(store_mod, "_run_chunk", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _small(two_stores / "raw_a", s)
    monkeypatch.undo()
    (s / ".chunks" / "settings.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(StoreError, match=r"settings.json is damaged .*--overwrite"):
        _small(two_stores / "raw_a", s)
    _small(two_stores / "raw_a", s, overwrite=True)
    assert (s / "signals.npy").read_bytes() == (two_stores / "a" / "signals.npy").read_bytes()


@pytest.mark.parametrize("where", ["out_is_file", "out_below_file", "chunks_is_file", "meta_is_folder"])
def test_an_out_folder_that_cannot_hold_a_store_is_refused_before_work(two_stores, tmp_path, where):
    from melp.data.store import StoreError

    out = tmp_path / "out"
    if where == "out_is_file":
        out.write_text("my notes")
    elif where == "out_below_file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "store"
    elif where == "chunks_is_file":
        out.mkdir()
        (out / ".chunks").write_text("x")
    else:
        (out / "meta.json").mkdir(parents=True)
    before = _bytes(tmp_path)
    with pytest.raises(StoreError, match="choose another --out|not part of a melp store"):
        _small(two_stores / "raw_a", out)
    assert _bytes(tmp_path) == before


def test_reader_columns_named_like_store_columns_do_not_replace_them(tmp_path):
    from melp.data.readers.base import Index, Reader, Signal, register_reader

    @register_reader
    class _Clash(Reader):
        name = "clash_test_bad_input"

        def index(self):
            n = 3
            return Index(
                pd.DataFrame(
                    {
                        "id": [f"k{i}" for i in range(n)],
                        "path": [f"k{i}" for i in range(n)],
                        "patient": None,
                        "split": None,
                        "fold": None,
                        "report": "x",
                        "length": [7] * n,
                        "crc32": [1] * n,
                        "orig_rate": [1.0] * n,
                        "row": [99] * n,
                    }
                )
            )

        def load(self, entry):
            return Signal(ecg_like(12, 1500, seed=int(entry["id"][1:])), MIMIC_LEADS, float(BAD_RATE))

    prepare(
        "clash_test_bad_input", tmp_path, tmp_path / "s", rate=BAD_RATE, seconds=BAD_SECONDS, progress=False
    )
    store = ECGStore(tmp_path / "s")
    assert store.manifest["length"].tolist() == [1500] * 3 and store.manifest["row"].tolist() == [0, 1, 2]
    assert store.manifest["orig_rate"].tolist() == [float(BAD_RATE)] * 3
    x, length = store.signal(2)  # the CRC is the store's own
    np.testing.assert_allclose(x[:, :1500], ecg_like(12, 1500, seed=2).astype(np.float16), rtol=0)
