"""Helpers that WRITE small raw datasets into a temporary folder at test time.

Every builder writes files in the exact layout the matching reader expects (see
docs/data-sources.md) and returns the values a correct reader must produce, so tests can
compare by value. Signals are written as integers with a known gain, so the physical values
are exact (``digital / gain``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
CINC_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def ecg_like(n_leads: int, n_samples: int, seed: int, gain: float = 200.0) -> np.ndarray:
    """Deterministic (n_leads, n_samples) signal in mV, exactly representable as ints / gain:
    a 1.2 Hz-ish sawtooth plus noise, different per lead (amplitudes ~1 mV)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples)
    base = ((t % 417) / 417.0 - 0.5)[None, :] * rng.uniform(0.5, 2.0, size=(n_leads, 1))
    x = base + 0.05 * rng.standard_normal((n_leads, n_samples))
    return np.round(x * gain) / gain


def write_wfdb(
    folder: Path,
    name: str,
    data: np.ndarray,
    leads: list[str],
    rate: float,
    *,
    gain: float = 200.0,
    fmt: str = "16",
    comments: list[str] | None = None,
    units: str = "mV",
    digital: np.ndarray | None = None,
) -> np.ndarray:
    """Write ``data (L, T)`` (in ``units``) as WFDB ``folder/name.{hea,dat}`` with the given gain;
    returns the exact stored values ``digital / gain``. ``digital`` overrides the rounding."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    if digital is None:
        digital = np.round(np.asarray(data) * gain).astype(np.int64)
    wfdb.wrsamp(
        name,
        fs=rate,
        units=[units] * len(leads),
        sig_name=list(leads),
        d_signal=digital.T.astype(np.int16),
        fmt=[fmt] * len(leads),
        adc_gain=[gain] * len(leads),
        baseline=[0] * len(leads),
        comments=comments or [],
        write_dir=str(folder),
    )
    return digital / gain


def write_cinc_mat(
    folder: Path,
    name: str,
    data: np.ndarray,
    *,
    gain: float = 1000.0,
    header: bool = True,
    rate: int = 500,
    leads: list[str] = CINC_LEADS,
    dx: str | None = None,
) -> np.ndarray:
    """Write a Challenge-style ``name.mat`` (``val`` int16 (L, T)) and optionally ``name.hea``.
    Returns the exact physical values ``val / gain`` (mV)."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    val = np.round(np.asarray(data) * gain).astype(np.int16)
    scipy.io.savemat(str(folder / f"{name}.mat"), {"val": val}, format="4")
    if header:
        n = val.shape[1]
        lines = [f"{name} {len(leads)} {rate} {n}"]
        for i, lead in enumerate(leads):
            checksum = int(val[i].astype(np.int64).sum()) % 65536  # as the Challenge files carry it
            lines.append(f"{name}.mat 16x1+24 {gain:g}(0)/mV 16 0 {int(val[i, 0])} {checksum} 0 {lead}")
        lines += ["# Age: 50", "# Sex: Male", f"# Dx: {dx or '426783006'}"]
        (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return val / gain


def build_mimic(root: Path, studies: list[dict], n_samples: int = 5000) -> dict[str, np.ndarray]:
    """MIMIC-IV-ECG layout. ``studies``: dicts with subject_id, study_id, reports (list, None =
    missing) and optional ``write`` (False: row listed but no files). Returns id -> signal (mV)."""
    rec_rows, mm_rows, signals = [], [], {}
    for k, st in enumerate(studies):
        subj, study = str(st["subject_id"]), str(st["study_id"])
        rel = f"files/p{subj[:4]}/p{subj}/s{study}/{study}"
        rec_rows.append(
            {
                "subject_id": subj,
                "study_id": study,
                "file_name": study,
                "ecg_time": "2180-07-23 08:44:00",
                "path": rel,
            }
        )
        reports = list(st["reports"]) + [None] * (18 - len(st["reports"]))
        mm = {"subject_id": subj, "study_id": study, "cart_id": "6848296", "ecg_time": "2180-07-23 08:44:00"}
        mm.update({f"report_{i}": r for i, r in enumerate(reports)})
        mm.update(
            {"bandwidth": "0.005-150 Hz", "filtering": "60 Hz notch Baseline filter", "rr_interval": 659}
        )
        mm_rows.append(mm)
        if st.get("write", True):
            x = ecg_like(12, n_samples, seed=k)
            signals[f"{subj}_{study}"] = write_wfdb(root / Path(rel).parent, study, x, MIMIC_LEADS, 500)
    pd.DataFrame(rec_rows).to_csv(root / "record_list.csv", index=False)
    pd.DataFrame(mm_rows).to_csv(root / "machine_measurements.csv", index=False)
    return signals


def build_code15(root: Path, exams: list[dict], *, part: str = "exams_part0.hdf5") -> dict[int, np.ndarray]:
    """CODE-15% layout: ``exams.csv`` + one HDF5 with ``tracings`` (N, 4096, 12) and ``exam_id``.
    ``exams``: dicts with exam_id, patient_id, valid (number of non-padded samples, centred),
    labels (dict column -> 0/1 over 1dAVb, RBBB, LBBB, SB, AF, ST). Returns exam_id -> the valid
    (12, valid) signal in file lead order."""
    import h5py

    tracings = np.zeros((len(exams) + 1, 4096, 12), dtype=np.float32)  # + the dummy last row
    valid_signals = {}
    for i, ex in enumerate(exams):
        n = ex["valid"]
        start = (4096 - n) // 2
        x = ecg_like(12, n, seed=100 + i).astype(np.float32)
        x[:, 0] = x[:, 0] + 3.0  # non-zero first sample, so the valid span is exactly [start, start+n)
        x[:, -1] = x[:, -1] - 3.0
        tracings[i, start : start + n] = x.T  # (12, n) -> (n, 12)
        valid_signals[ex["exam_id"]] = x
    with h5py.File(root / part, "w") as fh:
        fh["tracings"] = tracings
        fh["exam_id"] = np.array([ex["exam_id"] for ex in exams] + [0], dtype=np.int64)
    cols = ["1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"]  # the order of the real exams.csv
    rows = []
    for ex in exams:
        row = {"exam_id": ex["exam_id"], "age": 60, "is_male": True}
        row.update({c: bool(ex["labels"].get(c, 0)) for c in cols})  # the real file writes True/False
        row.update({"patient_id": ex["patient_id"], "normal_ecg": False, "trace_file": part})
        rows.append(row)
    exams_csv = root / "exams.csv"
    old = pd.read_csv(exams_csv) if exams_csv.exists() else None
    table = pd.DataFrame(rows) if old is None else pd.concat([old, pd.DataFrame(rows)], ignore_index=True)
    table.to_csv(exams_csv, index=False)
    return valid_signals


# ----------------------------------------------------------------------------- bad-input corpus

BAD_RATE, BAD_SECONDS = 500, 4  # store settings of the corpus: 2000 samples per record


def _npy(root: Path, name: str, arr: np.ndarray, leads: list[str] | None, rate: float | None) -> str:
    np.save(root / f"{name}.npy", arr)
    if leads is not None:
        (root / f"{name}.json").write_text(json.dumps({"leads": leads, "rate": rate}))
    return f"{name}.npy"


def build_bad_corpus(root: Path) -> dict[str, dict]:
    """Write a generic-source corpus (``records.csv`` + files) mixing good and bad records.

    Returns ``id -> expectation``: ``{"kind": ..., "expect": "keep"|"repair"|"reject"|"missing",
    "reason": category prefix (rejects), "file": path in the rejects table,
    "value": canonical (12, T) float64 a direct read gives (kept, same rate)}``.
    """
    root.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, bytes]] = []  # (file, id, report bytes)
    exp: dict[str, dict] = {}
    perm = [CINC_LEADS.index(n) for n in MIMIC_LEADS]  # canonical row k <- CinC row perm[k]

    def add(rid, file, kind, expect, reason=None, value=None, report=b"sinus rhythm. normal ecg."):
        rows.append((file, rid, report))
        exp[rid] = {"kind": kind, "expect": expect, "reason": reason, "file": file, "value": value}

    # good records of several formats, mixed among the bad ones
    for k in range(6):
        x = ecg_like(12, 2500, seed=200 + k)
        if k % 2 == 0:
            _npy(root, f"good{k}", x[perm], CINC_LEADS, 500)  # stored in CinC order: reordered by name
            add(f"good{k}", f"good{k}.npy", "good npy (CinC lead order)", "keep", value=x)
        else:
            v = write_wfdb(root / "wfdb", f"good{k}", x, MIMIC_LEADS, 500)
            add(f"good{k}", f"wfdb/good{k}.hea", "good WFDB .dat", "keep", value=v)
    v = write_cinc_mat(root / "mat", "goodmat", ecg_like(12, 2000, seed=210, gain=1000))
    add("goodmat", "mat/goodmat.hea", "good CinC .mat + .hea", "keep", value=v[perm])
    upper = ["AVF", "I", "V6", "II", "AVL", "III", "AVR", "V1", "V2", "V3", "V4", "V5"]
    x = ecg_like(12, 2000, seed=211)
    v = write_wfdb(
        root / "wfdb",
        "goodcase",
        x[[MIMIC_LEADS.index(n if n[0] != "A" else "a" + n[1:]) for n in upper]],
        upper,
        500,
    )
    add("goodcase", "wfdb/goodcase.hea", "upper-case, permuted lead names", "keep", value=x)
    x = ecg_like(12, 2000, seed=212)
    write_wfdb(root / "wfdb", "gooduv", x * 1000, MIMIC_LEADS, 500, gain=1.0, units="uV")
    add("gooduv", "wfdb/gooduv.hea", "units uV (converted to mV)", "keep", value=np.round(x * 1000) / 1000)

    # repairs
    t = np.arange(4000) / 1000.0
    sine = np.sin(2 * np.pi * 5 * t)[None, :] * np.linspace(0.5, 1.5, 12)[:, None]
    _npy(root, "rate1000", sine, MIMIC_LEADS, 1000)
    add("rate1000", "rate1000.npy", "unexpected sampling rate (1000 Hz)", "repair")
    x = ecg_like(12, 1500, seed=213)
    _npy(root, "short", x, MIMIC_LEADS, 500)
    add("short", "short.npy", "shorter than the target (3 s of 4 s)", "repair", value=x)

    # rejected by the reader (BadRecord) or the store's checks
    write_wfdb(root / "wfdb", "trunc", ecg_like(12, 2500, seed=220), MIMIC_LEADS, 500)
    dat = root / "wfdb" / "trunc.dat"
    dat.write_bytes(dat.read_bytes()[: 2500 * 12])  # half the samples
    add("trunc", "wfdb/trunc.hea", "truncated .dat", "reject", "truncated signal")
    (root / "wfdb" / "badhea.hea").write_text("badhea twelve 500 abc\nthis is not a header\n")
    (root / "wfdb" / "badhea.dat").write_bytes(b"\0" * 100)
    add("badhea", "wfdb/badhea.hea", "malformed header", "reject", "bad header")
    x = ecg_like(12, 2000, seed=221)
    x[3, 100:110] = np.nan
    _npy(root, "nan", x, MIMIC_LEADS, 500)
    add("nan", "nan.npy", "NaN samples", "reject", "non-finite")
    d = np.round(ecg_like(12, 2000, seed=222) * 200).astype(np.int16)
    d[0, 5] = -32768  # WFDB's invalid-sample value for format 16 -> NaN
    write_wfdb(root / "wfdb", "nanwfdb", d / 200.0, MIMIC_LEADS, 500, digital=d)
    add("nanwfdb", "wfdb/nanwfdb.hea", "invalid WFDB sample (-32768)", "reject", "non-finite")
    x = ecg_like(12, 2000, seed=223)
    x[7, 50] = np.inf
    _npy(root, "inf", x, MIMIC_LEADS, 500)
    add("inf", "inf.npy", "Inf samples", "reject", "non-finite")
    _npy(root, "flat", np.zeros((12, 2000)), MIMIC_LEADS, 500)
    add("flat", "flat.npy", "flat line (all-zero record)", "reject", "flat record")
    x = ecg_like(12, 2000, seed=224)
    x[2] = 0.25
    _npy(root, "flatlead", x, MIMIC_LEADS, 500)
    add("flatlead", "flatlead.npy", "one flat lead", "reject", "flat lead")
    leads8 = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    _npy(root, "lead8", ecg_like(8, 2000, seed=225), leads8, 500)
    add("lead8", "lead8.npy", "8-lead record", "reject", "wrong leads")
    _npy(root, "duplead", ecg_like(12, 2000, seed=226), ["I", "II", "II", *MIMIC_LEADS[3:]], 500)
    add("duplead", "duplead.npy", "a lead name twice", "reject", "wrong leads")
    _npy(root, "overflow", ecg_like(12, 2000, seed=227) * 1e5, MIMIC_LEADS, 500)
    add("overflow", "overflow.npy", "float16 overflow (|x| > 65504)", "reject", "float16 overflow")
    x16 = ecg_like(12, 2000, seed=228).astype(np.float16)
    x16[0, 0] = np.float16(np.inf)
    _npy(root, "f16inf", x16, MIMIC_LEADS, 500)
    add("f16inf", "f16inf.npy", "float16 file holding inf", "reject", "non-finite")
    _npy(root, "onedim", np.ones(2000), MIMIC_LEADS, 500)
    add("onedim", "onedim.npy", "1-D array", "reject", "bad shape")
    _npy(root, "empty", np.zeros((12, 0)), MIMIC_LEADS, 500)
    add("empty", "empty.npy", "zero samples", "reject", "empty")
    _npy(root, "cutnpy", ecg_like(12, 2000, seed=229), MIMIC_LEADS, 500)
    (root / "cutnpy.npy").write_bytes((root / "cutnpy.npy").read_bytes()[:1000])
    add("cutnpy", "cutnpy.npy", "truncated .npy", "reject", "unreadable .npy file")
    _npy(root, "nosidecar", ecg_like(12, 2000, seed=230), None, None)
    add("nosidecar", "nosidecar.npy", ".npy without lead names/rate", "reject", "no lead names")
    write_cinc_mat(root / "mat", "badmat", ecg_like(12, 2000, seed=231, gain=1000))
    (root / "mat" / "badmat.mat").write_bytes(b"MATLAB garbage" * 10)
    add("badmat", "mat/badmat.hea", "corrupt .mat", "reject", "unreadable MATLAB file")

    # rejected or counted at index time (no signal read)
    _npy(root, "noreport", ecg_like(12, 2000, seed=232), MIMIC_LEADS, 500)
    add("noreport", "noreport.npy", "empty report", "reject", "empty report", report=b"")
    _npy(root, "badbytes", ecg_like(12, 2000, seed=233), MIMIC_LEADS, 500)
    add(
        "badbytes",
        "badbytes.npy",
        "undecodable report bytes",
        "reject",
        "bad encoding",
        report=b"sinus rhythm \xff\xfe normal",
    )
    add("absent", "absent.npy", "missing file", "missing")
    write_wfdb(root / "wfdb", "nodat", ecg_like(12, 2000, seed=234), MIMIC_LEADS, 500)
    (root / "wfdb" / "nodat.dat").unlink()
    add("nodat", "wfdb/nodat.hea", "header without its .dat", "missing")
    rows.append(("good1.npy", "good0", b"a second record with an existing id"))
    _npy(root, "good1", ecg_like(12, 2000, seed=235), MIMIC_LEADS, 500)
    exp["good0#dup"] = {
        "kind": "duplicate id",
        "expect": "reject",
        "reason": "duplicate id",
        "file": "good1.npy",
    }

    lines = [b"file,id,report"] + [f"{f},{i},".encode() + b'"' + r + b'"' for f, i, r in rows]
    (root / "records.csv").write_bytes(b"\n".join(lines) + b"\n")
    return exp
