"""CPSC 2018 (the China Physiological Signal Challenge, "ICBEB"), original MATLAB files.

Layout::

    ROOT/**/A0001.mat ... A6877.mat   struct ``ECG`` with ``sex``, ``age``, ``data`` (12 x N, mV, 500 Hz)
    [ROOT/icbeb_{train,val,test}.csv] published split + labels (else the copy shipped with melp)

Lead order of ``data`` is I, II, III, aVR, aVL, aVF, V1-V6 (challenge documentation; verified on
the shipped samples: III = II - I, aVR = -(I + II) / 2). Records are 6-60 s long; the store
crops/pads them to its length. Labels (task ``icbeb``) and the split come from the published
split CSVs (MELP repository), read by class column NAME; every label cell must be an accepted
spelling (:func:`melp.data.formats.tables.parse_label_cell`), else the record is rejected naming
the column and value. A file name found in two folders is rejected at every place but the first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melp.data.formats.matlab import read_struct_field
from melp.data.formats.tables import CellError, drop_duplicates, positive_classes, read_text_csv
from melp.data.readers.base import BadRecord, Index, Option, Reader, Signal, register_reader

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
ICBEB_CLASSES = ["AFIB", "VPC", "NORM", "1AVB", "CRBBB", "STE", "PAC", "CLBBB", "STD"]
CPSC_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
CPSC_RATE = 500.0


def find_split_dir(root: Path, option, stem: str) -> Path:
    """Folder holding ``{stem}_{train,val,test}.csv``: the ``splits`` option, else ROOT, else the
    copy shipped in ``melp/data/resources``. Raises FileNotFoundError naming what was searched."""
    candidates = [Path(option)] if option else [root, RESOURCES]
    for folder in candidates:
        if (folder / f"{stem}_train.csv").exists():
            return folder
    raise FileNotFoundError(
        f"no {stem}_train.csv in {', '.join(map(str, candidates))}; pass splits=FOLDER with "
        f"{stem}_train.csv, {stem}_val.csv and {stem}_test.csv"
    )


def read_split_tables(folder: Path, stem: str, classes: list[str]) -> pd.DataFrame:
    """Concatenate ``{stem}_{train,val,test}.csv`` with a ``split`` column; checks that every class
    column exists (by name). Blank lines are skipped (the Chapman test file starts with one)."""
    parts = []
    for split in ("train", "val", "test"):
        path = folder / f"{stem}_{split}.csv"
        if not path.exists():
            continue
        df = read_text_csv(path, skip_blank_lines=True)
        absent = [c for c in classes if c not in df.columns]
        if absent:
            raise ValueError(f"{path}: class columns {absent} not found (columns are read by name)")
        parts.append(df.assign(split=split))
    return pd.concat(parts, ignore_index=True)


def read_cpsc_mat(path: Path) -> Signal:
    """Read a CPSC 2018 ``.mat`` file: ``ECG.data`` (12, N) mV at 500 Hz, CPSC lead order
    (an N x 12 matrix is transposed). MATLAB v4/v5/v7.3 containers are read by what they are."""
    data, version = read_struct_field(path, "ECG", "data")
    n = len(CPSC_LEADS)
    if data.ndim == 2 and data.shape[0] != n and data.shape[1] == n:
        data = data.T
    if data.ndim != 2 or data.shape[0] != n:
        raise BadRecord(f"bad shape: ECG.data ({version}) has shape {data.shape}; expected (12, samples)")
    if not np.issubdtype(data.dtype, np.floating):
        # CPSC 2018 stores millivolts as doubles; integers are ADC counts of unknown gain
        raise BadRecord(
            f"bad dtype: ECG.data ({version}) holds {data.dtype} values; CPSC 2018 files hold mV as floats "
            "(integers would be ADC counts of unknown gain)"
        )
    return Signal(data=np.asarray(data, dtype=np.float64), leads=list(CPSC_LEADS), rate=CPSC_RATE)


@register_reader
class CpscReader(Reader):
    """CPSC 2018 / ICBEB original ``.mat`` files with the published split and 9 labels.

    Options: ``splits`` (folder with ``icbeb_{train,val,test}.csv``).
    """

    OPTIONS = {
        "splits": Option(
            str, None, "folder with icbeb_{train,val,test}.csv (default: ROOT, else the shipped copy)"
        )
    }

    name = "cpsc"
    description = "CPSC 2018 (ICBEB) original .mat files, labels/split from icbeb_{train,val,test}.csv"

    @property
    def tasks(self) -> dict[str, list[str]]:
        return {"icbeb": list(ICBEB_CLASSES)}

    def index(self) -> Index:
        table = read_split_tables(
            find_split_dir(self.root, self.options["splits"], "icbeb"), "icbeb", ICBEB_CLASSES
        )
        rows, missing, rejects = [], [], []
        on_disk: dict[str, Path] = {}
        for p in sorted(
            self.root.rglob("*.mat"), key=lambda q: (len(q.relative_to(self.root).parts), str(q))
        ):
            if p.stem in on_disk:  # the same record name in two folders: which one is right is unknown
                rejects.append(
                    {
                        "id": p.stem,
                        "file": str(p.relative_to(self.root)),
                        "reason": f"duplicate file: {p.name} first at {on_disk[p.stem].relative_to(self.root)}",
                    }
                )
                continue
            on_disk[p.stem] = p
        listed = set()
        for r in table.to_dict("records"):
            rid = str(r["filename"]).strip()
            listed.add(rid)
            if rid not in on_disk:
                missing.append(f"{rid}.mat")
                continue
            try:
                labels = positive_classes(r, ICBEB_CLASSES)
            except CellError as err:
                rejects.append(
                    {
                        "id": rid,
                        "file": str(on_disk[rid].relative_to(self.root)),
                        "reason": f"bad cell: {r['split']} split CSV {err}",
                    }
                )
                continue
            rows.append(
                {
                    "id": rid,
                    "path": str(on_disk[rid].relative_to(self.root)),
                    "patient": str(r["patient_id"]).strip() or None,
                    "split": r["split"],
                    "fold": None,
                    "report": "",
                    "labels_icbeb": labels,
                    "age": str(r.get("age", "")),
                    "sex": str(r.get("sex", "")),
                }
            )
        for stem, p in on_disk.items():
            if stem not in listed:
                rejects.append(
                    {
                        "id": stem,
                        "file": str(p.relative_to(self.root)),
                        "reason": "no label: record not listed in icbeb_*.csv",
                    }
                )
        cols = ["id", "path", "patient", "split", "fold", "report", "labels_icbeb", "age", "sex"]
        # a record listed twice (in one split CSV or in two): kept once if the rows agree, else rejected
        entries = drop_duplicates(
            pd.DataFrame(rows, columns=cols), "id", rejects, "id", agree=("split", "labels_icbeb")
        )
        return Index(entries=entries, missing=missing, rejects=rejects)

    def load(self, entry: dict) -> Signal:
        return read_cpsc_mat(self.root / entry["path"])
