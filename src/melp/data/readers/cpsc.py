"""CPSC 2018 (the China Physiological Signal Challenge, "ICBEB"), original MATLAB files.

Layout::

    ROOT/**/A0001.mat ... A6877.mat   struct ``ECG`` with ``sex``, ``age``, ``data`` (12 x N, mV, 500 Hz)
    [ROOT/icbeb_{train,val,test}.csv] published split + labels (else the copy shipped with melp)

Lead order of ``data`` is I, II, III, aVR, aVL, aVF, V1-V6 (challenge documentation; verified on
the shipped samples: III = II - I, aVR = -(I + II) / 2). Records are 6-60 s long; the store
crops/pads them to its length. Labels (task ``icbeb``) and the split come from the published
split CSVs (MELP repository), read by class column NAME.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melp.data.readers.base import BadRecord, Index, Reader, Signal, register_reader
from melp.data.readers.generic import drop_duplicate_ids, read_text_csv

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


def positive_classes(row, classes: list[str]) -> list[str]:
    """Names of the classes whose column holds 1 (``"1"``, ``"1.0"`` or ``"True"``)."""
    return [c for c in classes if str(row[c]).strip() in ("1", "1.0", "True", "true")]


def read_cpsc_mat(path: Path) -> Signal:
    """Read a CPSC 2018 ``.mat`` file: ``ECG.data`` (12, N) mV at 500 Hz, CPSC lead order."""
    import scipy.io

    try:
        ecg = scipy.io.loadmat(str(path))["ECG"][0, 0]
        data = np.asarray(ecg["data"], dtype=np.float64)
    except KeyError as err:
        raise BadRecord(f"bad MATLAB file: no struct field {err} (expected ECG.data)") from None
    except Exception as err:
        raise BadRecord(f"unreadable MATLAB file: {type(err).__name__}: {err}") from None
    if data.ndim != 2 or data.shape[0] != len(CPSC_LEADS):
        raise BadRecord(f"bad shape: ECG.data has shape {data.shape}; expected (12, samples)")
    return Signal(data=data, leads=list(CPSC_LEADS), rate=CPSC_RATE)


@register_reader
class CpscReader(Reader):
    """CPSC 2018 / ICBEB original ``.mat`` files with the published split and 9 labels.

    Options: ``splits`` (folder with ``icbeb_{train,val,test}.csv``).
    """

    name = "cpsc"
    description = "CPSC 2018 (ICBEB) original .mat files, labels/split from icbeb_{train,val,test}.csv"

    @property
    def tasks(self) -> dict[str, list[str]]:
        return {"icbeb": list(ICBEB_CLASSES)}

    def index(self) -> Index:
        table = read_split_tables(
            find_split_dir(self.root, self.options.get("splits"), "icbeb"), "icbeb", ICBEB_CLASSES
        )
        on_disk = {p.stem: p for p in sorted(self.root.rglob("*.mat"))}
        rows, missing, rejects = [], [], []
        listed = set()
        for r in table.to_dict("records"):
            rid = str(r["filename"]).strip()
            listed.add(rid)
            if rid not in on_disk:
                missing.append(f"{rid}.mat")
                continue
            rows.append(
                {
                    "id": rid,
                    "path": str(on_disk[rid].relative_to(self.root)),
                    "patient": str(r["patient_id"]).strip() or None,
                    "split": r["split"],
                    "fold": None,
                    "report": "",
                    "labels_icbeb": positive_classes(r, ICBEB_CLASSES),
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
        entries = drop_duplicate_ids(pd.DataFrame(rows, columns=cols), rejects)
        return Index(entries=entries, missing=missing, rejects=rejects)

    def load(self, entry: dict) -> Signal:
        return read_cpsc_mat(self.root / entry["path"])
