"""Chapman-Shaoxing/Ningbo ("CSN", PhysioNet ``ecg-arrhythmia`` 1.0.0) with MELP's published split.

Layout::

    ROOT/WFDBRecords/NN/NNN/JSxxxxx.mat   CinC-style ``val`` (12 x 5000 int16, 500 Hz)
    ROOT/WFDBRecords/NN/NNN/JSxxxxx.hea   gain (1000/mV), lead names, rate (used when present)
    ROOT/chapman_{train,val,test}.csv     ecg_path, age, diagnose, 38 class columns
                                          (or pass splits=FOLDER)

``ecg_path`` is written as ``/chapman/WFDBRecords/...``; the leading ``/chapman/`` is removed
to get the path under ROOT. Labels: task ``chapman`` with the 38 classes of the paper
(``dataset_class_names.json`` order), read by column name. Without a ``.hea`` the signal is
``val / 1000`` mV at 500 Hz in the Challenge lead order (I, II, III, aVR, aVL, aVF, V1-V6).
"""

from __future__ import annotations

import pandas as pd

from melp.data.formats.tables import CellError, confined_path, drop_duplicates, positive_classes
from melp.data.readers.base import WFDB_OPTIONS, Index, Option, Reader, Signal, register_reader
from melp.data.readers.cinc import read_cinc_mat
from melp.data.readers.cpsc import find_split_dir, read_split_tables

CHAPMAN_CLASSES = [
    "AQW",
    "UW",
    "SR",
    "WPW",
    "2AVB",
    "AT",
    "VB",
    "ARS",
    "STTC",
    "SA",
    "STE",
    "VPB",
    "TWO",
    "STTU",
    "ALS",
    "APB",
    "2AVB1",
    "PRIE",
    "CCR",
    "CR",
    "AF",
    "AVB",
    "QTIE",
    "LBBB",
    "VEB",
    "SVT",
    "RBBB",
    "1AVB",
    "STDD",
    "MI",
    "AFIB",
    "TWC",
    "PWC",
    "ERV",
    "RVH",
    "LVH",
    "ST",
    "JEB",
]
PATH_PREFIX = "/chapman/"


def relative_ecg_path(ecg_path: str) -> str:
    """``/chapman/WFDBRecords/18/186/JS18048.mat`` -> ``WFDBRecords/18/186/JS18048.mat`` (also
    written ``chapman/WFDBRecords/...`` or ``WFDBRecords/...``; backslashes read as ``/``)."""
    p = ecg_path.strip().replace("\\", "/")
    for prefix in (PATH_PREFIX, PATH_PREFIX.lstrip("/")):
        if p.startswith(prefix):
            return p[len(prefix) :]
    return p.lstrip("/")


@register_reader
class ChapmanReader(Reader):
    """Chapman-Shaoxing/Ningbo ``.mat`` records with the published MELP split and 38 labels.

    Options: ``splits`` (folder with ``chapman_{train,val,test}.csv``; default ROOT).
    """

    OPTIONS = {
        "splits": Option(str, None, "folder with chapman_{train,val,test}.csv (default: ROOT)"),
        **WFDB_OPTIONS,
    }

    name = "chapman"
    description = "Chapman-Shaoxing/Ningbo WFDBRecords .mat files with chapman_{train,val,test}.csv split"

    @property
    def tasks(self) -> dict[str, list[str]]:
        return {"chapman": list(CHAPMAN_CLASSES)}

    def index(self) -> Index:
        folder = find_split_dir(self.root, self.options["splits"], "chapman")
        if folder.name == "resources":
            raise FileNotFoundError(f"chapman: no chapman_train.csv in {self.root}; pass splits=FOLDER")
        table = read_split_tables(folder, "chapman", CHAPMAN_CLASSES)
        rows, missing, rejects = [], [], []
        for r in table.to_dict("records"):
            rel = relative_ecg_path(str(r["ecg_path"]))
            if not rel:
                continue
            rid = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            try:
                exists = confined_path(self.root, rel).exists()
                labels = positive_classes(r, CHAPMAN_CLASSES)
            except CellError as err:
                rejects.append({"id": rid, "file": rel, "reason": f"bad cell: {r['split']} split CSV {err}"})
                continue
            if not exists:
                missing.append(rel)
                continue
            rows.append(
                {
                    "id": rid,
                    "path": rel,
                    "patient": rid,  # one record per patient in this database
                    "split": r["split"],
                    "fold": None,
                    "report": "",
                    "labels_chapman": labels,
                    "diagnose": str(r.get("diagnose", "")),
                }
            )
        cols = ["id", "path", "patient", "split", "fold", "report", "labels_chapman", "diagnose"]
        # one file listed twice (in one split CSV or in two): kept once if the rows agree, else rejected
        entries = drop_duplicates(
            pd.DataFrame(rows, columns=cols), "path", rejects, "file", agree=("split", "labels_chapman")
        )
        entries = drop_duplicates(entries, "id", rejects, "id")
        return Index(entries=entries, missing=missing, rejects=rejects)

    def load(self, entry: dict) -> Signal:
        return read_cinc_mat(self.root / entry["path"], verify_checksums=self.options["verify_checksums"])
