"""Unit tests of the non-PTB-XL readers: index() and load() directly, values checked by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb
from fixtures_builders import MIMIC_LEADS, build_code15, build_mimic, ecg_like, write_cinc_mat, write_wfdb
from sklearn.model_selection import train_test_split

from melp.data.readers import available_readers, get_reader
from melp.data.readers.mimic import build_report
from melp.data.signal import reorder_leads

DATA = Path(__file__).parents[1] / "data"
CINC = DATA / "real-format-samples" / "cinc2021"
CPSC = DATA / "real-format-samples" / "cpsc2018"


def test_every_source_is_registered_with_a_description():
    readers = available_readers()
    for name in ("mimic", "cinc", "cpsc", "chapman", "code15", "generic"):
        assert name in readers, name
        desc = readers[name].description
        assert desc and "\n" not in desc, name


# ----------------------------------------------------------------------------- MIMIC-IV-ECG


def test_mimic_report_construction_by_hand():
    assert build_report(["Sinus rhythm", None, "Possible left atrial enlargement", "Borderline EKG"]) == (
        "sinus rhythm. possible left atrial enlargement. borderline ecg."
    )
    # stars/spaces stripped first, then '=' and '-' (character sets, both ends); inner text kept
    assert build_report(["*** Sinus tachycardia", "Abnormal ekg ***"]) == "sinus tachycardia. abnormal ecg."
    assert build_report(["--- Sinus rhythm", "Normal ECG ---"]) == "sinus rhythm. normal ecg."
    assert build_report(["=Atrial  fibrillation\twith RVR", "Low QRS voltages=="]) == (
        "atrial fibrillation with rvr. low qrs voltages."
    )
    # {space, *} is stripped before {=, -}: a '*' behind a leading '-' survives (order matters)
    assert build_report(["-* Sinus rhythm"]) == "* sinus rhythm."
    assert build_report(["* - Sinus rhythm - *"]) == "sinus rhythm."
    assert build_report([None, None]) == "empty"
    assert build_report(["***"]) == "empty"


@pytest.fixture
def mimic_root(tmp_path):
    studies = [
        {
            "subject_id": 10000032,
            "study_id": 40689238,
            "reports": ["Sinus rhythm", "Possible left atrial enlargement", "Borderline EKG"],
        },
        {
            "subject_id": 10000032,
            "study_id": 44458630,
            "reports": ["Sinus rhythm", "Normal ECG"],
        },  # 4 words: kept
        {"subject_id": 10000117, "study_id": 45090959, "reports": ["Sinus rhythm"]},  # 2 words: rejected
        {
            "subject_id": 10000117,
            "study_id": 48446569,
            "reports": ["*** Atrial fibrillation ***", "Abnormal ekg"],
        },
        {"subject_id": 10000560, "study_id": 40000001, "reports": [None] * 18},  # empty: rejected
        {
            "subject_id": 10000560,
            "study_id": 40000002,
            "reports": ["Sinus bradycardia", "Otherwise normal ECG"],
        },
        {
            "subject_id": 10000764,
            "study_id": 40000003,
            "reports": ["Sinus rhythm", "Normal ECG"],
            "write": False,
        },
        {"subject_id": 10000898, "study_id": 40000004, "reports": ["Sinus rhythm", "Left axis deviation"]},
    ]
    signals = build_mimic(tmp_path, studies)
    return tmp_path, signals


def test_mimic_index_reports_rejects_missing(mimic_root):
    root, _ = mimic_root
    reader = get_reader("mimic")(root)
    idx = reader.index()
    e = idx.entries.set_index("id")
    assert list(e.index) == [
        "10000032_40689238",
        "10000032_44458630",
        "10000117_48446569",
        "10000560_40000002",
        "10000898_40000004",
    ]
    reports = {i: reader.normalize_report(t) for i, t in e["report"].items()}
    assert reports == {
        "10000032_40689238": "sinus rhythm. possible left atrial enlargement. borderline ecg.",
        "10000032_44458630": "sinus rhythm. normal ecg.",
        "10000117_48446569": "atrial fibrillation ***. abnormal ecg.",
        "10000560_40000002": "sinus bradycardia. otherwise normal ecg.",
        "10000898_40000004": "sinus rhythm. left axis deviation.",
    }
    assert (
        e.loc["10000032_40689238", "report"]
        == "Sinus rhythm. Possible left atrial enlargement. Borderline EKG"
    )
    assert e.loc["10000032_40689238", "path"] == "files/p1000/p10000032/s40689238/40689238.hea"
    assert e.loc["10000117_48446569", "patient"] == "10000117"
    rej = {r["id"]: r["reason"] for r in idx.rejects}
    assert set(rej) == {"10000117_45090959", "10000560_40000001"}
    assert rej["10000117_45090959"].startswith("short report: under 4 words")
    assert "'empty'" in rej["10000560_40000001"]
    assert idx.missing == ["files/p1000/p10000764/s40000003/40000003.hea"]


def test_mimic_split_is_by_patient_98_2_seed_42(mimic_root):
    root, _ = mimic_root
    e = get_reader("mimic")(root).index().entries
    per_patient = e.groupby("patient")["split"].nunique()
    assert (per_patient == 1).all()
    # subjects in first-appearance order, including the one whose files are absent (split first)
    subjects = ["10000032", "10000117", "10000560", "10000764", "10000898"]
    _, val = train_test_split(subjects, test_size=0.02, random_state=42)
    assert len(val) == 1
    got_val = sorted(e.loc[e["split"] == "val", "patient"].unique())
    expected_val = sorted(set(val) & set(e["patient"]))
    assert got_val == expected_val
    assert set(e["split"]) <= {"train", "val"}


def test_mimic_load_values(mimic_root):
    root, signals = mimic_root
    reader = get_reader("mimic")(root)
    entry = reader.index().entries.iloc[0].to_dict()
    sig = reader.load(entry)
    assert sig.leads == MIMIC_LEADS and sig.rate == 500.0
    assert sig.data.shape == (12, 5000)
    np.testing.assert_allclose(sig.data, signals[entry["id"]], atol=1e-6)


# ----------------------------------------------------------------------------- CinC 2020/2021


def test_cinc_index_labels_by_hand():
    reader = get_reader("cinc")(CINC)
    e = reader.index().entries.set_index("id")
    assert len(e) == 25
    # JS20000 # Dx: 284470004,427084000,698252002,55930002
    assert e.loc["JS20000", "labels_dx"] == ["PAC", "STach", "NSIVCB", "STC"]
    assert e.loc["E07500", "labels_dx"] == ["LAE", "SB"]  # 67741000119109, 426177001
    assert e.loc["HR06002", "labels_dx"] == ["SB", "NSR", "IRBBB"]
    assert e.loc["JS20000", "database"] == "chapman_ningbo"
    assert e.loc["E07500", "database"] == "georgia" and e.loc["HR06000", "database"] == "ptbxl"
    assert e.loc["JS20000", "age"] == "84" and e.loc["JS20000", "sex"] == "Female"
    assert all(lab in reader.tasks["dx"] for labs in e["labels_dx"] for lab in labs)
    assert (e["dx_unmapped"] == "").all()


@pytest.mark.parametrize("name", ["JS20000", "HR06000", "E07509"])
def test_cinc_load_equals_wfdb_and_mat_and_reorders_by_name(name):
    reader = get_reader("cinc")(CINC)
    entry = reader.index().entries.set_index("id").loc[name].to_dict() | {"id": name}
    sig = reader.load(entry)
    assert sig.rate == 500.0 and sig.data.shape == (12, 5000)
    assert sig.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    ref = wfdb.rdrecord(str(CINC / name)).p_signal.T
    np.testing.assert_allclose(sig.data, ref, atol=1e-6)
    val = scipy.io.loadmat(str(CINC / f"{name}.mat"))["val"]
    np.testing.assert_allclose(sig.data, val / 1000.0, atol=1e-6)  # units: mV (gain 1000)
    canon, absent = reorder_leads(sig.data, sig.leads)
    assert absent == []
    np.testing.assert_array_equal(canon[4], sig.data[5])  # canonical aVF = CinC position 5
    np.testing.assert_array_equal(canon[5], sig.data[4])  # canonical aVL = CinC position 4


# ----------------------------------------------------------------------------- CPSC 2018


EXPECTED_CPSC = {  # from data/splits/icbeb_*.csv, by hand
    "A1980": ("train", ["PAC"]),
    "A1981": ("train", ["STD"]),
    "A1982": ("val", ["1AVB"]),
    "A1983": ("test", ["NORM"]),
    "A1984": ("test", ["STD"]),
}


@pytest.mark.parametrize("splits", [None, DATA / "splits"])
def test_cpsc_labels_and_split_from_csvs(splits):
    reader = get_reader("cpsc")(CPSC, **({"splits": str(splits)} if splits else {}))
    idx = reader.index()
    e = idx.entries.set_index("id")
    assert {k: (e.loc[k, "split"], e.loc[k, "labels_icbeb"]) for k in e.index} == EXPECTED_CPSC
    assert e.loc["A1980", "patient"] == "4283"
    assert len(idx.missing) == 6877 - 5 and idx.rejects == []
    assert reader.tasks["icbeb"] == ["AFIB", "VPC", "NORM", "1AVB", "CRBBB", "STE", "PAC", "CLBBB", "STD"]


def test_cpsc_load_variable_length_and_lead_order():
    reader = get_reader("cpsc")(CPSC)
    e = reader.index().entries.set_index("id")
    sig = reader.load({"id": "A1981", **e.loc["A1981"].to_dict()})
    assert sig.rate == 500.0 and sig.data.shape == (12, 7950)
    raw = scipy.io.loadmat(str(CPSC / "A1981.mat"))["ECG"][0, 0]["data"]
    np.testing.assert_allclose(sig.data, raw, rtol=1e-6, atol=1e-7)
    canon, _ = reorder_leads(sig.data.astype(np.float64), sig.leads)
    i, ii, iii, avr, avf, avl = canon[:6]
    # Einthoven/Goldberger relations hold only if the names are right
    np.testing.assert_allclose(iii, ii - i, atol=0.02)
    np.testing.assert_allclose(avr, -(i + ii) / 2, atol=0.02)
    np.testing.assert_allclose(avf, (ii + iii) / 2, atol=0.02)
    np.testing.assert_allclose(avl, (i - iii) / 2, atol=0.02)


# ----------------------------------------------------------------------------- Chapman


def _chapman_csv(path: Path, rows: list[tuple[str, list[str]]], classes: list[str], blank_first=False):
    lines = ["ecg_path,age,diagnose," + ",".join(classes)]
    for p, labs in rows:
        lines.append(f'{p},12,"{",".join(labs)}",' + ",".join("1" if c in labs else "0" for c in classes))
    path.write_text(("\n" if blank_first else "") + "\n".join(lines) + "\n")


def test_chapman_split_labels_by_name_and_signals(tmp_path):
    from melp.data.readers.chapman import CHAPMAN_CLASSES

    d = tmp_path / "WFDBRecords" / "20" / "200"
    d.mkdir(parents=True)
    for f in ("JS20000.hea", "JS20000.mat"):  # a real record, with its header
        shutil.copy(CINC / f, d / f)
    x = ecg_like(12, 5000, seed=7, gain=1000)
    no_header = write_cinc_mat(d, "JS20001", x, header=False)  # .mat only: defaults apply
    shuffled = list(reversed(CHAPMAN_CLASSES))  # columns read by name, not position
    _chapman_csv(
        tmp_path / "chapman_train.csv", [("/chapman/WFDBRecords/20/200/JS20000.mat", ["ST", "APB"])], shuffled
    )
    _chapman_csv(
        tmp_path / "chapman_val.csv", [("/chapman/WFDBRecords/20/200/JS20009.mat", ["SR"])], CHAPMAN_CLASSES
    )
    _chapman_csv(
        tmp_path / "chapman_test.csv",
        [("/chapman/WFDBRecords/20/200/JS20001.mat", ["AFIB"])],
        CHAPMAN_CLASSES,
        blank_first=True,
    )
    reader = get_reader("chapman")(tmp_path)
    idx = reader.index()
    e = idx.entries.set_index("id")
    assert list(e.index) == ["JS20000", "JS20001"]
    assert e.loc["JS20000", "labels_chapman"] == ["APB", "ST"]  # task class order
    assert e.loc["JS20000", "split"] == "train" and e.loc["JS20001", "split"] == "test"
    assert e.loc["JS20001", "labels_chapman"] == ["AFIB"]
    assert e.loc["JS20000", "path"] == "WFDBRecords/20/200/JS20000.mat"
    assert idx.missing == ["WFDBRecords/20/200/JS20009.mat"]
    s0 = reader.load({"id": "JS20000", **e.loc["JS20000"].to_dict()})
    np.testing.assert_allclose(s0.data, scipy.io.loadmat(str(CINC / "JS20000.mat"))["val"] / 1000, atol=1e-6)
    s1 = reader.load({"id": "JS20001", **e.loc["JS20001"].to_dict()})
    assert s1.rate == 500.0 and s1.leads[4:6] == ["aVL", "aVF"]
    np.testing.assert_allclose(s1.data, no_header, atol=1e-6)


def test_chapman_real_split_files_are_readable(tmp_path):
    from melp.data.readers.chapman import CHAPMAN_CLASSES
    from melp.data.readers.cpsc import read_split_tables

    t = read_split_tables(DATA / "splits", "chapman", CHAPMAN_CLASSES)
    assert t["split"].value_counts().to_dict() == {"train": 300, "val": 300, "test": 300}
    assert t["ecg_path"].str.startswith("/chapman/WFDBRecords/").all()


# ----------------------------------------------------------------------------- CODE-15


def test_code15_labels_padding_and_leads(tmp_path):
    exams = [
        {"exam_id": 1169160, "patient_id": 523632, "valid": 4000, "labels": {"AF": 1}},
        {"exam_id": 2873686, "patient_id": 1724173, "valid": 2800, "labels": {"1dAVb": 1, "RBBB": 1}},
        {"exam_id": 271011, "patient_id": 51421, "valid": 4096, "labels": {}},
    ]
    signals = build_code15(tmp_path, exams)
    reader = get_reader("code15")(tmp_path)
    e = reader.index().entries.set_index("id")
    assert list(e.index) == ["1169160", "2873686", "271011"]
    assert e.loc["1169160", "labels_code"] == ["AFIB"]
    assert e.loc["2873686", "labels_code"] == ["1AVB", "RBBB"]
    assert e.loc["271011", "labels_code"] == [] and e.loc["271011", "patient"] == "51421"
    assert e.loc["2873686", "path"] == "exams_part0.hdf5#1"
    for rid, ex in zip(e.index, exams):
        sig = reader.load({"id": rid, **e.loc[rid].to_dict()})
        assert sig.rate == 400.0 and sig.data.shape == (12, ex["valid"])  # padding stripped
        np.testing.assert_array_equal(sig.data, signals[ex["exam_id"]])
        canon, _ = reorder_leads(sig.data, sig.leads)
        np.testing.assert_array_equal(canon[3], sig.data[3])  # aVR stays at 3 (documented order)
        np.testing.assert_array_equal(canon[4], sig.data[5])  # canonical aVF <- AVF (file col 5)
        np.testing.assert_array_equal(canon[5], sig.data[4])  # canonical aVL <- AVL (file col 4)


def test_code_test_layout_row_aligned_labels(tmp_path):
    x = np.zeros((2, 4096, 12), dtype=np.float32)
    x[0, 48:4048] = 1.5
    x[1, :] = -0.5
    with h5py.File(tmp_path / "ecg_tracings.hdf5", "w") as fh:
        fh["tracings"] = x
    pd.DataFrame(
        {"1dAVb": [0, 1], "RBBB": [0, 0], "LBBB": [1, 0], "SB": [0, 0], "AF": [0, 1], "ST": [0, 0]}
    ).to_csv(tmp_path / "code_test.csv", index=False)
    reader = get_reader("code15")(tmp_path)
    e = reader.index().entries
    assert e["labels_code"].tolist() == [["LBBB"], ["1AVB", "AFIB"]]
    assert e["split"].tolist() == ["test", "test"]
    assert reader.load(e.iloc[0].to_dict()).data.shape == (12, 4000)
    assert reader.load(e.iloc[1].to_dict()).data.shape == (12, 4096)


# ----------------------------------------------------------------------------- generic


def test_generic_npy_sidecar_wfdb_and_label_list(tmp_path):
    x1 = ecg_like(12, 2500, seed=1)
    np.save(tmp_path / "a.npy", x1.astype(np.float32))
    leads8 = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    x2 = ecg_like(8, 1000, seed=2)
    np.save(tmp_path / "b.npy", x2.astype(np.float32))
    (tmp_path / "b.json").write_text(
        '{"leads": ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"], "rate": 250}'
    )
    x3 = write_wfdb(tmp_path / "w", "rec3", ecg_like(12, 1000, seed=3), MIMIC_LEADS, 100)
    pd.DataFrame(
        {
            "file": ["a.npy", "b.npy", "w/rec3.hea", "gone.npy"],
            "report": ["Sinus rhythm.", "", "AF.", "x"],
            "labels": ["NORM", "", "AFIB;PAC", "NORM"],
        }
    ).to_csv(tmp_path / "records.csv", index=False)
    leads12 = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"
    reader = get_reader("generic")(tmp_path, leads=leads12, sample_rate="500")
    assert reader.tasks == {"labels": ["NORM", "AFIB", "PAC"]}
    idx = reader.index()
    e = idx.entries.set_index("id")
    assert list(e.index) == ["a", "b", "w/rec3"]  # labels present: empty reports allowed
    assert e["labels_labels"].tolist() == [["NORM"], [], ["AFIB", "PAC"]]
    assert idx.missing == ["gone.npy"]
    s1 = reader.load({"id": "a", **e.loc["a"].to_dict()})
    assert s1.rate == 500.0 and s1.leads == leads12.split(",")
    np.testing.assert_allclose(s1.data, x1, atol=1e-6)
    s2 = reader.load({"id": "b", **e.loc["b"].to_dict()})
    assert s2.rate == 250.0 and s2.leads == leads8  # the sidecar wins over the options
    s3 = reader.load({"id": "w/rec3", **e.loc["w/rec3"].to_dict()})
    assert s3.rate == 100.0 and s3.leads == MIMIC_LEADS
    np.testing.assert_allclose(s3.data, x3, atol=1e-6)


def test_generic_binary_columns_and_required_report(tmp_path):
    for k in range(3):
        np.save(tmp_path / f"r{k}.npy", ecg_like(12, 500, seed=k).astype(np.float32))
    pd.DataFrame(
        {
            "file": ["r0.npy", "r1.npy", "r2.npy"],
            "id": ["x0", "x1", "x0"],
            "AF": [1, 0, 0],
            "age": [50, 61, 70],
            "NORM": [0, 1, 1],
            "patient": ["p1", "p1", "p2"],
        }
    ).to_csv(tmp_path / "meta.csv", index=False)
    reader = get_reader("generic")(tmp_path, leads="I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6", sample_rate=100)
    assert reader.tasks == {"labels": ["AF", "NORM"]}  # 'age' is not 0/1: metadata
    idx = reader.index()
    assert idx.entries["labels_labels"].tolist() == [["AF"], ["NORM"]]
    assert idx.entries["patient"].tolist() == ["p1", "p1"]
    assert idx.entries["age"].tolist() == ["50", "61"]  # other columns: metadata
    assert idx.rejects == [{"id": "x0", "file": "r2.npy", "reason": "duplicate id: x0 first at r0.npy"}]
    # a report-only CSV (pretraining): empty reports are rejected
    pd.DataFrame({"file": ["r0.npy", "r1.npy"], "report": ["sinus rhythm", " "]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    idx = get_reader("generic")(
        tmp_path, leads="I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6", sample_rate=100
    ).index()
    assert idx.entries["id"].tolist() == ["r0"]
    assert idx.rejects[0]["id"] == "r1" and idx.rejects[0]["reason"].startswith("empty report")


def test_corrupt_matlab_files_raise_bad_record(tmp_path):
    from melp.data.readers.base import BadRecord
    from melp.data.readers.cinc import read_cinc_mat
    from melp.data.readers.cpsc import read_cpsc_mat

    (tmp_path / "A0001.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 50)
    with pytest.raises(BadRecord, match="^unreadable MATLAB file: "):
        read_cpsc_mat(tmp_path / "A0001.mat")
    scipy.io.savemat(str(tmp_path / "A0002.mat"), {"other": np.zeros(3)})
    with pytest.raises(BadRecord, match="^bad MATLAB file: no struct field"):
        read_cpsc_mat(tmp_path / "A0002.mat")
    (tmp_path / "JS1.mat").write_bytes(b"garbage" * 20)  # no .hea: the container is checked first
    with pytest.raises(BadRecord, match="^bad MATLAB file: JS1.mat is not a MATLAB v4, v5 or v7.3 file"):
        read_cinc_mat(tmp_path / "JS1.mat")
    scipy.io.savemat(str(tmp_path / "JS2.mat"), {"val": np.zeros((8, 100), dtype=np.int16)})
    with pytest.raises(BadRecord, match=r"^bad shape: 'val' \(v5\) has shape \(8, 100\)"):
        read_cinc_mat(tmp_path / "JS2.mat")


def test_generic_derives_limb_leads_of_8_lead_records(tmp_path):
    from melp.data.readers.base import Signal
    from melp.data.readers.generic import derive_limb_leads

    i, ii = np.array([1.0, 0.5, -0.2]), np.array([0.4, 1.5, 0.2])
    out = derive_limb_leads(Signal(data=np.stack([i, ii]), leads=["I", "II"], rate=500))
    assert out.leads == ["I", "II", "III", "aVR", "aVL", "aVF"]
    np.testing.assert_allclose(out.data[2], [-0.6, 1.0, 0.4])  # III = II - I
    np.testing.assert_allclose(out.data[3], [-0.7, -1.0, 0.0])  # aVR = -(I + II) / 2
    np.testing.assert_allclose(out.data[4], [0.8, -0.25, -0.3])  # aVL = I - II / 2
    np.testing.assert_allclose(out.data[5], [-0.1, 1.25, 0.3])  # aVF = II - I / 2
    # on a real CPSC record: dropping the four limb leads and deriving them gives them back
    reader = get_reader("cpsc")(CPSC)
    full = reader.load({"path": "A1980.mat"})
    keep = [0, 1, 6, 7, 8, 9, 10, 11]
    eight = Signal(data=full.data[keep], leads=[full.leads[k] for k in keep], rate=500)
    canon_full, _ = reorder_leads(full.data, full.leads)
    derived = derive_limb_leads(eight)
    canon_derived, absent = reorder_leads(derived.data, derived.leads)
    assert absent == []
    np.testing.assert_allclose(canon_derived, canon_full, atol=0.02)
    # through the generic reader option
    np.save(tmp_path / "r8.npy", eight.data)
    (tmp_path / "r8.json").write_text(json.dumps({"leads": eight.leads, "rate": 500}))
    pd.DataFrame({"file": ["r8.npy"], "report": ["sinus rhythm"]}).to_csv(tmp_path / "r.csv", index=False)
    g = get_reader("generic")(tmp_path, derive_limb_leads=True)
    sig = g.load(g.index().entries.iloc[0].to_dict())
    np.testing.assert_allclose(reorder_leads(sig.data, sig.leads)[0], canon_derived)


def test_prepare_help_lists_every_source_with_its_description():
    import argparse

    from melp.data.cli import add_commands

    parser = argparse.ArgumentParser(prog="melp")
    add_commands(parser.add_subparsers(dest="command"))
    text = parser._subparsers._group_actions[0].choices["prepare"].format_help()
    for name, cls in available_readers().items():
        assert f"{name} " in text and cls.description[:40] in text.replace("\n", " "), name


def test_real_samples_through_prepare(tmp_path):
    from melp.data.store import ECGStore, prepare

    counts = prepare("cinc", CINC, tmp_path / "cinc", rate=100, seconds=10, progress=False)
    assert counts["kept"] == 23 and counts["rejected"] == 2
    rej = ECGStore(tmp_path / "cinc").rejects.set_index("id")["reason"].to_dict()
    # two real Ningbo records carry all-zero V2, V4, V6 (kept with allow_flat_leads=True)
    assert rej == {k: "flat lead: lead(s) V2, V4, V6 constant" for k in ("JS20004", "JS20008")}
    prepare("cpsc", CPSC, tmp_path / "cpsc", rate=500, seconds=10, progress=False)
    store = ECGStore(tmp_path / "cpsc")
    m = store.manifest.set_index("id")
    assert m["labels_icbeb"].map(list).to_dict() == {k: v[1] for k, v in EXPECTED_CPSC.items()}
    assert m["split"].to_dict() == {k: v[0] for k, v in EXPECTED_CPSC.items()}
    assert m.loc["A1984", "orig_length"] == 9500 and m.loc["A1984", "length"] == 5000  # first 10 s kept
    x, _ = store.signal(m.index.get_loc("A1984"))
    raw = scipy.io.loadmat(str(CPSC / "A1984.mat"))["ECG"][0, 0]["data"]
    order = [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]  # canonical <- CPSC (aVF and aVL swap places)
    np.testing.assert_array_equal(x, raw[order, :5000].astype(np.float16).astype(np.float32))
