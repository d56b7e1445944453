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
Labels: the four benchmark tasks of :mod:`melp.data.ptbxl_labels`. A record without any class of
a task is *not labelled* for it (``None``: the benchmark evaluates a task only on records that have
one of its statements), not a negative.
Signals: :func:`melp.data.formats.wfdb.read_record` (units honoured, checksums verified).
Reports: German and Swedish machine statements are translated to English by
:mod:`melp.data.translate`; the original text is kept as ``report_original``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from melp.data import ptbxl_labels, translate
from melp.data.formats import wfdb as wfdb_format
from melp.data.formats.tables import CellError, confined_path, drop_duplicates, parse_int_cell
from melp.data.readers.base import WFDB_OPTIONS, Index, Option, Reader, Signal, register_reader

log = logging.getLogger(__name__)

_COLUMNS = ["ecg_id", "patient_id", "report", "scp_codes", "strat_fold", "filename_lr", "filename_hr"]
_EXTRA = ["age", "sex", "device"]


def fold_to_split(fold: int) -> str:
    """PTB-XL recommended split: folds 1-8 train, 9 val, 10 test."""
    return "train" if fold <= 8 else ("val" if fold == 9 else "test")


@register_reader
class PTBXLReader(Reader):
    name = "ptbxl"
    description = "PTB-XL (PhysioNet): 21,837 12-lead records, 100/500 Hz, reports, 4 benchmark tasks"

    OPTIONS = {
        "records": Option(
            str,
            "auto",
            "which copy to read: 100 (records100/), 500 (records500/) or auto (by the store rate)",
            choices=("auto", "100", "500"),
        ),
        **WFDB_OPTIONS,
    }

    def __init__(self, root, **options) -> None:
        if "records" in options:
            options["records"] = str(options["records"])
        super().__init__(root, **options)
        self.records = self.options["records"]
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
        rejects, keep = [], []
        present = np.zeros(len(files), dtype=bool)
        for i, f in enumerate(files):
            try:
                present[i] = os.path.exists(f"{confined_path(self.root, f)}.hea")
            except CellError as err:
                rejects.append(
                    {"id": str(db.at[i, "ecg_id"]), "file": f, "reason": f"bad cell: column {col}: {err}"}
                )

        maps = ptbxl_labels.code_maps(statements)
        labels: dict[str, list] = {f"labels_{t}": [] for t in ptbxl_labels.TASKS}
        folds_ok: list[int] = []
        for i in np.flatnonzero(present):
            try:
                fold = parse_int_cell(db.at[i, "strat_fold"], "strat_fold")
                parse_int_cell(db.at[i, "ecg_id"], "ecg_id")
                if not 1 <= fold <= 10:
                    raise CellError(f"column strat_fold: {fold} is not a PTB-XL fold (1-10)")
            except CellError as err:
                rejects.append(
                    {"id": str(db.at[i, "ecg_id"]), "file": f"{files[i]}.hea", "reason": f"bad cell: {err}"}
                )
                continue
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
            folds_ok.append(fold)
            for task, names in ptbxl_labels.derive_labels(codes, maps).items():
                labels[f"labels_{task}"].append(names or None)  # no class of the task: not labelled
        sel = db.iloc[keep]
        folds = pd.Series(folds_ok, dtype=int)
        entries = pd.DataFrame(
            {
                "id": [str(parse_int_cell(v, "ecg_id")) for v in sel["ecg_id"]],
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
        bad = {r["file"] for r in rejects}
        missing = [f"{f}.hea" for f in files[~present] if f not in bad]
        # an ecg_id listed twice: kept once if the rows agree on the file and labels, else rejected
        label_cols = tuple(f"labels_{t}" for t in ptbxl_labels.TASKS)
        entries = drop_duplicates(entries, "id", rejects, "id", agree=("path", "fold", *label_cols))
        return Index(entries=entries, missing=missing, rejects=rejects)

    def load(self, entry: dict) -> Signal:
        record = self.root / str(entry["path"]).removesuffix(".hea")
        return wfdb_format.read_record(record, verify_checksums=self.options["verify_checksums"])

    def normalize_report(self, text: str) -> str:
        return translate.normalize_report(text)


def subset_root(root: str | Path, dest: str | Path, per_fold: int) -> Path:
    """A PTB-XL root with only the first ``per_fold`` present records of each fold (symbolic links to
    the original files), for quick runs and tests. Returns ``dest``."""
    root, dest = Path(root), Path(dest)
    if per_fold < 1:
        raise ValueError(f"per_fold must be >= 1, got {per_fold}")
    db = pd.read_csv(root / "ptbxl_database.csv")
    present = np.array([(root / f"{f}.hea").exists() for f in db["filename_lr"].astype(str)])
    sel = db[present].groupby("strat_fold", group_keys=False).head(per_fold)
    dest.mkdir(parents=True, exist_ok=True)
    sel.to_csv(dest / "ptbxl_database.csv", index=False)
    (dest / "scp_statements.csv").write_bytes((root / "scp_statements.csv").read_bytes())
    for f in sel["filename_lr"].astype(str):
        for ext in (".hea", ".dat"):
            target = dest / f"{f}{ext}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.symlink((root / f"{f}{ext}").resolve(), target)
    return dest
