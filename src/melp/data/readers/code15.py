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
column name: 1dAVb->1AVB, RBBB, LBBB, SB, AF->AFIB, ST; every cell must be an accepted label
spelling (``True``/``False``, ``1``/``0``, ...), else the exam is rejected naming column and value.
An exam id that appears twice in the HDF5 files is ambiguous (which tracing is it?): every copy is
rejected; an exam listed twice in the CSV keeps its first row when the rows agree (labels, patient),
else every copy is rejected (`conflicting duplicate`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melp.data.formats.tables import (
    CellError,
    confined_path,
    drop_duplicates,
    parse_int_cell,
    parse_label_cell,
    read_text_csv,
)
from melp.data.readers.base import BadRecord, Index, Option, Reader, Signal, register_reader

CODE_LEADS = ["DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
CODE_RATE = 400.0
LABEL_COLUMNS = {"1dAVb": "1AVB", "RBBB": "RBBB", "LBBB": "LBBB", "SB": "SB", "AF": "AFIB", "ST": "ST"}
CODE_CLASSES = list(LABEL_COLUMNS.values())


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

    OPTIONS = {
        "labels_csv": Option(str, None, "CODE test layout: the labels CSV row-aligned with ecg_tracings.hdf5")
    }

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

    def _labels(self, r, path: Path) -> list[str] | None:
        """Positive classes of a row; None when every label cell is empty (not labelled).
        Raises ValueError for absent columns, CellError for a cell that is not a label."""
        absent = [c for c in LABEL_COLUMNS if c not in r]
        if absent:
            raise ValueError(f"{path}: label columns {absent} not found")
        values = {}
        for col, name in LABEL_COLUMNS.items():
            try:
                values[name] = parse_label_cell(r[col])
            except CellError as err:
                raise CellError(f"{path.name} column {col}: {err}") from None
        if all(v is None for v in values.values()):
            return None
        if any(v is None for v in values.values()):
            col = next(c for c, n in LABEL_COLUMNS.items() if values[n] is None)
            raise CellError(
                f"{path.name} column {col}: empty while other label columns of the row are filled"
            )
        return [name for name, v in values.items() if v]

    def _index_code15(self) -> Index:
        csv = self.root / "exams.csv"
        table = read_text_csv(csv)
        rows, missing, rejects = [], [], []
        rows_of: dict[str, dict[int, int] | str] = {}  # trace_file -> {exam_id: row} or error text
        where: dict[int, list[str]] = {}  # exam id -> every "file#row" holding it (across files)
        for r in table.to_dict("records"):
            exam, file = str(r["exam_id"]).strip(), str(r["trace_file"]).strip()
            try:
                h5 = confined_path(self.root, file)
                exam = str(parse_int_cell(exam, "exam_id"))  # "123.0" (a float column) is exam 123
                labels = self._labels(r, csv)
            except CellError as err:
                rejects.append({"id": exam, "file": file, "reason": f"bad cell: {err}"})
                continue
            if not h5.exists():
                missing.append(f"{file}#{exam}")
                continue
            if file not in rows_of:
                try:
                    ids = _h5_exam_ids(h5)
                    rows_of[file] = {}
                    for i, e in enumerate(ids):
                        rows_of[file].setdefault(int(e), i)
                        where.setdefault(int(e), []).append(f"{file}#{i}")
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
                    labels,
                    age=str(r.get("age", "")),
                    is_male=str(r.get("is_male", "")),
                )
            )
        ambiguous = {e: places for e, places in where.items() if len(places) > 1}
        if ambiguous:
            keep = []
            for row in rows:
                places = ambiguous.get(int(row["id"]))
                if places is None:
                    keep.append(row)
                else:
                    rejects.append(
                        {
                            "id": row["id"],
                            "file": row["h5_file"],
                            "reason": f"duplicate exam_id: exam {row['id']} is stored at {', '.join(places)}",
                        }
                    )
            rows = keep
        return self._finish(rows, missing, rejects)

    def _index_test(self) -> Index:
        file = "ecg_tracings.hdf5"
        if self.options["labels_csv"] and not (self.root / self.options["labels_csv"]).is_file():
            raise FileNotFoundError(f"code15: labels_csv {self.root / self.options['labels_csv']} not found")
        candidates = [self.options["labels_csv"], "annotations/gold_standard.csv", "code_test.csv"]
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
        rows = []
        for i in range(n):
            labels = None  # no labels file: not labelled (never negative for every class)
            if table is not None:
                try:
                    labels = self._labels(table.iloc[i], labels_csv)
                except CellError as err:
                    rejects.append(
                        {"id": str(i), "file": f"{file}#{i}", "reason": f"bad cell: row {i + 1} of {err}"}
                    )
                    continue
            rows.append(self._entry(str(i), file, i, None, "test", labels))
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
            # an exam listed twice in exams.csv: kept once if the rows agree, else every copy rejected
            drop_duplicates(pd.DataFrame(rows), "id", rejects, "id", agree=("labels_code", "patient"))
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
            tracings = self._files[file]["tracings"]
            x = np.asarray(tracings[int(entry["h5_row"])], dtype=np.float32)
        except Exception as err:
            raise BadRecord(f"unreadable HDF5: {type(err).__name__}: {err}") from None
        if not np.issubdtype(tracings.dtype, np.floating):
            # the tracings are millivolts as floats; integers would be ADC counts of unknown gain
            raise BadRecord(
                f"bad dtype: tracings of {file} are {tracings.dtype}, CODE files hold mV as floats"
            )
        if x.ndim != 2 or x.shape[1] != len(CODE_LEADS):
            raise BadRecord(f"bad shape: tracing has shape {x.shape}; expected (samples, 12)")
        return Signal(data=strip_zero_padding(x.T), leads=list(CODE_LEADS), rate=CODE_RATE)  # (T,12)->(12,T)
