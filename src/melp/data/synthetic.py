"""A synthetic MIMIC-IV-ECG folder of any size, for scale tests and benchmarks (no real data).

:func:`write_mimic_layout` writes what ``melp prepare mimic`` reads, in the layout of the
PhysioNet release::

    ROOT/record_list.csv            subject_id, study_id, file_name, ecg_time, path
    ROOT/machine_measurements.csv   subject_id, study_id, cart_id, ecg_time, report_0 .. report_17,
                                    bandwidth, filtering, rr_interval, p_onset, ..., t_axis
    ROOT/files/pNNNN/pSUBJECT/sSTUDY/STUDY.{hea,dat}   WFDB format 16, 12 leads, gain 200/mV

Signals are ECG-like: beats at a per-record heart rate (P, Q, R, S and T waves as Gaussians
with lead-specific amplitudes), baseline wander and noise, quantised to 16 bits; the header
carries the true initial values and checksums, so the reader's integrity checks run as on the
real files. Reports are machine statements (rhythm, findings, an overall verdict) drawn with
fixed frequencies; about 2 % are too short (< 4 words) and are rejected by the reader, as in
the real corpus. Patients have 1-4 studies each. Everything is seeded: the same call writes
the same bytes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
GAIN = 200.0  # digital units per mV (16-bit, so +-163 mV of range)

# (statement, weight): the rhythm line, then 0-3 findings, then the overall verdict
RHYTHMS = [
    ("Sinus rhythm", 50),
    ("Sinus bradycardia", 12),
    ("Sinus tachycardia", 10),
    ("Atrial fibrillation", 9),
    ("Atrial fibrillation with rapid ventricular response", 3),
    ("Sinus rhythm with PACs", 4),
    ("Sinus rhythm with PVCs", 4),
    ("Atrial flutter", 2),
    ("Junctional rhythm", 1),
    ("Pacemaker rhythm - no further analysis", 2),
    ("Sinus arrhythmia", 3),
]
FINDINGS = [
    ("Left axis deviation", 8),
    ("Right axis deviation", 2),
    ("Left ventricular hypertrophy", 5),
    ("Left ventricular hypertrophy with repolarization abnormality", 3),
    ("Right bundle branch block", 5),
    ("Left bundle branch block", 2),
    ("Incomplete right bundle branch block", 3),
    ("Left anterior fascicular block", 4),
    ("1st degree A-V block", 5),
    ("Prolonged QT interval", 5),
    ("Low QRS voltages in precordial leads", 3),
    ("Poor R wave progression - probable normal variant", 3),
    ("Inferior infarct - age undetermined", 4),
    ("Anterior infarct - age undetermined", 3),
    ("Septal infarct - age undetermined", 3),
    ("Lateral ST-T changes may be due to myocardial ischemia", 3),
    ("Inferior/lateral ST-T changes may be due to myocardial ischemia", 2),
    ("Nonspecific T wave abnormality", 8),
    ("Nonspecific ST and T wave abnormality", 5),
    ("Possible left atrial abnormality", 3),
    ("Early repolarization", 2),
    ("Consider right ventricular involvement in acute inferior infarct", 1),
    ("Anterolateral ST elevation - consider acute infarct", 1),
]
VERDICTS = [("Normal ECG", 30), ("Borderline ECG", 20), ("Abnormal ECG", 50)]
SHORT = [["Sinus rhythm"], ["Normal ECG"], ["Pacemaker rhythm"], ["Atrial fibrillation"]]  # < 4 words


def _pick(rng: np.random.Generator, table: list[tuple[str, int]], k: int = 1) -> list[str]:
    w = np.array([x[1] for x in table], dtype=float)
    idx = rng.choice(len(table), size=k, replace=False, p=w / w.sum())
    return [table[i][0] for i in idx]


def machine_statements(rng: np.random.Generator) -> list[str]:
    """One record's statements (report_0, report_1, ...)."""
    if rng.random() < 0.02:
        return list(SHORT[rng.integers(len(SHORT))])
    out = _pick(rng, RHYTHMS)
    n = int(rng.choice([0, 1, 2, 3], p=[0.35, 0.35, 0.2, 0.1]))
    if n:
        out += _pick(rng, FINDINGS, n)
    verdict = "Normal ECG" if n == 0 and out[0] == "Sinus rhythm" and rng.random() < 0.8 else None
    out.append(verdict or _pick(rng, VERDICTS[1:])[0])
    return out


# amplitude (mV) of P, Q, R, S, T per lead: a plausible normal axis, with per-record variation
_AMPS = np.array(
    [
        [0.10, -0.05, 0.80, -0.15, 0.25],  # I
        [0.15, -0.10, 1.20, -0.20, 0.35],  # II
        [0.05, -0.05, 0.40, -0.10, 0.10],  # III
        [-0.12, 0.05, -0.90, 0.15, -0.30],  # aVR
        [0.10, -0.08, 0.80, -0.15, 0.22],  # aVF
        [0.04, -0.03, 0.20, -0.05, 0.08],  # aVL
        [0.05, 0.00, 0.30, -1.00, -0.10],  # V1
        [0.08, 0.00, 0.60, -1.40, 0.40],  # V2
        [0.08, -0.05, 1.00, -0.80, 0.50],  # V3
        [0.08, -0.08, 1.50, -0.50, 0.50],  # V4
        [0.08, -0.10, 1.30, -0.30, 0.40],  # V5
        [0.08, -0.10, 1.00, -0.20, 0.30],  # V6
    ]
)
_OFFSETS = np.array([-0.20, -0.03, 0.0, 0.03, 0.25])  # wave centre relative to the R peak (s)
_WIDTHS = np.array([0.025, 0.010, 0.012, 0.010, 0.045])  # Gaussian sigma (s)


def _waves(rate: float, n: int, heart_rate: float, phase: float) -> np.ndarray:
    """(5, n) P, Q, R, S, T wave trains of one rhythm (unit amplitude)."""
    t = np.arange(n) / rate  # (n,) seconds
    rr = 60.0 / heart_rate
    beat = ((t + phase * rr) % rr) - rr / 2  # (n,) time from the nearest beat's R peak
    return np.exp(-0.5 * ((beat[None, :] - _OFFSETS[:, None]) / _WIDTHS[:, None]) ** 2)


def ecg_record(rng: np.random.Generator, rate: float, n: int, waves: dict) -> np.ndarray:
    """(12, n) int16 digital samples of one synthetic record (``waves``: a cache per rhythm)."""
    hr = int(rng.integers(45, 121) // 5 * 5)  # a few distinct rhythms, so the wave trains are cached
    ph = int(rng.integers(4))
    key = (hr, ph)
    if key not in waves:
        waves[key] = _waves(rate, n, hr, ph / 4)
    amps = _AMPS * rng.uniform(0.6, 1.4, size=(12, 1))  # (12, 5) per-record lead gains
    x = amps @ waves[key]  # (12, n) mV
    t = np.arange(n) / rate
    x += 0.08 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * np.pi))[None, :]
    x += rng.normal(0.0, 0.015, size=x.shape)
    return np.clip(np.round(x * GAIN), -32767, 32767).astype(np.int16)


def _write_wfdb16(folder: Path, name: str, digital: np.ndarray, rate: float) -> None:
    """``folder/name.hea`` + ``name.dat`` (format 16, interleaved samples, gain 200/mV, baseline 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    n_sig, n = digital.shape
    digital.T.astype("<i2").tofile(folder / f"{name}.dat")  # (n, 12) frames
    sums = digital.astype(np.int64).sum(axis=1)
    lines = [f"{name} {n_sig} {rate:g} {n}"]
    for k, lead in enumerate(LEADS):
        checksum = int((sums[k] + 32768) % 65536 - 32768)  # 16-bit two's complement, as WFDB writes it
        lines.append(f"{name}.dat 16 {GAIN:g}(0)/mV 16 0 {int(digital[k, 0])} {checksum} 0 {lead}")
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


MM_COLUMNS = [
    "subject_id",
    "study_id",
    "cart_id",
    "ecg_time",
    *[f"report_{i}" for i in range(18)],
    "bandwidth",
    "filtering",
    "rr_interval",
    "p_onset",
    "p_end",
    "qrs_onset",
    "qrs_end",
    "t_end",
    "p_axis",
    "qrs_axis",
    "t_axis",
]


def write_mimic_layout(
    root: str | Path, n: int, *, seed: int = 0, rate: float = 500.0, seconds: float = 10.0
) -> Path:
    """Write a synthetic MIMIC-IV-ECG folder of ``n`` studies under ``root``; returns ``root``.

    Args:
        root: output folder (created; existing files of the same names are overwritten).
        n: number of studies (records). About 2 % have a report under 4 words (rejected by the reader).
        seed: everything (signals, reports, patients) is drawn from ``numpy.random.default_rng(seed)``.
        rate, seconds: sampling rate (Hz) and length of each record (MIMIC-IV-ECG: 500 Hz, 10 s).

    Each record costs 12 x rate x seconds x 2 bytes on disk (120 KB at 500 Hz x 10 s).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_samples = int(round(rate * seconds))
    waves: dict = {}
    subject, left = 10_000_000, 0
    with (
        open(root / "record_list.csv", "w", newline="") as rec_f,
        open(root / "machine_measurements.csv", "w", newline="") as mm_f,
    ):
        rec, mm = csv.writer(rec_f), csv.writer(mm_f)
        rec.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
        mm.writerow(MM_COLUMNS)
        for k in range(n):
            if left == 0:  # a new patient with 1-4 studies
                subject += int(rng.integers(1, 50))
                left = int(rng.integers(1, 5))
            left -= 1
            study = 40_000_000 + 7 * k + int(rng.integers(7))
            day = f"2180-{1 + k % 12:02d}-{1 + k % 28:02d} {k % 24:02d}:{k % 60:02d}:00"
            rel = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
            rec.writerow([subject, study, study, day, rel])
            statements = machine_statements(rng)
            rr = int(rng.integers(500, 1300))
            mm.writerow(
                [subject, study, int(rng.integers(6_000_000, 7_000_000)), day]
                + statements
                + [""] * (18 - len(statements))
                + ["0.005-150 Hz", "60 Hz notch Baseline filter", rr, 40, 150, 200, 290, 600]
                + [int(rng.integers(-30, 90)) for _ in range(3)]
            )
            _write_wfdb16(root / Path(rel).parent, str(study), ecg_record(rng, rate, n_samples, waves), rate)
    return root
