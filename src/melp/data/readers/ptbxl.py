"""PTB-XL (PhysioNet) reader: the official folder layout, benchmark labels, translated reports.

Expected layout under ``--root`` (as downloaded from PhysioNet)::

    ptbxl_database.csv            one row per record (ecg_id, patient_id, report, scp_codes,
                                  strat_fold, filename_lr, filename_hr, ...)
    scp_statements.csv            the SCP-ECG statements (index column = code)
    records100/NN000/<id>_lr.{hea,dat}   100 Hz WFDB records
    records500/NN000/<id>_hr.{hea,dat}   500 Hz WFDB records (optional)

Options: ``records`` = "auto" (default: 500 Hz files when the store rate is above 100 Hz and
``records500/`` exists, else 100 Hz), "100" or "500".
Split: ``strat_fold`` 1-8 train, 9 val, 10 test (the PTB-XL recommendation).
Labels: the four benchmark tasks of :mod:`melp.data.ptbxl_labels`.
Reports: German and Swedish machine statements are translated to English by
:mod:`melp.data.translate`; the original text is kept as ``report_original``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from melp.data import ptbxl_labels, translate
from melp.data.readers.base import BadRecord, Index, Reader, Signal, register_reader

log = logging.getLogger(__name__)

_COLUMNS = ["ecg_id", "patient_id", "report", "scp_codes", "strat_fold", "filename_lr", "filename_hr"]
_EXTRA = ["age", "sex", "device"]


def read_wfdb_format16(record: str) -> Signal | None:
    """Fast path for the common WFDB layout: one ``.dat`` file in format 16 holding every channel.

    ``record``: path without extension. Physical value = (digital - baseline) / gain, with the
    baseline taken from ``gain(baseline)/units`` or else the ADC zero; -32768 (WFDB's invalid
    sample) becomes NaN. Returns None for any other layout (the caller then uses ``wfdb``), which
    reads the same values but parses headers ~100x slower (per-field pandas look-ups).
    """
    with open(f"{record}.hea", encoding="latin-1") as fh:
        lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
    head = lines[0].split()
    if len(head) < 4 or "/" in head[1]:
        return None  # multi-segment record
    n_sig, fs, n_samp = int(head[1]), float(head[2].split("/")[0].split("(")[0]), int(head[3])
    if len(lines) < 1 + n_sig:
        return None
    files, gains, baselines, names = set(), [], [], []
    for ln in lines[1 : 1 + n_sig]:
        f = ln.split()
        if len(f) < 9 or f[1] != "16":
            return None
        files.add(f[0])
        gain_field = f[2].split("/")[0]
        gain = float(gain_field.split("(")[0])
        baseline = int(gain_field.split("(")[1].rstrip(")")) if "(" in gain_field else int(f[4])
        gains.append(gain if gain != 0 else 200.0)  # WFDB: gain 0 means the default 200
        baselines.append(baseline)
        names.append(f[8])
    if len(files) != 1:
        return None
    dat = os.path.join(os.path.dirname(record), files.pop())
    raw = np.fromfile(dat, dtype="<i2", count=n_samp * n_sig)
    if raw.size != n_samp * n_sig:
        raise BadRecord(f"{dat}: {raw.size} samples on disk, header announces {n_samp} x {n_sig}")
    digital = raw.reshape(n_samp, n_sig).T.astype(np.float64)  # (T, L) interleaved -> (L, T)
    invalid = raw.reshape(n_samp, n_sig).T == -32768
    data = (digital - np.asarray(baselines, float)[:, None]) / np.asarray(gains)[:, None]
    data[invalid] = np.nan
    return Signal(data=data, leads=names, rate=fs)


def fold_to_split(fold: int) -> str:
    """PTB-XL recommended split: folds 1-8 train, 9 val, 10 test."""
    return "train" if fold <= 8 else ("val" if fold == 9 else "test")


@register_reader
class PTBXLReader(Reader):
    name = "ptbxl"
    description = "PTB-XL (PhysioNet): 21,837 12-lead records, 100/500 Hz, reports, 4 benchmark tasks"

    def __init__(self, root, records: str = "auto", **options) -> None:
        super().__init__(root, **options)
        if str(records) not in ("auto", "100", "500"):
            raise ValueError(f"ptbxl: records must be auto, 100 or 500 (got {records!r})")
        self.records = str(records)
        self.target_rate: float | None = None

    @property
    def tasks(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in ptbxl_labels.TASKS.items()}

    def configure(self, *, target_rate: float) -> None:
        self.target_rate = float(target_rate)

    def _column(self) -> str:
        """Which filename column to read: ``filename_lr`` (100 Hz) or ``filename_hr`` (500 Hz)."""
        if self.records == "auto":
            high = self.target_rate is not None and self.target_rate > 100
            return "filename_hr" if high and (self.root / "records500").is_dir() else "filename_lr"
        return "filename_hr" if self.records == "500" else "filename_lr"

    def _table(self, name: str) -> pd.DataFrame:
        path = self.root / name
        if not path.exists():
            raise FileNotFoundError(
                f"ptbxl: {path} not found; --root must be the PTB-XL folder that contains {name}"
            )
        return pd.read_csv(path)

    def index(self) -> Index:
        db = self._table("ptbxl_database.csv")
        absent = [c for c in _COLUMNS if c not in db.columns]
        if absent:
            raise ValueError(f"ptbxl: {self.root / 'ptbxl_database.csv'} lacks columns {absent}")
        statements = ptbxl_labels.load_statements(self.root / "scp_statements.csv")
        col = self._column()
        if col == "filename_lr" and self.target_rate and self.target_rate > 100:
            log.info("ptbxl: using the 100 Hz records (no records500/), resampled to %g Hz", self.target_rate)
        files = db[col].astype(str)
        present = np.array([os.path.exists(self.root / f"{f}.hea") for f in files])

        rejects, keep = [], []
        maps = ptbxl_labels.code_maps(statements)
        labels: dict[str, list] = {f"labels_{t}": [] for t in ptbxl_labels.TASKS}
        for i in np.flatnonzero(present):
            try:
                codes = ptbxl_labels.parse_scp_codes(db.at[i, "scp_codes"])
            except (ValueError, SyntaxError):
                rejects.append(
                    {
                        "id": str(db.at[i, "ecg_id"]),
                        "file": f"{files[i]}.hea",
                        "reason": f"bad scp_codes: {db.at[i, 'scp_codes']!r}",
                    }
                )
                continue
            keep.append(i)
            for task, names in ptbxl_labels.derive_labels(codes, maps).items():
                labels[f"labels_{task}"].append(names)
        sel = db.iloc[keep]
        folds = sel["strat_fold"].astype(int)
        entries = pd.DataFrame(
            {
                "id": sel["ecg_id"].astype(int).astype(str).to_numpy(),
                "path": (files.iloc[keep] + ".hea").to_numpy(),
                "patient": [None if pd.isna(p) else str(int(p)) for p in sel["patient_id"]],
                "split": [fold_to_split(f) for f in folds],
                "fold": folds.to_numpy(),
                "report": sel["report"].fillna("").astype(str).to_numpy(),
                **labels,
            }
        )
        for c in _EXTRA:
            if c in sel:
                entries[c] = sel[c].to_numpy()
        missing = [f"{f}.hea" for f in files[~present]]
        return Index(entries=entries, missing=missing, rejects=rejects)

    def load(self, entry: dict) -> Signal:
        import wfdb

        record = str(self.root / str(entry["path"]).removesuffix(".hea"))
        try:
            fast = read_wfdb_format16(record)
            if fast is not None:
                return fast
            rec = wfdb.rdrecord(record)
        except BadRecord:
            raise
        except Exception as err:  # wfdb raises many types for a damaged header/data file
            raise BadRecord(f"unreadable WFDB record: {type(err).__name__}: {err}") from err
        if rec.p_signal is None:
            raise BadRecord("WFDB record has no physical signal")
        data = np.asarray(rec.p_signal, dtype=np.float64).T  # (T, L) -> (L, T)
        return Signal(data=data, leads=list(rec.sig_name), rate=float(rec.fs))

    def normalize_report(self, text: str) -> str:
        return translate.normalize_report(text)
