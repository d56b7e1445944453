"""MIMIC-IV-ECG v1.0 (PhysioNet): the pretraining corpus.

Layout (as downloaded)::

    ROOT/record_list.csv            subject_id, study_id, file_name, ecg_time, path
    ROOT/machine_measurements.csv   subject_id, study_id, ..., report_0 ... report_17, ...
    ROOT/files/pNNNN/pSUBJECT/sSTUDY/STUDY.{hea,dat}   WFDB, 12 leads, 500 Hz, 5000 samples

Reports are built as in the paper's code (spec section 1.1), see :func:`build_report`.
Records whose report has fewer than 4 words are rejected with that reason. The split is by
patient: unique ``subject_id`` values are split 98/2 into train/val with scikit-learn's
``train_test_split(random_state=42)``.
"""

from __future__ import annotations

import os

import pandas as pd

from melp.data.formats import wfdb as wfdb_format
from melp.data.formats.tables import CellError, bad_text_reason, confined_path, drop_duplicates, read_text_csv
from melp.data.readers.base import WFDB_OPTIONS, Index, Option, Reader, Signal, register_reader

REPORT_COLUMNS = [f"report_{i}" for i in range(18)]
MIN_WORDS = 4


def join_statements(values: list) -> str:
    """Step 1 of spec 1.1: the non-missing statements in column order joined with ``". "``."""
    return ". ".join(str(v) for v in values if v is not None and not pd.isna(v) and str(v) != "")


def clean_report(joined: str) -> str:
    """Steps 2-5 of spec 1.1 on an already joined report.

    EKG->ECG (both cases), strip the character sets {space, ``*``} then {``=``, ``-``} from both
    ends, lower-case, whitespace runs (incl. newline/tab) to one space, append ``"."``. An empty
    result is ``"empty"``. (The reference only maps \\n, \\r, \\t to spaces and keeps repeated
    spaces; collapsing them does not change the BERT tokens.)
    """
    text = joined.replace("EKG", "ECG").replace("ekg", "ecg")
    text = text.strip(" *").strip("=-").lower()
    words = text.split()
    return " ".join(words) + "." if words else "empty"


def build_report(values: list) -> str:
    """Report of one ``machine_measurements`` row from its report_0..report_17 values.

    >>> build_report(["Sinus rhythm", None, "Normal EKG"])
    'sinus rhythm. normal ecg.'
    """
    return clean_report(join_statements(values))


def report_word_count(report: str) -> int:
    """Whitespace tokens of a cleaned report (``"empty"`` counts 0)."""
    return 0 if report == "empty" else len(report.split())


def patient_split(subjects: list[str], val_fraction: float = 0.02, seed: int = 42) -> dict[str, str]:
    """Unique subject ids (in first-appearance order) -> "train"/"val", as the reference does."""
    from sklearn.model_selection import train_test_split  # lazy: sklearn import costs seconds

    unique = list(dict.fromkeys(subjects))
    if len(unique) < 2 or val_fraction == 0:
        return dict.fromkeys(unique, "train")
    train, val = train_test_split(unique, test_size=val_fraction, random_state=seed)
    return {**dict.fromkeys(train, "train"), **dict.fromkeys(val, "val")}


@register_reader
class MimicReader(Reader):
    """MIMIC-IV-ECG: WFDB records with machine-statement reports; patient-level 98/2 split.

    Options: ``val_fraction`` (0.02), ``seed`` (42), ``verify_checksums``.
    """

    name = "mimic"
    description = "MIMIC-IV-ECG v1.0 (record_list.csv, machine_measurements.csv, files/...): pretraining"
    OPTIONS = {
        "val_fraction": Option(float, 0.02, "share of patients in the val split"),
        "seed": Option(int, 42, "seed of the patient split"),
        **WFDB_OPTIONS,
    }

    def index(self) -> Index:
        rec_csv, mm_csv = self.root / "record_list.csv", self.root / "machine_measurements.csv"
        for p in (rec_csv, mm_csv):
            if not p.exists():
                raise FileNotFoundError(f"mimic: {p} not found; ROOT must be the MIMIC-IV-ECG folder")
        records = read_text_csv(rec_csv, usecols=["subject_id", "study_id", "path"])
        mm = read_text_csv(mm_csv)
        absent = [c for c in ["subject_id", "study_id", *REPORT_COLUMNS] if c not in mm.columns]
        if absent:
            raise ValueError(f"{mm_csv}: missing columns {absent}")
        rejects: list[dict] = []
        for df in (records, mm):
            df["id"] = df["subject_id"].str.strip() + "_" + df["study_id"].str.strip()
        rec_paths = records["path"].str.strip().str.replace(r"\.(hea|dat)$", "", regex=True)
        paths: dict[str, str] = {}
        for rid, rel in zip(records["id"].tolist(), rec_paths.tolist()):
            paths.setdefault(rid, rel)  # the first listing (a second one is a conflict, below)
        # a study listed twice in record_list.csv with two paths: which files are its signal is unknown
        n_paths = rec_paths.groupby(records["id"]).nunique()
        conflicting = set(n_paths.index[n_paths > 1])
        # a study with files but no machine_measurements row has no report: say so, do not drop it silently
        for rid in sorted(set(records["id"]) - set(mm["id"])):
            rejects.append(
                {
                    "id": rid,
                    "file": f"{paths[rid]}.hea",
                    "reason": "no report: study absent from machine_measurements.csv",
                }
            )
        report_vals = mm[REPORT_COLUMNS].to_numpy(dtype=object)  # (n_rows, 18) str, "" = missing
        rows = []
        for rid, subject, values in zip(
            mm["id"].tolist(), mm["subject_id"].str.strip().tolist(), report_vals
        ):
            joined = ". ".join(v for v in values if v)  # = join_statements (missing cells are "")
            rel = paths.get(rid)
            file = rel + ".hea" if rel else "machine_measurements.csv"
            reason = bad_text_reason(joined)
            if reason is None and rel is None:
                reason = "no record: study absent from record_list.csv"
            if reason is None and rid in conflicting:
                listed = sorted(set(rec_paths[records["id"] == rid]))
                reason = (
                    f"conflicting duplicate: study {rid} is listed in record_list.csv with different paths "
                    f"{listed}; which one is right is unknown, so every copy is rejected"
                )
            if reason is None:
                try:
                    confined_path(self.root, rel)
                except CellError as err:
                    reason = f"bad cell: record_list.csv column path: {err}"
            if reason is None:
                cleaned = clean_report(joined)
                if report_word_count(cleaned) < MIN_WORDS:
                    reason = f"short report: under {MIN_WORDS} words ({cleaned!r})"
            if reason:
                rejects.append({"id": rid, "file": file, "reason": reason})
                continue
            rows.append({"id": rid, "path": file, "patient": subject, "report": joined})
        entries = pd.DataFrame(rows, columns=["id", "path", "patient", "report"])
        # a study with two machine_measurements rows: kept once if their reports agree, else rejected
        entries = drop_duplicates(entries, "id", rejects, "id", agree=("report",))
        # Split before dropping absent files, so it does not depend on what was downloaded.
        fraction = self.options["val_fraction"]
        if not 0 <= fraction < 1:
            raise ValueError(f"mimic: option val_fraction={fraction} must be in [0, 1)")
        split = patient_split(entries["patient"].tolist(), fraction, self.options["seed"])
        entries["split"] = entries["patient"].map(split)
        entries["fold"] = None
        # MIMIC names its signal file STUDY.dat next to STUDY.hea; stat both (no header parsing).
        root = str(self.root)
        present = [
            os.path.exists(f"{root}/{p}") and os.path.exists(f"{root}/{p[:-4]}.dat")
            for p in entries["path"].tolist()
        ]
        missing = entries.loc[[not k for k in present], "path"].tolist()
        entries = entries.loc[present].reset_index(drop=True)
        cols = ["id", "path", "patient", "split", "fold", "report"]
        return Index(entries=entries[cols], missing=missing, rejects=rejects)

    def normalize_report(self, text: str) -> str:
        """Spec 1.1 cleaning of the joined statements (see :func:`clean_report`)."""
        return clean_report(text)

    def load(self, entry: dict) -> Signal:
        record = self.root / str(entry["path"]).removesuffix(".hea")
        return wfdb_format.read_record(record, verify_checksums=self.options["verify_checksums"])
