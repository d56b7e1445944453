"""`prepare` on corpora mixing good records with every kind of bad input we know of.

Each bad record must be rejected with a reason (category before the colon) and the file it came
from, or repaired as documented in docs/data-sources.md; every good record must be kept with
the values a direct read gives; the summary counts must add up.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from fixtures_builders import BAD_RATE, BAD_SECONDS, build_bad_corpus, build_code15, build_mimic, ecg_like

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
