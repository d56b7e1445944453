"""Helpers that WRITE small raw datasets into a temporary folder at test time.

Every builder writes files in the exact layout the matching reader expects (see
docs/data-sources.md) and returns the values a correct reader must produce, so tests can
compare by value. Signals are written as integers with a known gain, so the physical values
are exact (``digital / gain``).
"""

from __future__ import annotations

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
    folder: Path, name: str, data: np.ndarray, leads: list[str], rate: float, *, gain: float = 200.0,
    fmt: str = "16", comments: list[str] | None = None,
) -> np.ndarray:  # fmt: skip
    """Write ``data (L, T)`` mV as WFDB ``folder/name.{hea,dat}``; returns the exact stored values."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    digital = np.round(np.asarray(data) * gain).astype(np.int64)
    wfdb.wrsamp(
        name, fs=rate, units=["mV"] * len(leads), sig_name=list(leads), d_signal=digital.T.astype(np.int16),
        fmt=[fmt] * len(leads), adc_gain=[gain] * len(leads), baseline=[0] * len(leads),
        comments=comments or [], write_dir=str(folder),
    )  # fmt: skip
    return digital / gain


def write_cinc_mat(folder: Path, name: str, data: np.ndarray, *, gain: float = 1000.0, header: bool = True,
                   rate: int = 500, leads: list[str] = CINC_LEADS, dx: str | None = None) -> np.ndarray:  # fmt: skip
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
            lines.append(f"{name}.mat 16x1+24 {gain:g}(0)/mV 16 0 {int(val[i, 0])} 0 0 {lead}")
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
        rec_rows.append({"subject_id": subj, "study_id": study, "file_name": study,
                         "ecg_time": "2180-07-23 08:44:00", "path": rel})  # fmt: skip
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
