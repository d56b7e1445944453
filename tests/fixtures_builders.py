"""Helpers that WRITE small raw datasets into a temporary folder at test time.

Every builder writes files in the exact layout the matching reader expects (see
docs/data-sources.md) and returns the values a correct reader must produce, so tests can
compare by value. Signals are written as integers with a known gain, so the physical values
are exact (``digital / gain``).
"""

from __future__ import annotations

import json
import os
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


# ----------------------------------------------------------------------------- corpus 2: the classes of bad input
#
# Each builder below writes one source's raw layout mixing good records with plausible bad ones and
# returns ``id -> expectation``:
#   kind    what the record is (one row of docs/data-sources.md "Bad input")
#   expect  "keep" (read as is), "repair" (documented repair), "reject" or "missing"
#   reason  category before the colon of the reject reason
#   file    the file the rejects table must name
#   value   for kept records: the canonical (12, T) signal in mV at the store rate, computed HERE
#           from the integers written (or by wfdb / scipy directly), never by melp's readers
#   labels  for kept records of labelled sources: the expected labels (None = not labelled)
# Store settings of every corpus: BAD_RATE Hz x BAD_SECONDS s (T samples).

T_BAD = BAD_RATE * BAD_SECONDS


def _exp(exp: dict, rid: str, kind: str, expect: str, *, reason=None, file=None, value=None, labels="-"):
    exp[rid] = {"kind": kind, "expect": expect, "reason": reason, "file": file, "value": value}
    if labels != "-":
        exp[rid]["labels"] = labels


def digital_ecg(n_leads: int, n: int, seed: int, amp: int = 1500) -> np.ndarray:
    """Integer (n_leads, n) samples, ECG-like, within +-amp (fits every format except 80/212)."""
    x = ecg_like(n_leads, n, seed, gain=1e6)
    return np.clip(np.round(x / np.abs(x).max() * amp), -amp, amp).astype(np.int64)


def encode_samples(d: np.ndarray, fmt: int) -> bytes:
    """Interleaved bytes of digital samples ``d (L, T)`` in WFDB format ``fmt`` (one sample per frame)."""
    frames = np.ascontiguousarray(d.T)  # (T, L): WFDB interleaves the signals of one file frame by frame
    flat = frames.ravel()
    if fmt == 16:
        return flat.astype("<i2").tobytes()
    if fmt == 61:
        return flat.astype(">i2").tobytes()
    if fmt == 160:
        return (flat + 32768).astype("<u2").tobytes()
    if fmt == 80:
        return (flat + 128).astype(np.uint8).tobytes()
    if fmt == 32:
        return flat.astype("<i4").tobytes()
    if fmt == 24:
        u = flat.astype(np.int64) & 0xFFFFFF
        return np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], 1).astype(np.uint8).tobytes()
    if fmt == 8:  # first differences; the header's initial value is the first sample
        diffs = np.diff(frames, axis=0, prepend=frames[:1]).ravel()
        assert np.abs(diffs).max() < 128
        return diffs.astype(np.int8).tobytes()
    raise ValueError(fmt)


def write_header(
    path: Path,
    record: str,
    rate: str,
    n: int | None,
    signals: list[dict],
    *,
    comments: list[str] | None = None,
    newline: str = "\n",
    sep: str = " ",
    encoding: str = "utf-8",
    bom: bool = False,
) -> None:
    """A WFDB header written field by field. ``signals``: dicts with file, fmt, gain, name and the
    optional baseline, units, adc_res, adc_zero, init, checksum (None = field left out)."""
    head = sep.join([record, str(len(signals)), rate] + ([str(n)] if n is not None else []))
    lines = ([] if not bom else ["# written by a tool that adds a byte-order mark"]) + [head]
    for s in signals:
        gain = s.get("gain_field")
        if gain is None:
            gain = f"{s['gain']:g}" + (f"({s['baseline']})" if s.get("baseline") is not None else "")
            gain += f"/{s['units']}" if s.get("units") is not None else ""
        fields = [s["file"], str(s["fmt"]), gain, str(s.get("adc_res", 16)), str(s.get("adc_zero", 0))]
        if s.get("init") is not None:
            fields += [str(s["init"]), str(s["checksum"]), "0", s["name"]]
        lines.append(sep.join(fields))
    lines += [f"# {c}" for c in comments or []]
    data = newline.join(lines) + newline
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode(encoding))


def write_record(
    folder: Path,
    name: str,
    d: np.ndarray,
    leads: list[str],
    *,
    fmt: int = 16,
    gain: float = 200.0,
    rate: str = "500",
    units: str | list[str] = "mV",
    baseline: int | None = None,
    adc_zero: int = 0,
    checksums: bool = True,
    with_length: bool = True,
    dat: str | None = None,
    **header_kw,
) -> Path:
    """Write ``d (L, T)`` as WFDB ``folder/name.hea`` + ``.dat`` in ``fmt`` with our own encoder;
    returns the header path."""
    folder.mkdir(parents=True, exist_ok=True)
    dat = dat or f"{name}.dat"
    (folder / dat).write_bytes(encode_samples(d, fmt))
    units = [units] * len(leads) if isinstance(units, str) else units
    sigs = []
    for i, lead in enumerate(leads):
        sigs.append(
            {
                "file": dat,
                "fmt": fmt,
                "gain": gain,
                "baseline": baseline,
                "units": units[i],
                "adc_zero": adc_zero,
                "name": lead,
                "init": int(d[i, 0]),
                "checksum": int(d[i].sum()) % 65536 if checksums else 0,
            }
        )
    if not checksums:
        for s in sigs:
            s["init"] = 0
    write_header(folder / f"{name}.hea", name, rate, d.shape[1] if with_length else None, sigs, **header_kw)
    return folder / f"{name}.hea"


class _Pickled:
    """An object whose unpickling would create a file: proof that a .npy is never unpickled."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _sidecar(root: Path, name: str, meta) -> None:
    (root / f"{name}.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))


def build_bad_corpus_2(root: Path) -> dict[str, dict]:
    """Generic source, ``records.csv`` (file, id, report): WFDB formats and header quirks, MATLAB
    containers, NumPy arrays and sidecars, lengths and rates, lead names. See the section comment
    for the expectation format. Returns ``id -> expectation`` (``expect`` keep/repair/reject/missing)."""
    import h5py
    import scipy.io
    import wfdb
    from scipy.signal import resample_poly

    root.mkdir(parents=True, exist_ok=True)
    exp: dict[str, dict] = {}
    rows: list[tuple[str, str]] = []  # (file, id)
    T = T_BAD
    L = MIMIC_LEADS  # canonical order: the expected value is the physical array itself

    def add(rid, file, kind, expect, reason=None, value=None):
        rows.append((file, rid))
        _exp(exp, rid, kind, expect, reason=reason, file=file if expect == "reject" else None, value=value)

    w = root / "wfdb"
    # --- WFDB storage formats, each compared with a direct computation --------------------------
    for k, fmt in enumerate((212, 80, 24, 32)):  # written by wfdb.wrsamp, compared with wfdb.rdrecord
        amp = {212: 2000, 80: 120, 24: 2**22, 32: 2**30}[fmt]
        d = digital_ecg(12, T, seed=300 + k, amp=amp)
        w.mkdir(parents=True, exist_ok=True)
        wfdb.wrsamp(
            f"f{fmt}",
            fs=500,
            units=["mV"] * 12,
            sig_name=L,
            d_signal=d.T.astype(np.int64),
            fmt=[str(fmt)] * 12,
            adc_gain=[amp / 2.0] * 12,
            baseline=[0] * 12,
            write_dir=str(w),
        )
        ref = wfdb.rdrecord(str(w / f"f{fmt}")).p_signal.T  # (12, T) mV, by wfdb
        add(f"f{fmt}", f"wfdb/f{fmt}.hea", f"WFDB format {fmt} (wfdb.wrsamp)", "keep", value=ref)
    for k, fmt in enumerate((61, 160, 16)):
        d = digital_ecg(12, T, seed=310 + k)
        write_record(w, f"f{fmt}", d, L, fmt=fmt, gain=400)
        add(f"f{fmt}", f"wfdb/f{fmt}.hea", f"WFDB format {fmt}", "keep", value=d / 400)
    d = np.cumsum(np.random.default_rng(320).integers(-20, 21, size=(12, T)), axis=1)
    # lead I dips to exactly -128 every 500 samples: a real value, format 8 has no invalid-sample code
    d[0] = np.round(-100 + 28 * np.sin(2 * np.pi * (np.arange(T) - 125) / 500))
    write_record(w, "f8", d, L, fmt=8, gain=100)
    add("f8", "wfdb/f8.hea", "WFDB format 8 (differences) reaching -128", "keep", value=d / 100)
    d = digital_ecg(12, T, seed=321)
    d[3, 500] = -32768  # FLAC 16-bit invalid sample: must become NaN, not -163.84 mV
    wfdb.wrsamp(
        "flac",
        fs=500,
        units=["mV"] * 12,
        sig_name=L,
        d_signal=d.T.astype(np.int16),
        fmt=["516"] * 12,
        adc_gain=[200.0] * 12,
        baseline=[0] * 12,
        write_dir=str(w),
    )
    add("flac", "wfdb/flac.hea", "FLAC (516) with an invalid sample", "reject", "non-finite")
    e = [digital_ecg(1, 2 * T, seed=322)[0]] + [r for r in digital_ecg(11, T, seed=323)]
    rec = wfdb.Record(
        record_name="spf2",
        n_sig=12,
        fs=500,
        sig_len=T,
        file_name=["spf2.dat"] * 12,
        fmt=["16"] * 12,
        samps_per_frame=[2] + [1] * 11,
        adc_gain=[200.0] * 12,
        baseline=[0] * 12,
        units=["mV"] * 12,
        sig_name=L,
        e_d_signal=[np.asarray(x, np.int64) for x in e],
        adc_res=[16] * 12,
        adc_zero=[0] * 12,
        init_value=[int(x[0]) for x in e],
        checksum=[int(x.sum()) % 65536 for x in e],
        block_size=[0] * 12,
    )
    rec.wrsamp(expanded=True, write_dir=str(w))
    spf = np.stack([e[0].reshape(T, 2).mean(1)] + e[1:]) / 200.0  # lead I: mean of its 2 samples per frame
    add("spf2", "wfdb/spf2.hea", "two samples per frame (16x2)", "keep", value=spf)
    d = digital_ecg(12, T, seed=324)
    write_record(w, "endian", d, L, fmt=16)
    (w / "endian.hea").write_text((w / "endian.hea").read_text().replace(".dat 16 ", ".dat 61 "))
    add(
        "endian",
        "wfdb/endian.hea",
        "little-endian file, header says big-endian (61)",
        "reject",
        "checksum mismatch",
    )

    # --- header text -------------------------------------------------------------------------------
    d = digital_ecg(12, T, seed=330)
    write_record(w, "crlf", d, L, newline="\r\n", sep="\t")
    add("crlf", "wfdb/crlf.hea", "header with CRLF line ends and tabs", "keep", value=d / 200)
    d = digital_ecg(12, T, seed=331)
    write_record(w, "bom", d, L, bom=True)
    add(
        "bom",
        "wfdb/bom.hea",
        "header with a UTF-8 byte-order mark and a leading comment",
        "keep",
        value=d / 200,
    )
    d = digital_ecg(12, T, seed=332)
    write_record(w, "nolen", d, L, with_length=False)
    add("nolen", "wfdb/nolen.hea", "record line without the signal length", "keep", value=d / 200)
    d = digital_ecg(12, T, seed=333)
    write_record(w, "counter", d, L, rate="500/1000(0)")
    add(
        "counter",
        "wfdb/counter.hea",
        "sampling frequency with counter frequency 500/1000(0)",
        "keep",
        value=d / 200,
    )
    d = digital_ecg(12, T, seed=334)
    write_record(w, "nofs", d, L)
    hea = (w / "nofs.hea").read_text().split("\n")
    hea[0] = "nofs 12"
    (w / "nofs.hea").write_text("\n".join(hea))
    add("nofs", "wfdb/nofs.hea", "record line without a sampling frequency", "reject", "bad header")
    d = digital_ecg(12, T, seed=335)
    write_record(w, "baseline", d, L, baseline=-40, adc_zero=7)
    add(
        "baseline",
        "wfdb/baseline.hea",
        "baseline in the gain field 200(-40) and adc_zero 7",
        "keep",
        value=(d + 40) / 200,
    )
    d = digital_ecg(12, T, seed=336)
    write_record(w, "adczero", d, L, adc_zero=12)  # no baseline: WFDB's baseline is the ADC zero
    add("adczero", "wfdb/adczero.hea", "adc_zero without a baseline", "keep", value=(d - 12) / 200)
    d = digital_ecg(12, T, seed=337)
    write_record(w, "gain0", d, L, gain=0)
    add("gain0", "wfdb/gain0.hea", "gain 0 (WFDB: the default 200 per mV)", "keep", value=d / 200)
    d = digital_ecg(12, T, seed=338)
    write_record(w, "mvcase", d, L, units=["mv", "millivolt", "MV", "millivolts"] * 3)
    add("mvcase", "wfdb/mvcase.hea", "units mv / millivolt in any case", "keep", value=d / 200)
    d = digital_ecg(12, T, seed=339)
    write_record(w, "micro_latin1", d, L, gain=0.2, units="µV", encoding="latin-1")
    add("micro_latin1", "wfdb/micro_latin1.hea", "units µV in a latin-1 header", "keep", value=d / 0.2 * 1e-3)
    d = digital_ecg(12, T, seed=340)
    write_record(w, "micro_greek", d, L, gain=0.2, units="μV")
    add(
        "micro_greek",
        "wfdb/micro_greek.hea",
        "units μV (Greek mu) in a UTF-8 header",
        "keep",
        value=d / 0.2 * 1e-3,
    )
    d = digital_ecg(12, T, seed=341)
    units = ["mV", "uV", "V"] * 4
    write_record(w, "mixed", d, L, gain=200, units=units)
    factor = np.array([{"mV": 1.0, "uV": 1e-3, "V": 1e3}[u] for u in units])[:, None]
    add("mixed", "wfdb/mixed.hea", "different units per lead (mV, uV, V)", "keep", value=d / 200 * factor)
    write_record(w, "mmhg", digital_ecg(12, T, seed=342), L, units=["mmHg"] + ["mV"] * 11)
    add("mmhg", "wfdb/mmhg.hea", "a lead in mmHg", "reject", "bad units")
    write_record(w, "nu_mix", digital_ecg(12, T, seed=343), L, units=["NU"] + ["mV"] * 11)
    add("nu_mix", "wfdb/nu_mix.hea", "NU next to mV in one record", "reject", "mixed units")
    write_record(w, "extra_line", digital_ecg(12, T, seed=344), L, with_length=False)
    text = (w / "extra_line.hea").read_text().splitlines()
    (w / "extra_line.hea").write_text(
        "\n".join(text[:2] + [text[1].replace(" I", " RESP")] + text[2:]) + "\n"
    )
    add(
        "extra_line",
        "wfdb/extra_line.hea",
        "more signal lines than the record line announces",
        "reject",
        "bad header",
    )
    write_record(w, "escape", digital_ecg(12, T, seed=345), L, dat="../outside.dat")
    add("escape", "wfdb/escape.hea", "signal file outside the header's folder (../)", "reject", "bad header")
    write_record(w, "fmt17", digital_ecg(12, T, seed=346), L)
    (w / "fmt17.hea").write_text((w / "fmt17.hea").read_text().replace(".dat 16 ", ".dat 17 "))
    add("fmt17", "wfdb/fmt17.hea", "unknown storage format 17", "reject", "bad header")
    d = digital_ecg(12, T, seed=347)
    (w / "two_a.dat").write_bytes(encode_samples(d[:6], 16))
    (w / "two_b.dat").write_bytes(encode_samples(d[6:], 61))
    sigs = [
        {
            "file": "two_a.dat" if i < 6 else "two_b.dat",
            "fmt": 16 if i < 6 else 61,
            "gain": 200,
            "units": "mV",
            "name": lead,
            "init": int(d[i, 0]),
            "checksum": int(d[i].sum()) % 65536,
        }
        for i, lead in enumerate(L)
    ]
    write_header(w / "two.hea", "two", "500", T, sigs)
    add("two", "wfdb/two.hea", "two signal files (formats 16 and 61) for one record", "keep", value=d / 200)
    d = digital_ecg(12, T, seed=348)
    write_record(w, "rec.v1", d, L)
    add("rec.v1", "wfdb/rec.v1.hea", "record name with a dot", "keep", value=d / 200)
    write_record(w, "longdat", digital_ecg(12, T, seed=349), L)
    (w / "longdat.dat").write_bytes((w / "longdat.dat").read_bytes() + b"\0" * 48)
    add("longdat", "wfdb/longdat.hea", ".dat longer than the header announces", "reject", "size mismatch")
    d = digital_ecg(12, T, seed=350)
    write_record(w, "initbad", d, L)
    text = (w / "initbad.hea").read_text().splitlines()
    parts = text[1].split()
    parts[5] = str(int(parts[5]) + 1)
    (w / "initbad.hea").write_text("\n".join([text[0], " ".join(parts), *text[2:]]) + "\n")
    add(
        "initbad",
        "wfdb/initbad.hea",
        "initial value that differs from the file",
        "reject",
        "checksum mismatch",
    )
    d = digital_ecg(12, T, seed=351)
    write_record(w, "shared_a", d, L)
    write_header(
        w / "shared_b.hea",
        "shared_b",
        "500",
        T,
        [
            {
                "file": "shared_a.dat",
                "fmt": 16,
                "gain": 200,
                "units": "mV",
                "name": lead,
                "init": int(d[i, 0]),
                "checksum": int(d[i].sum()) % 65536,
            }
            for i, lead in enumerate(L)
        ],
    )
    add(
        "shared_a",
        "wfdb/shared_a.hea",
        "a record whose .dat another header also names",
        "keep",
        value=d / 200,
    )
    add(
        "shared_b",
        "wfdb/shared_b.hea",
        "a second header naming another record's .dat",
        "reject",
        "duplicate file",
    )

    # --- MATLAB containers (WFDB header + NAME.mat, the CinC layout) -------------------------------
    m = root / "mat"
    m.mkdir()

    def mat_record(name, writer, d, fmt_field="16x1+24", n=T):
        writer(m / f"{name}.mat")
        sigs = [
            {
                "file": f"{name}.mat",
                "fmt": fmt_field,
                "gain": 1000,
                "baseline": 0,
                "units": "mV",
                "name": lead,
                "init": int(d[i, 0]),
                "checksum": int(d[i].sum()) % 65536,
            }
            for i, lead in enumerate(L)
        ]
        write_header(m / f"{name}.hea", name, "500", n, sigs)

    def v73(path, arr):
        with h5py.File(path, "w", userblock_size=512) as fh:
            fh["val"] = arr.T  # MATLAB is column-major: HDF5 holds the transpose
        with open(path, "r+b") as fh:
            fh.write(
                b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
            )

    def v4_big_endian(path, arr):
        head = np.array([1030, arr.shape[0], arr.shape[1], 0, 4], dtype=">i4").tobytes() + b"val\0"
        Path(path).write_bytes(head + np.asfortranarray(arr).T.astype(">i2").tobytes())  # column-major int16

    variants = {
        "v4_double": (
            "MATLAB v4, double",
            lambda p, a: scipy.io.savemat(p, {"val": a.astype(float)}, format="4"),
        ),
        "v4_int32": (
            "MATLAB v4, int32",
            lambda p, a: scipy.io.savemat(p, {"val": a.astype(np.int32)}, format="4"),
        ),
        "v4_big": ("MATLAB v4, big-endian", v4_big_endian),
        "v5": ("MATLAB v5", lambda p, a: scipy.io.savemat(p, {"val": a.astype(np.int16)})),
        "v5z": (
            "MATLAB v5, compressed",
            lambda p, a: scipy.io.savemat(p, {"val": a.astype(np.int16)}, do_compression=True),
        ),
        "v73": ("MATLAB v7.3 (HDF5)", lambda p, a: v73(p, a.astype(np.int16))),
        "v5_ecg": (
            "MATLAB v5, one variable not named val",
            lambda p, a: scipy.io.savemat(p, {"ecg": a.astype(np.int16)}),
        ),
    }
    for k, (name, (kind, writer)) in enumerate(variants.items()):
        d = digital_ecg(12, T, seed=360 + k)
        mat_record(name, lambda p, d=d, writer=writer: writer(str(p), d), d)
        add(name, f"mat/{name}.hea", kind, "keep", value=d / 1000)
    d = digital_ecg(12, T, seed=370)
    mat_record("v4_T", lambda p: scipy.io.savemat(str(p), {"val": d.T.astype(np.int16)}, format="4"), d)
    add("v4_T", "mat/v4_T.hea", "MATLAB v4 stored samples x leads", "repair", value=d / 1000)
    bad_mats = {
        "mat_two": (
            "several variables, none named val",
            lambda p, a: scipy.io.savemat(p, {"a": a, "b": a}),
            "bad MATLAB file",
        ),
        "mat_cplx": ("complex values", lambda p, a: scipy.io.savemat(p, {"val": a + 1j}), "bad MATLAB file"),
        "mat_3d": ("a 3-D array", lambda p, a: scipy.io.savemat(p, {"val": a[None]}), "bad MATLAB file"),
        "mat_mv": (
            "physical mV floats in the digital file",
            lambda p, a: scipy.io.savemat(p, {"val": a / 1000.0}),
            "bad MATLAB file",
        ),
        "mat_html": (
            "an HTML error page saved as .mat",
            lambda p, a: Path(p).write_bytes(b"<html>404 Not Found</html>" * 9),
            "bad MATLAB file",
        ),
        "mat_short": (
            "fewer samples than the header announces",
            lambda p, a: scipy.io.savemat(p, {"val": a[:, : T // 2]}),
            "shape mismatch",
        ),
    }
    for k, (name, (kind, writer, reason)) in enumerate(bad_mats.items()):
        d = digital_ecg(12, T, seed=380 + k)
        mat_record(name, lambda p, d=d, writer=writer: writer(str(p), d), d)
        add(name, f"mat/{name}.hea", kind, "reject", reason)

    # --- NumPy arrays and their sidecars -------------------------------------------------------------
    def npy(name, arr, meta=None, **kw):
        np.save(root / f"{name}.npy", arr, **kw)
        if meta is not None:
            _sidecar(root, name, meta)
        return f"{name}.npy"

    good = {"leads": L, "rate": 500}
    d = digital_ecg(12, T, seed=390)
    add(
        "npy_i16",
        npy("npy_i16", d.astype(np.int16), good),
        "int16 .npy without a gain",
        "reject",
        "bad dtype",
    )
    add(
        "npy_gain",
        npy("npy_gain", d.astype(np.int16), {**good, "gain": 250}),
        "int16 .npy with a sidecar gain",
        "keep",
        value=d / 250,
    )
    x = ecg_like(12, T, seed=391)
    add("npy_TL", npy("npy_TL", x.T.copy(), good), ".npy stored samples x leads", "repair", value=x)
    add(
        "npy_fortran", npy("npy_fortran", np.asfortranarray(x), good), "Fortran-ordered .npy", "keep", value=x
    )
    add("npy_be", npy("npy_be", x.astype(">f8"), good), "big-endian float .npy", "keep", value=x)
    x = ecg_like(12, T, seed=392)
    pickled = root / "UNPICKLED"
    add(
        "npy_obj",
        npy("npy_obj", np.array([_Pickled(str(pickled))], dtype=object), good, allow_pickle=True),
        "object .npy (a pickle that would create a file)",
        "reject",
        "unreadable .npy file",
    )
    rec = np.zeros(T, dtype=[("I", "f4"), ("II", "f4")])
    add("npy_struct", npy("npy_struct", rec, good), "structured-dtype .npy", "reject", "bad dtype")
    add("npy_bool", npy("npy_bool", x > 0, good), "boolean .npy", "reject", "bad dtype")
    add("npy_3d", npy("npy_3d", x[None], good), ".npy with a batch axis (1, 12, T)", "reject", "bad shape")
    np.savez(root / "z.npz", x=x)
    add("npz", "z.npz", ".npz archive listed as a record", "reject", "unsupported file")
    (root / "afolder").mkdir()
    add("afolder", "afolder", "a folder listed as a record", "reject", "not a record")
    scipy.io.savemat(str(root / "lone.mat"), {"val": digital_ecg(12, T, seed=393).astype(np.int16)})
    add("lone", "lone.mat", ".mat listed without its .hea", "reject", "unsupported file")
    x = ecg_like(12, T, seed=394)
    add(
        "rate_str",
        npy("rate_str", x, {"leads": L, "rate": "500"}),
        'sidecar rate "500" (a string)',
        "keep",
        value=x,
    )
    add(
        "rate_hz",
        npy("rate_hz", x, {"leads": L, "rate": "500 Hz"}),
        'sidecar rate "500 Hz"',
        "reject",
        "bad sidecar",
    )
    add(
        "rate_true",
        npy("rate_true", x, {"leads": L, "rate": True}),
        "sidecar rate true",
        "reject",
        "bad sidecar",
    )
    add("rate_zero", npy("rate_zero", x, {"leads": L, "rate": 0}), "sidecar rate 0", "reject", "bad rate")
    add("rate_neg", npy("rate_neg", x, {"leads": L, "rate": -500}), "sidecar rate -500", "reject", "bad rate")
    add(
        "leads_str",
        npy("leads_str", x, {"leads": ",".join(L), "rate": 500}),
        "sidecar leads as one string",
        "reject",
        "bad sidecar",
    )
    add(
        "side_fs",
        npy("side_fs", x, {"leads": L, "fs": 500}),
        'sidecar key "fs" instead of "rate"',
        "reject",
        "bad sidecar",
    )
    add(
        "side_bad", npy("side_bad", x, "{'leads': ['I']"), "sidecar that is not JSON", "reject", "bad sidecar"
    )
    add(
        "side_n11",
        npy("side_n11", x, {"leads": L[:11], "rate": 500}),
        "sidecar with 11 names for 12 leads",
        "reject",
        "wrong leads",
    )
    add("side_uv", npy("side_uv", x * 1000, {**good, "units": "uV"}), 'sidecar units "uV"', "keep", value=x)

    # --- lengths and rates -----------------------------------------------------------------------------
    add("half_s", npy("half_s", ecg_like(12, 250, seed=395), good), "0.5 s record", "reject", "too short")
    add(
        "one_sample",
        npy("one_sample", ecg_like(12, 2, seed=396)[:, :1], good),
        "1-sample record",
        "reject",
        "too short",
    )
    for k, (rate, up, down) in enumerate(((257, 500, 257), (360, 25, 18), (499.7, 5000, 4997), (1000, 1, 2))):
        n = int(round(rate * 4.2))
        x = ecg_like(12, n, seed=397 + k)
        want = resample_poly(x, up, down, axis=-1, padtype="line")[:, :T]  # scipy, with the exact ratio
        name = f"rate_{str(rate).replace('.', '_')}"
        add(name, npy(name, x, {"leads": L, "rate": rate}), f"recorded at {rate} Hz", "repair", value=want)
    x = ecg_like(12, 60 * 500, seed=401)
    add("long60", npy("long60", x, good), "60 s record (longer than the window)", "repair", value=x[:, :T])
    x = ecg_like(12, T, seed=404)
    x[2] += 300.0  # 300 mV of electrode offset under a ~2 mV lead: float16 steps of 0.25 mV there
    add("dc300", npy("dc300", x, good), "a lead on a 300 mV DC offset", "reject", "float16 precision")
    x = ecg_like(12, T, seed=405)
    x[2] += 5.0  # 5 mV of offset: float16 steps of 0.004 mV, the waveform survives
    add("dc5", npy("dc5", x, good), "a lead on a 5 mV DC offset", "keep", value=x)

    # --- lead names ----------------------------------------------------------------------------------------
    x = ecg_like(12, T, seed=402)
    names = ["Lead I", "D2", "DIII", "aVR", "lead aVF", "AVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    add(
        "lead_alias",
        npy("lead_alias", x, {"leads": names, "rate": 500}),
        "lead names 'Lead I', 'D2', 'DIII'",
        "keep",
        value=x,
    )
    add(
        "mlii",
        npy("mlii", x, {"leads": ["I", "MLII", *L[2:]], "rate": 500}),
        "MLII instead of II",
        "reject",
        "wrong leads",
    )
    add(
        "neg_avr",
        npy("neg_avr", x, {"leads": [*L[:3], "-aVR", *L[4:]], "rate": 500}),
        "-aVR (inverted) instead of aVR",
        "reject",
        "wrong leads",
    )
    resp = np.concatenate([x, ecg_like(1, T, seed=403)])
    add(
        "resp",
        npy("resp", resp, {"leads": [*L, "RESP"], "rate": 500}),
        "an extra respiration channel",
        "keep",
        value=x,
    )

    lines = ["file,id,report"] + [f"{f},{i},sinus rhythm. normal ecg." for f, i in rows]
    (root / "records.csv").write_text("\n".join(lines) + "\n")
    exp["_unpickled_marker"] = {"kind": "marker", "expect": "none", "file": str(pickled)}
    return exp


def build_label_corpus(root: Path) -> dict[str, dict]:
    """Generic source, table cells: ``cells.csv`` (label columns AF, NORM with every spelling,
    split/fold/patient cells, paths, duplicates, symbolic links; a BOM and padded column names) and
    ``lists.csv`` (a ``labels`` column of class lists). Prepare with ``-o csv=cells.csv`` /
    ``-o csv=lists.csv``; ids of the second table start with ``ll_``. ``expect["labels"]`` is the
    expected label list (None = not labelled), ``split``/``fold``/``patient`` where given."""
    root.mkdir(parents=True, exist_ok=True)
    exp: dict[str, dict] = {}
    L = MIMIC_LEADS
    (root / "sub").mkdir()
    (root / "realdir").mkdir()
    os.symlink("sub", root / "alias")  # a symbolic link to a folder inside ROOT
    os.symlink("realdir", root / "linked")

    def npy(rel: str, seed: int) -> np.ndarray:
        x = ecg_like(12, T_BAD, seed=seed)
        np.save(root / rel, x)
        (root / rel).with_suffix(".json").write_text(json.dumps({"leads": L, "rate": BAD_RATE}))
        return x

    rows = []  # file, id, patient, split, fold, AF, NORM

    def add(rid, file, kind, expect, cells, reason=None, value=None, labels="-", **extra):
        rows.append([file, rid, *cells])
        _exp(
            exp,
            rid,
            kind,
            expect,
            reason=reason,
            file=file.strip() if expect == "reject" else None,
            value=value,
            labels=labels,
        )
        exp[rid].update(extra)

    seed = 500
    plain = ["p0", "train", "1"]
    for k, (af, norm, labels, kind) in enumerate(
        [
            ("TRUE", " no ", ["AF"], "label cells TRUE / ' no '"),
            (" yes ", "0", ["AF"], "label cells ' yes ' / 0"),
            ("1.00", "0.0", ["AF"], "label cells 1.00 / 0.0"),
            ("f", "T", ["NORM"], "label cells f / T"),
            ("False", "Positive", ["NORM"], "label cells False / Positive"),
            ("n", "y", ["NORM"], "label cells n / y"),
            ("0", "0", [], "labelled, negative for every class"),
            ("", "", None, "empty label cells (not labelled)"),
            ("NaN", "nan", None, "NaN label cells (not labelled)"),
        ]
    ):
        x = npy(f"sub/c{k}.npy", seed + k)
        add(f"c{k}", f"sub/c{k}.npy", kind, "keep", [*plain, af, norm], value=x, labels=labels)
    x = npy("sub/two.npy", 520)
    add(
        "lab_two",
        "sub/two.npy",
        "label cell 2 (the column stays a label column)",
        "reject",
        [*plain, "2", "0"],
        "bad cell",
    )
    npy("sub/half.npy", 521)
    add("lab_half", "sub/half.npy", "label cell 0.5", "reject", [*plain, "0", "0.5"], "bad cell")
    npy("sub/partial.npy", 522)
    add(
        "lab_partial",
        "sub/partial.npy",
        "a row with one label cell empty",
        "reject",
        [*plain, "1", ""],
        "bad cell",
    )
    x = npy("sub/fold3.npy", 523)
    add(
        "fold_float",
        "sub/fold3.npy",
        "fold written 3.0",
        "keep",
        ["p1", "train", "3.0", "1", "0"],
        value=x,
        labels=["AF"],
        fold=3,
    )
    npy("sub/foldx.npy", 524)
    add("fold_x", "sub/foldx.npy", "fold x", "reject", ["p1", "train", "x", "1", "0"], "bad cell")
    x = npy("sub/val.npy", 525)
    add(
        "split_val",
        "sub/val.npy",
        "split Validation",
        "keep",
        ["p2", "Validation", "", "0", "1"],
        value=x,
        labels=["NORM"],
        split="val",
    )
    x = npy("sub/test.npy", 526)
    add(
        "split_test",
        "sub/test.npy",
        "split ' TEST '",
        "keep",
        ["p2", " TEST ", "", "0", "1"],
        value=x,
        labels=["NORM"],
        split="test",
    )
    npy("sub/holdout.npy", 527)
    add(
        "split_bad", "sub/holdout.npy", "split holdout", "reject", ["p2", "holdout", "", "0", "1"], "bad cell"
    )
    add("path_up", "../outside.npy", "file with .. leaving ROOT", "reject", [*plain, "0", "1"], "bad cell")
    add(
        "path_abs",
        str(root / "sub" / "c0.npy"),
        "absolute file path",
        "reject",
        [*plain, "0", "1"],
        "bad cell",
    )
    x = npy("sub/win.npy", 528)
    add(
        "path_win",
        "sub\\win.npy",
        "Windows backslashes in the path",
        "keep",
        [*plain, "0", "1"],
        value=x,
        labels=["NORM"],
    )
    x = npy("realdir/only.npy", 529)
    add(
        "via_link",
        "linked/only.npy",
        "a record inside a symlinked folder",
        "keep",
        [*plain, "1", "0"],
        value=x,
        labels=["AF"],
    )
    x = npy("sub/aliased.npy", 530)
    add(
        "alias_a",
        "sub/aliased.npy",
        "a record also listed through a symlink",
        "keep",
        [*plain, "1", "0"],
        value=x,
        labels=["AF"],
    )
    add(
        "alias_b",
        "alias/aliased.npy",
        "the same file through a symlinked folder",
        "reject",
        [*plain, "1", "0"],
        "duplicate file",
    )
    npy("sub/conflict.npy", 531)
    add(
        "conf_a",
        "sub/conflict.npy",
        "one file listed twice with different labels",
        "reject",
        [*plain, "1", "0"],
        "conflicting duplicate",
    )
    add(
        "conf_b",
        "sub/conflict.npy",
        "(its second row)",
        "reject",
        [*plain, "0", "1"],
        "conflicting duplicate",
    )
    x = npy("sub/twice.npy", 532)
    add(
        "twice_a",
        "sub/twice.npy",
        "one file listed twice under two ids (same labels)",
        "keep",
        [*plain, "1", "0"],
        value=x,
        labels=["AF"],
    )
    add("twice_b", "sub/twice.npy", "(its second row)", "reject", [*plain, "1", "0"], "duplicate file")
    x = npy("sub/nanpat.npy", 533)
    add(
        "nan_patient",
        " sub/nanpat.npy ",
        "patient 'nan', padded file cell",
        "keep",
        ["nan", "train", "1", "0", "1"],
        value=x,
        labels=["NORM"],
        patient=None,
    )
    for k in range(6):  # more plain rows: AF and NORM must stay label columns with their stray cells
        x = npy(f"sub/p{k}.npy", 540 + k)
        add(
            f"p{k}",
            f"sub/p{k}.npy",
            "plain labelled record",
            "keep",
            [*plain, str(k % 2), str(1 - k % 2)],
            value=x,
            labels=["AF"] if k % 2 else ["NORM"],
        )
    head = "\ufefffile , id,patient ,split,fold, AF ,NORM "
    lines = [head] + [",".join(f'"{c}"' if "," in c else c for c in r) for r in rows]
    (root / "cells.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    lrows = []
    for k, (cell, labels, kind) in enumerate(
        [
            ("AFIB;PAC", ["AFIB", "PAC"], "labels 'AFIB;PAC'"),
            ('"AFIB, PAC"', ["AFIB", "PAC"], "labels 'AFIB, PAC' (commas)"),
            ("", [], "empty labels cell (no class applies)"),
            ("nan", None, "labels 'nan' (not labelled)"),
            ("NORM", ["NORM"], "labels NORM; the table has columns named length and crc32 (store columns)"),
        ]
    ):
        x = npy(f"sub/l{k}.npy", 560 + k)
        lrows.append(f"sub/l{k}.npy,ll_{k},{cell},7,123")
        _exp(exp, f"ll_{k}", kind, "keep", value=x, labels=labels)
    (root / "lists.csv").write_text("file,id,labels,length,crc32\n" + "\n".join(lrows) + "\n")
    return exp


def _cinc_record(
    folder: Path, name: str, d: np.ndarray, comments: list[str], *, writer=None, rate="500"
) -> None:
    """A Challenge record: ``val`` = digital ``d`` (12, T) int, gain 1000/mV, CinC lead order, with
    ``comments`` as the header's ``#`` lines; ``writer(path, val)`` writes the .mat (default v4)."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    val = d.astype(np.int16)
    (writer or (lambda p, v: scipy.io.savemat(str(p), {"val": v}, format="4")))(folder / f"{name}.mat", val)
    sigs = [
        {
            "file": f"{name}.mat",
            "fmt": "16x1+24",
            "gain": 1000,
            "baseline": 0,
            "units": "mV",
            "name": lead,
            "init": int(val[i, 0]),
            "checksum": int(val[i].astype(np.int64).sum()) % 65536,
        }
        for i, lead in enumerate(CINC_LEADS)
    ]
    write_header(folder / f"{name}.hea", name, rate, d.shape[1], sigs, comments=comments)


def build_bad_cinc(root: Path) -> dict[str, dict]:
    """CinC Challenge layout: ``# Dx:`` lines of every shape, MATLAB variants, an INCART-like rate.
    ``labels`` are sets of Challenge abbreviations (AF 164889003, NSR 426783006, RBBB 59118001)."""
    import scipy.io
    from scipy.signal import resample_poly

    exp: dict[str, dict] = {}
    perm = [CINC_LEADS.index(n) for n in MIMIC_LEADS]  # canonical row k <- CinC row perm[k]
    g = root / "training" / "g1"
    age = ["Age: 60", "Sex: Female"]
    cases = [
        ("E00001", ["Dx: 164889003"], "keep", None, {"AF"}, "Dx with one code"),
        ("E00002", ["Dx: 164889003;426783006"], "keep", None, {"AF", "NSR"}, "Dx codes separated by ;"),
        ("E00003", ["Dx: 164889003 426783006"], "keep", None, {"AF", "NSR"}, "Dx codes separated by spaces"),
        ("E00004", ["Dx: 164889003, 59118001,"], "keep", None, {"AF", "RBBB"}, "Dx with a trailing comma"),
        ("E00005", ["Dx: 164889003,AF"], "reject", "bad Dx", None, "Dx entry that is not a code"),
        ("E00006", [], "keep", None, None, "no Dx line (not labelled)"),
        ("E00007", ["Dx: "], "keep", None, None, "empty Dx line (not labelled)"),
        ("E00008", ["Dx: 164889003", "Dx: 426783006"], "reject", "bad Dx", None, "two different Dx lines"),
        ("E00009", ["Dx: 426783006", "Dx: 426783006"], "keep", None, {"NSR"}, "the same Dx line twice"),
        ("E00010", ["Dx: 999999999"], "keep", None, set(), "only unmapped Dx codes (labelled, no class)"),
        ("E00011", ["Dx 164889003"], "reject", "bad Dx", None, "Dx line without its colon"),
    ]
    for k, (name, dx, expect, reason, labels, kind) in enumerate(cases):
        d = digital_ecg(12, T_BAD, seed=600 + k, amp=3000)
        _cinc_record(g, name, d, age + dx)
        rel = f"training/g1/{name}.hea"
        _exp(
            exp,
            name,
            kind,
            expect,
            reason=reason,
            file=rel if expect == "reject" else None,
            value=d[perm] / 1000,
            labels=labels,
        )
    d = digital_ecg(12, T_BAD, seed=620, amp=3000)
    _cinc_record(
        g,
        "E00020",
        d,
        [*age, "Dx: 164889003"],
        writer=lambda p, v: scipy.io.savemat(str(p), {"val": v}, do_compression=True),
    )
    _exp(exp, "E00020", "CinC .mat as compressed MATLAB v5", "keep", value=d[perm] / 1000, labels={"AF"})
    d = digital_ecg(12, T_BAD, seed=621, amp=3000)
    _cinc_record(
        g,
        "E00021",
        d,
        [*age, "Dx: 164889003"],
        writer=lambda p, v: scipy.io.savemat(str(p), {"val": v.T.copy()}, format="4"),
    )
    _exp(exp, "E00021", "CinC .mat stored samples x leads", "repair", value=d[perm] / 1000, labels={"AF"})
    d = digital_ecg(12, T_BAD, seed=623, amp=3000)
    _cinc_record(g, "E00030", d, [*age, "Dx: 164889003"])
    copied = (g / "E00030.hea").read_text().replace("E00030", "E00031", 1)  # the record line only
    (g / "E00031.hea").write_text(copied)
    _exp(
        exp,
        "E00030",
        "a record whose .mat a copied header also names",
        "keep",
        value=d[perm] / 1000,
        labels={"AF"},
    )
    _exp(
        exp,
        "E00031",
        "a copied header naming another record's .mat",
        "reject",
        reason="duplicate file",
        file="training/g1/E00031.hea",
    )
    n = int(257 * 4.5)
    d = digital_ecg(12, n, seed=622, amp=3000)
    _cinc_record(root / "training" / "incart", "I0001", d, [*age, "Dx: 426783006"], rate="257")
    want = resample_poly(d[perm] / 1000, 500, 257, axis=-1, padtype="line")[:, :T_BAD]
    _exp(exp, "I0001", "INCART-like record at 257 Hz", "repair", value=want, labels={"NSR"})
    return exp


def _cpsc_mat(path: Path, data: np.ndarray, *, v73: bool = False) -> None:
    import h5py
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    if v73:
        with h5py.File(path, "w", userblock_size=512) as fh:
            grp = fh.create_group("ECG")
            grp["data"] = data.T  # column-major MATLAB: HDF5 holds the transpose
            grp["age"] = np.array([[60.0]])
        with open(path, "r+b") as fh:
            fh.write(
                b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
            )
        return
    rec = np.zeros((1, 1), dtype=[("sex", object), ("age", object), ("data", object)])
    rec[0, 0] = ("Male", np.array([[60.0]]), data)
    scipy.io.savemat(str(path), {"ECG": rec})


def _split_csv(path: Path, rows: list[dict], classes: list[str], first: list[str]) -> None:
    table = pd.DataFrame(
        [{**{c: r.get(c, "") for c in first}, **{c: r["cells"].get(c, "0") for c in classes}} for r in rows]
    )
    table.to_csv(path, index=False)


def build_bad_cpsc(root: Path) -> dict[str, dict]:
    """CPSC 2018 layout with our own split CSVs in ROOT: duplicates across folders and splits, a
    bad label cell, transposed and v7.3 ECG.data, an unlabelled row."""
    from melp.data.readers.cpsc import ICBEB_CLASSES

    exp: dict[str, dict] = {}
    perm = [CINC_LEADS.index(n) for n in MIMIC_LEADS]  # CPSC lead order = CinC order
    first = ["patient_id", "filename"]
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}

    def rec(name, folder="a", seed=0, **kw):
        x = ecg_like(12, T_BAD, seed=seed)
        _cpsc_mat(
            root / folder / f"{name}.mat", x.T.copy() if kw.get("transposed") else x, v73=kw.get("v73", False)
        )
        return x

    x = rec("A0001", seed=700)
    splits["train"].append({"patient_id": "1", "filename": "A0001", "cells": {"AFIB": "1"}})
    _exp(exp, "A0001", "CPSC record", "keep", value=x[perm], labels=["AFIB"])
    x = rec("A0002", "a", seed=701)
    rec("A0002", "b", seed=702)
    splits["train"].append({"patient_id": "2", "filename": "A0002", "cells": {"NORM": "1"}})
    _exp(
        exp,
        "A0002",
        "the same file name in two folders (the first is kept)",
        "keep",
        value=x[perm],
        labels=["NORM"],
    )
    _exp(
        exp,
        "A0002#b",
        "(its copy in the second folder)",
        "reject",
        reason="duplicate file",
        file="b/A0002.mat",
    )
    rec("A0003", seed=703)
    splits["train"].append({"patient_id": "3", "filename": "A0003", "cells": {"NORM": "1"}})
    splits["test"].append({"patient_id": "3", "filename": "A0003", "cells": {"NORM": "1"}})
    _exp(
        exp,
        "A0003",
        "a record in two split CSVs",
        "reject",
        reason="conflicting duplicate",
        file="a/A0003.mat",
    )
    _exp(exp, "A0003#2", "(its second listing)", "reject", reason="conflicting duplicate", file="a/A0003.mat")
    x = rec("A0004", seed=704)
    splits["val"] += [{"patient_id": "4", "filename": "A0004", "cells": {"PAC": "1"}}] * 2
    _exp(exp, "A0004", "a record listed twice in one split CSV", "keep", value=x[perm], labels=["PAC"])
    _exp(exp, "A0004#2", "(its second, identical row)", "reject", reason="duplicate id", file="a/A0004.mat")
    rec("A0005", seed=705)
    splits["val"].append({"patient_id": "5", "filename": "A0005", "cells": {"PAC": "2"}})
    _exp(exp, "A0005", "label cell 2", "reject", reason="bad cell", file="a/A0005.mat")
    x = rec("A0006", seed=706, transposed=True)
    splits["test"].append({"patient_id": "6", "filename": "A0006", "cells": {"STD": "True"}})
    _exp(exp, "A0006", "ECG.data stored samples x leads", "repair", value=x[perm], labels=["STD"])
    x = rec("A0007", seed=707, v73=True)
    splits["test"].append({"patient_id": "7", "filename": "A0007", "cells": {"CRBBB": "yes"}})
    _exp(exp, "A0007", "MATLAB v7.3 struct ECG.data", "keep", value=x[perm], labels=["CRBBB"])
    x = rec("A0008", seed=708)
    splits["test"].append({"patient_id": "8", "filename": "A0008", "cells": dict.fromkeys(ICBEB_CLASSES, "")})
    _exp(exp, "A0008", "every label cell empty (not labelled)", "keep", value=x[perm], labels=None)
    rec_i16 = np.round(ecg_like(12, T_BAD, seed=709) * 1000).astype(np.int16)
    _cpsc_mat(root / "a" / "A0009.mat", rec_i16)
    splits["test"].append({"patient_id": "9", "filename": "A0009", "cells": {"NORM": "1"}})
    _exp(
        exp,
        "A0009",
        "ECG.data as int16 ADC counts (not mV)",
        "reject",
        reason="bad dtype",
        file="a/A0009.mat",
    )
    for split, rows in splits.items():
        _split_csv(root / f"icbeb_{split}.csv", rows, ICBEB_CLASSES, first)
    return exp


def build_bad_chapman(root: Path) -> dict[str, dict]:
    """Chapman layout: ``ecg_path`` in every spelling, a path leaving ROOT, a record in two splits,
    a record without header, a bad label cell."""
    from melp.data.readers.chapman import CHAPMAN_CLASSES

    exp: dict[str, dict] = {}
    perm = [CINC_LEADS.index(n) for n in MIMIC_LEADS]
    d = root / "WFDBRecords" / "01" / "010"
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    cases = [
        ("JS00001", "/chapman/WFDBRecords/01/010/JS00001.mat", "train", "ecg_path with /chapman/"),
        ("JS00002", "WFDBRecords/01/010/JS00002.mat", "train", "ecg_path without the /chapman/ prefix"),
        ("JS00003", "chapman/WFDBRecords/01/010/JS00003.mat", "val", "ecg_path chapman/... (no leading /)"),
        ("JS00004", "/WFDBRecords/01/010/JS00004.mat", "test", "ecg_path /WFDBRecords/..."),
        ("JS00005", "\\chapman\\WFDBRecords\\01\\010\\JS00005.mat", "test", "ecg_path with backslashes"),
    ]
    for k, (name, path, split, kind) in enumerate(cases):
        x = write_cinc_mat(d, name, ecg_like(12, T_BAD, seed=800 + k, gain=1000))
        splits[split].append({"ecg_path": path, "cells": {"SR": "1"}})
        _exp(exp, name, kind, "keep", value=x[perm], labels=["SR"])
    splits["train"].append({"ecg_path": "/chapman/../../JS00009.mat", "cells": {"SR": "1"}})
    _exp(exp, "JS00009", "ecg_path leaving ROOT", "reject", reason="bad cell", file="../../JS00009.mat")
    write_cinc_mat(d, "JS00006", ecg_like(12, T_BAD, seed=806, gain=1000))
    for split in ("train", "val"):
        splits[split].append({"ecg_path": "/chapman/WFDBRecords/01/010/JS00006.mat", "cells": {"SR": "1"}})
    _exp(
        exp,
        "JS00006",
        "a record in two split CSVs",
        "reject",
        reason="conflicting duplicate",
        file="WFDBRecords/01/010/JS00006.mat",
    )
    _exp(
        exp,
        "JS00006#2",
        "(its second listing)",
        "reject",
        reason="conflicting duplicate",
        file="WFDBRecords/01/010/JS00006.mat",
    )
    x = write_cinc_mat(d, "JS00007", ecg_like(12, T_BAD, seed=807, gain=1000), header=False)
    splits["test"].append({"ecg_path": "/chapman/WFDBRecords/01/010/JS00007.mat", "cells": {"AFIB": "1"}})
    _exp(exp, "JS00007", ".mat without .hea (documented defaults)", "keep", value=x[perm], labels=["AFIB"])
    write_cinc_mat(d, "JS00008", ecg_like(12, T_BAD, seed=808, gain=1000))
    splits["val"].append({"ecg_path": "/chapman/WFDBRecords/01/010/JS00008.mat", "cells": {"SR": "x"}})
    _exp(exp, "JS00008", "label cell x", "reject", reason="bad cell", file="WFDBRecords/01/010/JS00008.mat")
    import scipy.io

    scipy.io.savemat(str(d / "JS00010.mat"), {"val": ecg_like(12, T_BAD, seed=810)})  # mV floats, no .hea
    splits["test"].append({"ecg_path": "/chapman/WFDBRecords/01/010/JS00010.mat", "cells": {"SR": "1"}})
    _exp(
        exp,
        "JS00010",
        ".mat without .hea holding mV floats (not counts)",
        "reject",
        reason="bad MATLAB file",
        file="WFDBRecords/01/010/JS00010.mat",
    )
    for split, rows in splits.items():
        table = [{"ecg_path": r["ecg_path"], "age": "50", "diagnose": "", "cells": r["cells"]} for r in rows]
        _split_csv(root / f"chapman_{split}.csv", table, CHAPMAN_CLASSES, ["ecg_path", "age", "diagnose"])
    return exp


def build_bad_code15(root: Path) -> dict[str, dict]:
    """CODE-15% layout: duplicate exam ids inside one HDF5 and across parts, label cells of every
    accepted spelling, bad and float-written exam ids, conflicting and identical duplicate rows."""
    import h5py

    from melp.data.readers.code15 import CODE_LEADS

    exp: dict[str, dict] = {}
    assert CODE_LEADS[3:6] == ["AVR", "AVL", "AVF"]
    perm = [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]  # canonical lead k <- CODE column perm[k] (aVF/aVL swap)
    n = 4 * 400  # 4 s at 400 Hz, no padding
    parts = {"exams_part0.hdf5": [21, 22, 23, 23, 24, 25, 26, 27, 28], "exams_part1.hdf5": [21, 29]}
    signals: dict[tuple[str, int], np.ndarray] = {}
    for p, (file, ids) in enumerate(parts.items()):
        tr = np.zeros((len(ids), n, 12), dtype=np.float32)
        for r in range(len(ids)):
            x = ecg_like(12, n, seed=900 + 10 * p + r).astype(np.float32)
            x[:, 0] += 3.0  # non-zero first and last samples: no padding to strip
            x[:, -1] -= 3.0
            tr[r] = x.T
            signals[(file, r)] = x
        with h5py.File(root / file, "w") as fh:
            fh["tracings"] = tr
            fh["exam_id"] = np.array(ids, dtype=np.int64)
    from scipy.signal import resample_poly

    def value(file, r):
        return resample_poly(signals[(file, r)][perm].astype(np.float64), 5, 4, axis=-1, padtype="line")[
            :, :T_BAD
        ]

    cols = ["1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"]
    rows = []

    def row(exam, file, cells, patient="p"):
        rows.append(
            {
                "exam_id": exam,
                "age": 60,
                "is_male": "True",
                **{c: cells.get(c, "False") for c in cols},
                "patient_id": patient,
                "normal_ecg": "False",
                "trace_file": file,
            }
        )

    f0, f1 = "exams_part0.hdf5", "exams_part1.hdf5"
    row("21", f0, {"AF": "True"})
    _exp(exp, "21", "exam id in two HDF5 parts", "reject", reason="duplicate exam_id", file=f0)
    row("23", f0, {"AF": "True"})
    _exp(exp, "23", "exam id twice inside one HDF5", "reject", reason="duplicate exam_id", file=f0)
    row("24", f0, {"AF": "True", "RBBB": "False"})
    _exp(exp, "24", "label cells True/False", "repair", value=value(f0, 4), labels=["AFIB"])
    row("25", f0, dict.fromkeys(cols, "0") | {"1dAVb": "1"})
    _exp(exp, "25", "label cells 1/0", "repair", value=value(f0, 5), labels=["1AVB"])
    row("26", f0, dict.fromkeys(cols, "no") | {"SB": "yes"})
    _exp(exp, "26", "label cells yes/no", "repair", value=value(f0, 6), labels=["SB"])
    row("27.0", f0, {"ST": "True"})
    _exp(exp, "27", "exam_id written 27.0", "repair", value=value(f0, 7), labels=["ST"])
    row("x28", f0, {"ST": "True"})
    _exp(exp, "x28", "exam_id x28 (not an integer)", "reject", reason="bad cell", file=f0)
    row("28", f0, {"LBBB": "True"})
    row("28", f0, {"LBBB": "False"})
    _exp(
        exp,
        "28",
        "exam listed twice with different labels",
        "reject",
        reason="conflicting duplicate",
        file=f"{f0}#8",
    )
    _exp(exp, "28#2", "(its second row)", "reject", reason="conflicting duplicate", file=f"{f0}#8")
    row("29", f1, {"AF": "True"})
    row("29", f1, {"AF": "True"})
    _exp(
        exp,
        "29",
        "exam listed twice, identical rows (kept once)",
        "repair",
        value=value(f1, 1),
        labels=["AFIB"],
    )
    _exp(exp, "29#2", "(its second row)", "reject", reason="duplicate id", file=f"{f1}#1")
    row("22", f0, {"AF": "2"})
    _exp(exp, "22", "label cell 2", "reject", reason="bad cell", file=f0)
    with h5py.File(root / "exams_part2.hdf5", "w") as fh:  # a part saved as int16 counts
        fh["tracings"] = np.round(signals[(f0, 4)].T[None] * 1000).astype(np.int16)
        fh["exam_id"] = np.array([30], dtype=np.int64)
    row("30", "exams_part2.hdf5", {"AF": "True"})
    _exp(
        exp,
        "30",
        "tracings stored as int16 counts (not mV)",
        "reject",
        reason="bad dtype",
        file="exams_part2.hdf5#0",
    )
    pd.DataFrame(rows).to_csv(root / "exams.csv", index=False)
    return exp


def build_bad_mimic(root: Path) -> dict[str, dict]:
    """MIMIC-IV-ECG layout: a path leaving ROOT, duplicate studies (conflicting and identical
    reports), a study without a machine_measurements row, a study listed with two paths, a path
    written with its .hea suffix."""
    exp: dict[str, dict] = {}
    rep = ["Sinus rhythm", "Normal ECG", "No acute changes"]
    studies = [{"subject_id": 10000001 + k, "study_id": 41000000 + k, "reports": rep} for k in range(7)]
    signals = build_mimic(root, studies, n_samples=T_BAD)
    rl = pd.read_csv(root / "record_list.csv", dtype=str)
    mm = pd.read_csv(root / "machine_measurements.csv", dtype=str)
    ids = [f"{s['subject_id']}_{s['study_id']}" for s in studies]
    path = dict(zip(ids, rl["path"]))
    _exp(exp, ids[0], "a plain study", "keep", value=signals[ids[0]])
    rl.loc[1, "path"] = "../../outside/41000001"
    _exp(
        exp,
        ids[1],
        "record_list path leaving ROOT",
        "reject",
        reason="bad cell",
        file="../../outside/41000001.hea",
    )
    other = mm.iloc[[2]].copy()
    other["report_1"] = "Atrial fibrillation"
    mm = pd.concat([mm, other], ignore_index=True)
    _exp(
        exp,
        ids[2],
        "a study twice in machine_measurements, different reports",
        "reject",
        reason="conflicting duplicate",
        file=f"{path[ids[2]]}.hea",
    )
    _exp(
        exp,
        ids[2] + "#2",
        "(its second row)",
        "reject",
        reason="conflicting duplicate",
        file=f"{path[ids[2]]}.hea",
    )
    mm = pd.concat([mm, mm.iloc[[3]]], ignore_index=True)
    _exp(
        exp,
        ids[3],
        "a study twice in machine_measurements, same report (kept once)",
        "keep",
        value=signals[ids[3]],
    )
    _exp(exp, ids[3] + "#2", "(its second row)", "reject", reason="duplicate id", file=f"{path[ids[3]]}.hea")
    mm = mm[mm["study_id"] != str(studies[4]["study_id"])]
    _exp(
        exp,
        ids[4],
        "a study with files but no machine_measurements row",
        "reject",
        reason="no report",
        file=f"{path[ids[4]]}.hea",
    )
    twin = rl.iloc[[5]].copy()
    twin["path"] = path[ids[6]]
    rl = pd.concat([rl, twin], ignore_index=True)
    _exp(
        exp,
        ids[5],
        "a study listed twice in record_list with two paths",
        "reject",
        reason="conflicting duplicate",
        file=f"{path[ids[5]]}.hea",
    )
    rl.loc[6, "path"] = path[ids[6]] + ".hea"
    _exp(exp, ids[6], "record_list path written with .hea", "keep", value=signals[ids[6]])
    rl.to_csv(root / "record_list.csv", index=False)
    mm.to_csv(root / "machine_measurements.csv", index=False)
    return exp


def build_bad_ptbxl(root: Path, ptbxl_mini: Path) -> dict[str, dict]:
    """PTB-XL layout (a few real PTB-XL mini records, linked): a fold outside 1-10, an empty fold,
    a non-integer ecg_id, a duplicated row (kept once), a conflicting duplicate."""
    import wfdb

    db = pd.read_csv(ptbxl_mini / "ptbxl_database.csv")
    present = np.array([(ptbxl_mini / f"{f}.hea").exists() for f in db["filename_lr"].astype(str)])
    sel = db[present].head(8).copy().reset_index(drop=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "scp_statements.csv").write_bytes((ptbxl_mini / "scp_statements.csv").read_bytes())
    for f in sel["filename_lr"].astype(str):
        for ext in (".hea", ".dat"):
            target = root / f"{f}{ext}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink((ptbxl_mini / f"{f}{ext}").resolve(), target)
    exp: dict[str, dict] = {}

    def value(k):
        rec = wfdb.rdrecord(str(ptbxl_mini / sel.at[k, "filename_lr"]))
        names = [n.upper() for n in rec.sig_name]
        canon = np.stack(
            [rec.p_signal[:, names.index(n.upper())] for n in MIMIC_LEADS]
        )  # (12, 1000) NU, 100 Hz
        from scipy.signal import resample_poly

        return resample_poly(canon, 5, 1, axis=-1, padtype="line")[:, :T_BAD]  # 100 -> 500 Hz

    ids = sel["ecg_id"].astype(int).astype(str).tolist()
    files = [f"{f}.hea" for f in sel["filename_lr"]]
    for k in (0, 1):
        _exp(exp, ids[k], "a plain PTB-XL record", "repair", value=value(k))
    sel["strat_fold"] = sel["strat_fold"].astype(object)
    sel.at[2, "strat_fold"] = 11
    _exp(exp, ids[2], "strat_fold 11 (not a PTB-XL fold)", "reject", reason="bad cell", file=files[2])
    sel.at[3, "strat_fold"] = ""
    _exp(exp, ids[3], "empty strat_fold", "reject", reason="bad cell", file=files[3])
    sel["ecg_id"] = sel["ecg_id"].astype(object)
    sel.at[4, "ecg_id"] = "12a"
    _exp(exp, "12a", "ecg_id 12a (not an integer)", "reject", reason="bad cell", file=files[4])
    dup = sel.iloc[[5]].copy()
    _exp(exp, ids[5], "a row listed twice (kept once)", "repair", value=value(5))
    _exp(exp, ids[5] + "#2", "(its second row)", "reject", reason="duplicate id", file=files[5])
    conflict = sel.iloc[[6]].copy()
    conflict["scp_codes"] = "{'AFIB': 100.0}"
    _exp(
        exp,
        ids[6],
        "an ecg_id listed twice with different scp_codes",
        "reject",
        reason="conflicting duplicate",
        file=files[6],
    )
    _exp(exp, ids[6] + "#2", "(its second row)", "reject", reason="conflicting duplicate", file=files[6])
    _exp(exp, ids[7], "a plain PTB-XL record", "repair", value=value(7))
    alias = sel.iloc[[7]].copy()
    alias["ecg_id"] = 99999
    _exp(
        exp, "99999", "another ecg_id naming the same file", "reject", reason="duplicate file", file=files[7]
    )
    pd.concat([sel, dup, conflict, alias], ignore_index=True).to_csv(root / "ptbxl_database.csv", index=False)
    return exp
