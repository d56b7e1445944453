"""CODE-15% (Ribeiro et al., Zenodo) and the CODE test set, HDF5 tracings.

Two layouts are recognised:

* CODE-15%: ``ROOT/exams.csv`` (exam_id, age, is_male, 1dAVb, RBBB, LBBB, SB, ST, AF, patient_id,
  ..., trace_file) and ``ROOT/exams_part*.hdf5``, each with datasets ``tracings`` (N, 4096, 12)
  and ``exam_id`` (N,). Rows are joined on ``exam_id``. No published split (``split`` is None).
* CODE test set (827 exams): ``ROOT/ecg_tracings.hdf5`` (``tracings`` only) plus a labels CSV
  row-aligned with it (``annotations/gold_standard.csv`` or ``code_test.csv``, or the
  ``labels_csv`` option); ``split`` is "test".

Signals: 400 Hz, values used as stored, taken as mV (the authors' preprocessing tool,
antonior92/ecg-preprocessing, rescales by a factor that defaults to 1), lead order DI, DII, DIII, AVR, AVL, AVF,
V1-V6 (dataset documentation), mapped by name. Exams shorter than 4096 samples are zero-padded
symmetrically in the files; the reader strips the padding: the valid region is the span from
the first to the last sample where any lead is non-zero. Labels (task ``code``) are read by
column name: 1dAVb->1AVB, RBBB, LBBB, SB, AF->AFIB, ST.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melp.data.readers.base import BadRecord, Index, Reader, Signal, register_reader
from melp.data.readers.generic import drop_duplicate_ids, read_text_csv

CODE_LEADS = ["DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
CODE_RATE = 400.0
LABEL_COLUMNS = {"1dAVb": "1AVB", "RBBB": "RBBB", "LBBB": "LBBB", "SB": "SB", "AF": "AFIB", "ST": "ST"}
CODE_CLASSES = list(LABEL_COLUMNS.values())
_TRUE = ("1", "1.0", "True", "true")


def strip_zero_padding(x: np.ndarray) -> np.ndarray:
    """``x (L, T)`` -> the span from the first to the last sample where any lead is non-zero.
    An all-zero array is returned unchanged (the store rejects it as a flat record)."""
    nonzero = np.flatnonzero(np.any(x != 0, axis=0))
    if nonzero.size == 0:
        return x
    return x[:, nonzero[0] : nonzero[-1] + 1]


def _h5_exam_ids(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as fh:
        return np.asarray(fh["exam_id"][:]).astype(np.int64)


@register_reader
class Code15Reader(Reader):
    """CODE-15% / CODE test HDF5 tracings (400 Hz, zero padding stripped) with 6 labels.

    Options: ``labels_csv`` (CODE test layout: labels file row-aligned with ecg_tracings.hdf5).
    """

    name = "code15"
    description = "CODE-15% (exams.csv + exams_part*.hdf5) or CODE test (ecg_tracings.hdf5), 400 Hz"

    def __init__(self, root, **options) -> None:
        super().__init__(root, **options)
        self._files: dict[str, object] = {}  # open h5py files, per process

    @property
    def tasks(self) -> dict[str, list[str]]:
        return {"code": list(CODE_CLASSES)}

    def index(self) -> Index:
        if (self.root / "exams.csv").exists():
            return self._index_code15()
        if (self.root / "ecg_tracings.hdf5").exists():
            return self._index_test()
        raise FileNotFoundError(f"code15: neither exams.csv nor ecg_tracings.hdf5 in {self.root}")

    def _labels(self, r, path: Path) -> list[str]:
        absent = [c for c in LABEL_COLUMNS if c not in r]
        if absent:
            raise ValueError(f"{path}: label columns {absent} not found")
        return [name for col, name in LABEL_COLUMNS.items() if str(r[col]).strip() in _TRUE]

    def _index_code15(self) -> Index:
        csv = self.root / "exams.csv"
        table = read_text_csv(csv)
        rows, missing, rejects = [], [], []
        rows_of: dict[str, dict[int, int] | str] = {}  # trace_file -> {exam_id: row} or error text
        for r in table.to_dict("records"):
            exam, file = str(r["exam_id"]).strip(), str(r["trace_file"]).strip()
            h5 = self.root / file
            if not h5.exists():
                missing.append(f"{file}#{exam}")
                continue
            if file not in rows_of:
                try:
                    rows_of[file] = {int(e): i for i, e in enumerate(_h5_exam_ids(h5))}
                except Exception as err:
                    rows_of[file] = f"unreadable HDF5: {type(err).__name__}: {err}"
            lookup = rows_of[file]
            if isinstance(lookup, str) or int(exam) not in lookup:
                reason = lookup if isinstance(lookup, str) else f"not in file: exam {exam} absent from {file}"
                rejects.append({"id": exam, "file": file, "reason": reason})
                continue
            row = lookup[int(exam)]
            rows.append(
                self._entry(
                    exam,
                    file,
                    row,
                    str(r.get("patient_id", "")).strip() or None,
                    None,
                    self._labels(r, csv),
                    age=str(r.get("age", "")),
                    is_male=str(r.get("is_male", "")),
                )
            )
        return self._finish(rows, missing, rejects)

    def _index_test(self) -> Index:
        file = "ecg_tracings.hdf5"
        candidates = [self.options.get("labels_csv"), "annotations/gold_standard.csv", "code_test.csv"]
        labels_csv = next((self.root / c for c in candidates if c and (self.root / c).exists()), None)
        import h5py

        rejects: list[dict] = []
        try:
            with h5py.File(self.root / file, "r") as fh:
                n = int(fh["tracings"].shape[0])
        except Exception as err:
            raise ValueError(f"{self.root / file}: unreadable HDF5 ({type(err).__name__}: {err})") from None
        table = read_text_csv(labels_csv) if labels_csv else None
        if table is not None and len(table) != n:
            raise ValueError(
                f"{labels_csv}: {len(table)} rows but {file} holds {n} tracings (must be row-aligned)"
            )
        rows = [
            self._entry(
                str(i),
                file,
                i,
                None,
                "test",
                self._labels(table.iloc[i], labels_csv) if table is not None else [],
            )
            for i in range(n)
        ]
        return self._finish(rows, [], rejects)

    @staticmethod
    def _entry(rid, file, row, patient, split, labels, **extra) -> dict:
        return {
            "id": rid,
            "path": f"{file}#{row}",
            "patient": patient,
            "split": split,
            "fold": None,
            "report": "",
            "labels_code": labels,
            "h5_file": file,
            "h5_row": int(row),
            **extra,
        }

    @staticmethod
    def _finish(rows, missing, rejects) -> Index:
        entries = (
            drop_duplicate_ids(pd.DataFrame(rows), rejects)
            if rows
            else pd.DataFrame(
                columns=[
                    "id",
                    "path",
                    "patient",
                    "split",
                    "fold",
                    "report",
                    "labels_code",
                    "h5_file",
                    "h5_row",
                ]
            )
        )
        return Index(entries=entries, missing=missing, rejects=rejects)

    def load(self, entry: dict) -> Signal:
        import h5py

        file = entry["h5_file"]
        try:
            if file not in self._files:
                self._files[file] = h5py.File(self.root / file, "r")
            x = np.asarray(self._files[file]["tracings"][int(entry["h5_row"])], dtype=np.float32)
        except Exception as err:
            raise BadRecord(f"unreadable HDF5: {type(err).__name__}: {err}") from None
        if x.ndim != 2 or x.shape[1] != len(CODE_LEADS):
            raise BadRecord(f"bad shape: tracing has shape {x.shape}; expected (samples, 12)")
        return Signal(data=strip_zero_padding(x.T), leads=list(CODE_LEADS), rate=CODE_RATE)  # (T,12)->(12,T)
