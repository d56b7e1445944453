"""Generic source: a user's own folder of ECG files plus one CSV describing them.

Layout (see ``docs/data-sources.md``)::

    ROOT/
      records.csv            file, [id], [report], [patient], [split], [fold], [labels], [0/1 columns...]
      any/sub/folders/rec1.hea + rec1.dat   (WFDB, any format wfdb reads)
      rec2.hea + rec2.mat                    (WFDB with a CinC-style .mat signal)
      rec3.npy  [+ rec3.json sidecar {"leads": [...], "rate": 500}]

``file`` is relative to ROOT (never outside it), with or without extension (``.hea``, ``.dat`` and
``.mat`` all mean the WFDB record of that name; ``.npy`` is a NumPy array of shape (leads, samples)
in mV). Labels: either one ``labels`` column of ``;``-separated class names, or extra columns whose
values are all label cells (1/0, true/false, yes/no; see :mod:`melp.data.formats.tables`), one
column per class, or the columns named by ``label_columns``. Split values are normalised
(``Test`` -> ``test``); an unknown split value, a label cell that is not an accepted spelling, a path
outside ROOT and a non-integer fold are rejects naming the column and value.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from melp.data.formats import wfdb as wfdb_format
from melp.data.formats.tables import (
    EMPTY,
    CellError,
    bad_text_reason,
    confined_path,
    drop_duplicates,
    is_label_column,
    parse_list,
    parse_split,
    positive_classes,
    read_text_csv,
)
from melp.data.readers.base import WFDB_OPTIONS, BadRecord, Index, Option, Reader, Signal, register_reader

log = logging.getLogger(__name__)

KNOWN_COLUMNS = ("file", "id", "report", "patient", "split", "fold", "labels")
RESERVED_COLUMNS = ("row", "path", "source", "report_original", "orig_rate", "orig_length", "length", "crc32")


def read_wfdb(record: Path, *, verify_checksums: bool = True) -> Signal:
    """Read a WFDB record (path without extension) with :func:`melp.data.formats.wfdb.read_record`:
    data (L, T) float64 in mV (NU kept as stored), lead names and rate; BadRecord with the reason."""
    return wfdb_format.read_record(record, verify_checksums=verify_checksums)


def missing_signal_file(hea: str | Path) -> str | None:
    """Name of the first signal file of header ``hea`` that is absent (see :mod:`melp.data.formats.wfdb`)."""
    return wfdb_format.missing_signal_file(hea)


SIDECAR_KEYS = ("leads", "rate", "units", "gain")


def _sidecar_rate(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"rate {value!r} is not a number of Hz")
    return float(value)  # "500" is fine, "500 Hz" raises


def read_sidecar(path: Path) -> dict:
    """The ``<stem>.json`` sidecar of a NumPy record: a subset of ``{"leads": [names], "rate": Hz,
    "units": "mV" | "uV" | "V" | "NU" ..., "gain": digital units per unit}``. Raises BadRecord
    (``bad sidecar: ...``) for invalid JSON, an unknown key (a misspelled ``fs`` must not be
    ignored) or a badly typed value."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        unknown = sorted(set(meta) - set(SIDECAR_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; the keys are {', '.join(SIDECAR_KEYS)}")
        out = {}
        if "leads" in meta:
            if not isinstance(meta["leads"], list) or not all(isinstance(n, str) for n in meta["leads"]):
                raise ValueError(f"leads must be a list of names, not {meta['leads']!r}")
            out["leads"] = list(meta["leads"])
        if "rate" in meta:
            out["rate"] = _sidecar_rate(meta["rate"])
        if "units" in meta:
            if not isinstance(meta["units"], str):
                raise ValueError(f"units must be a string, not {meta['units']!r}")
            out["units"] = meta["units"]
        if "gain" in meta:
            gain = meta["gain"]
            if (
                isinstance(gain, bool)
                or not isinstance(gain, int | float)
                or not np.isfinite(gain)
                or gain <= 0
            ):
                raise ValueError(f"gain must be a positive number, not {gain!r}")
            out["gain"] = float(gain)
    except (OSError, ValueError, TypeError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRecord(
            f"bad sidecar: {path.name}: {err} (expected {{'leads': [...], 'rate': Hz}}, optionally 'units', 'gain')"
        ) from None
    return out


def read_npy(
    path: Path,
    leads: list[str] | None,
    rate: float | None,
    units: str = "mV",
    gain: float | None = None,
) -> Signal:
    """Read a NumPy ECG array of shape (L, T) (never unpickled); returns data in mV (NU kept).

    Lead names, rate, units and gain come from a sidecar ``<stem>.json`` next to the file where it
    has them (:func:`read_sidecar`), otherwise from the arguments (the reader options ``leads``,
    ``sample_rate``, ``units``, ``gain``). Physical value = stored / gain x unit factor (mV, uV, V,
    nV; NU kept). Float arrays need no gain; integer arrays (ADC counts) must state one, since
    reading counts as millivolts would be off by the gain. Raises BadRecord for an unreadable file,
    a non-2-D, non-numeric or structured array, a lead count that matches neither axis, or a bad
    rate. A (T, L) array whose second axis matches the lead names (and whose first does not) is
    transposed.
    """
    sidecar = path.with_suffix(".json")
    meta = read_sidecar(sidecar) if sidecar.exists() else {}
    leads = meta.get("leads", leads)
    rate = meta.get("rate", rate)
    units = meta.get("units", units)
    gain = meta.get("gain", gain)
    if leads is None or rate is None:
        raise BadRecord(
            "no lead names: NumPy file without leads/rate; add a .json sidecar {'leads': [...], 'rate': Hz} "
            "or pass -o leads=... -o sample_rate=HZ"
        )
    if not np.isfinite(rate) or rate <= 0:
        raise BadRecord(f"bad rate: sampling rate {rate!r} must be a positive number")
    factor = wfdb_format.unit_factor(units, "(all leads)")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise BadRecord(f"unreadable .npy file: {type(err).__name__}: {err}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.names is not None:
        raise BadRecord("bad dtype: the .npy file holds a structured array, not a (leads, samples) matrix")
    if arr.ndim != 2:
        raise BadRecord(f"bad shape: array has shape {arr.shape}; expected (leads, samples)")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise BadRecord(f"bad dtype: array dtype {arr.dtype} is not a real number type")
    if np.issubdtype(arr.dtype, np.integer) and gain is None:
        raise BadRecord(
            f'bad dtype: {arr.dtype} samples (ADC counts?) without a gain; add "gain" (counts per {units}) '
            "to the .json sidecar or pass -o gain=..., or save the array as floats in mV"
        )
    if arr.shape[0] != len(leads):
        if arr.shape[1] == len(leads):
            arr = arr.T  # stored (samples, leads)
        else:
            raise BadRecord(
                f"wrong leads: array has shape {arr.shape} but {len(leads)} lead names were given"
            )
    data = np.asarray(arr, dtype=np.float64)
    if gain is not None:
        data = data / gain
    if factor is not None and factor != 1.0:
        data = data * factor
    return Signal(data=data, leads=list(leads), rate=float(rate))


def derive_limb_leads(sig: Signal) -> Signal:
    """Add the limb leads a record lacks (III, aVR, aVL, aVF) from I and II.

    Einthoven/Goldberger with I = LA - RA, II = LL - RA: III = II - I, aVR = -(I + II)/2,
    aVL = I - II/2, aVF = II - I/2. Used for 8-lead devices that store I, II, V1-V6 only.
    Records without I and II, or with all four leads present, are returned unchanged.
    """
    names = {str(n).strip().lower(): i for i, n in enumerate(sig.leads)}
    if "i" not in names or "ii" not in names:
        return sig
    lead_i, lead_ii = sig.data[names["i"]], sig.data[names["ii"]]
    formulas = {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }
    add = {k: v for k, v in formulas.items() if k.lower() not in names}
    if not add:
        return sig
    data = np.concatenate([sig.data, np.stack(list(add.values()))], axis=0)  # (L + n_added, T)
    return Signal(data=data, leads=[*sig.leads, *add], rate=sig.rate)


def drop_duplicate_ids(df: pd.DataFrame, rejects: list[dict]) -> pd.DataFrame:
    """Keep the first row of every id; append a reject for each later duplicate."""
    return drop_duplicates(df, "id", rejects, "id")


def parse_leads(value) -> list[str] | None:
    """Lead names from a list or a comma-separated string (CLI option); None stays None."""
    return parse_list(value)


_LABEL_SEPARATORS = re.compile(r"[;,|]")


def split_label_list(cell) -> list[str] | None:
    """Class names of a ``labels`` cell (separated by ``;``, ``,`` or ``|``): ``""`` -> ``[]`` (no
    class applies: negative for every class); a missing-value word (``nan``, ``none``, ``null``,
    ``n/a``, ``na``) -> None (not labelled)."""
    text = "" if cell is None or (isinstance(cell, float) and cell != cell) else str(cell).strip()
    if text and text.lower() in EMPTY:
        return None
    return list(dict.fromkeys(n.strip() for n in _LABEL_SEPARATORS.split(text) if n.strip()))


def _default_id(file: str) -> str:
    """Id of a row without an ``id`` cell: its path without a record extension (``w/rec.1.hea`` ->
    ``w/rec.1``; a dot inside a record name is kept)."""
    path = PurePosixPath(file.replace("\\", "/"))
    return str(path.with_suffix("") if path.suffix.lower() in (".hea", ".dat", ".mat", ".npy") else path)


@register_reader
class GenericReader(Reader):
    """Users' own data: WFDB or NumPy files listed in a CSV with reports and/or labels (see the
    module docstring for the layout and ``OPTIONS`` for the ``-o`` options)."""

    name = "generic"
    description = (
        "your own WFDB (.hea/.dat/.mat) or NumPy (.npy) files listed in a CSV (file, report, labels)"
    )
    OPTIONS = {
        "csv": Option(str, None, "the table (path, absolute or under ROOT); default: the only *.csv in ROOT"),
        "leads": Option(list, None, "lead names of .npy files without a .json sidecar, comma-separated"),
        "sample_rate": Option(float, None, "sampling rate (Hz) of .npy files without a .json sidecar"),
        "units": Option(str, "mV", "units of .npy files whose sidecar does not say (mV, uV, V, NU)"),
        "gain": Option(
            float, None, "counts per unit of integer .npy files whose sidecar does not say (e.g. 1000)"
        ),
        "label_columns": Option(
            list, None, "the 0/1 label columns, comma-separated (default: every label column)"
        ),
        "task": Option(str, "labels", "task name of the labels"),
        "require_report": Option(
            bool,
            None,
            "reject rows with an empty report (default: true when there is a report column and no labels)",
        ),
        "derive_limb_leads": Option(
            bool, False, "compute III, aVR, aVL, aVF from I and II when a record lacks them"
        ),
        **WFDB_OPTIONS,
    }

    def __init__(self, root, **options) -> None:
        super().__init__(root, **options)
        opts = self.options
        self.csv_path = self._find_csv(opts["csv"])
        self.task = opts["task"]
        self.leads = opts["leads"]
        self.rate = opts["sample_rate"]
        if self.leads is not None and not self.leads:
            raise ValueError("generic: option leads= is empty; give the lead names, comma-separated")
        for name in ("sample_rate", "gain"):
            if opts[name] is not None and not opts[name] > 0:
                raise ValueError(f"generic: option {name}={opts[name]} must be positive")
        wfdb_format.unit_factor(opts["units"], "(option units)")  # BadRecord (a ValueError) if not a unit
        if not str(self.task).strip() or str(self.task).startswith("labels_"):
            raise ValueError(f"generic: option task={self.task!r} must be a plain name (e.g. task=rhythm)")
        self._table = read_text_csv(self.csv_path, skip_blank_lines=True)
        if "file" not in self._table.columns:
            raise ValueError(f"{self.csv_path}: needs a 'file' column (found {list(self._table.columns)})")
        self._classes = self._find_classes(opts["label_columns"])

    def _find_csv(self, csv) -> Path:
        if csv:
            path = Path(csv)
            path = path if path.is_absolute() or path.exists() else self.root / path
            if not path.is_file():
                raise FileNotFoundError(f"generic: CSV {path} not found")
            return path
        found = sorted(self.root.glob("*.csv"))
        if len(found) != 1:
            raise FileNotFoundError(
                f"generic: expected exactly one CSV in {self.root} (found {len(found)}); pass -o csv=PATH"
            )
        return found[0]

    def _find_classes(self, label_columns) -> list[str]:
        t = self._table
        if label_columns:
            absent = [c for c in label_columns if c not in t.columns]
            if absent:
                raise ValueError(f"{self.csv_path}: label columns {absent} not found")
            return list(dict.fromkeys(label_columns))
        if "labels" in t.columns:
            names: dict[str, None] = {}
            for cell in t["labels"]:
                for name in split_label_list(cell) or []:
                    names[name] = None
            return list(names)
        classes = [
            c
            for c in t.columns
            if c not in KNOWN_COLUMNS and c not in RESERVED_COLUMNS and is_label_column(t[c])
        ]
        if classes:
            log.info(
                "generic: task %s: classes %s (the label columns of %s)",
                self.task,
                classes,
                self.csv_path.name,
            )
        return classes

    @property
    def tasks(self) -> dict[str, list[str]]:
        return {self.task: list(self._classes)} if self._classes else {}

    def _resolve(self, file: str) -> tuple[str, Path | None]:
        """(kind, path) for a CSV ``file`` value: kind 'npy' or 'wfdb' (path without extension);
        path None when nothing is on disk. Raises CellError for a path outside ROOT, BadRecord for a
        file that exists but is not a record this reader reads (a folder, ``.npz``, ``.edf``, a
        ``.mat``/``.dat`` without its ``.hea``)."""
        full = confined_path(self.root, file)
        if full.suffix.lower() == ".npy":
            if full.is_dir():
                raise BadRecord(f"not a record: {file} is a folder")
            return "npy", full if full.is_file() else None
        stem = full.with_suffix("") if full.suffix.lower() in (".hea", ".dat", ".mat") else full
        if Path(f"{stem}.hea").is_file():
            return "wfdb", stem
        npy = Path(f"{stem}.npy")
        if npy.is_file():
            return "npy", npy
        if full.is_dir():
            raise BadRecord(f"not a record: {file} is a folder")
        if full.is_file():
            hint = (
                f"it has no {stem.name}.hea header (a WFDB signal file is read through its header)"
                if full.suffix.lower() in (".dat", ".mat")
                else f"{full.suffix or 'files without an extension'} is not read"
            )
            raise BadRecord(
                f"unsupported file: {file}: {hint}; list WFDB records (.hea) or NumPy arrays (.npy)"
            )
        return "wfdb", None

    def index(self) -> Index:
        t = self._table
        require_report = self.options["require_report"]
        if require_report is None:
            require_report = "report" in t.columns and not self._classes
        rows, missing, rejects = [], [], []
        # other columns (age, sex, ...) are kept as metadata, except names the store uses itself
        extras = [
            c for c in t.columns
            if c not in KNOWN_COLUMNS and c not in self._classes and c not in RESERVED_COLUMNS and not c.startswith("labels_")
        ]  # fmt: skip
        for r in t.to_dict("records"):
            file = str(r["file"]).strip()
            if not file or file.lower() in EMPTY:
                continue
            rid = str(r["id"]).strip() if "id" in t.columns and str(r["id"]).strip() else _default_id(file)
            try:
                kind, path = self._resolve(file)
                row = self._row(r, rid, file, kind, path, require_report)
            except CellError as err:
                rejects.append({"id": rid, "file": file, "reason": f"bad cell: {err}"})
                continue
            except BadRecord as err:
                rejects.append({"id": rid, "file": file, "reason": str(err)})
                continue
            if row is None:
                missing.append(file)
                continue
            if isinstance(row, str):
                rejects.append({"id": rid, "file": file, "reason": row})
                continue
            row.update({c: r[c] for c in extras})
            row["_identity"] = self._identity(kind, path)
            rows.append(row)
        label_col = [f"labels_{self.task}"] if self._classes else []
        cols = ["id", "path", "patient", "split", "fold", "report", *label_col]
        entries = pd.DataFrame(rows, columns=cols + extras + ["_identity"])
        # the same record listed twice (also as x.hea and x.dat, through a symbolic link, or two headers
        # naming one signal file): one record, whatever the ids say
        entries = drop_duplicates(entries, "_identity", rejects, "file", agree=("split", "fold", *label_col))
        entries = drop_duplicates(entries, "id", rejects, "id")
        return Index(entries=entries.drop(columns="_identity"), missing=missing, rejects=rejects)

    def _identity(self, kind: str, path: Path) -> str:
        """What a record's samples are read from: the real path(s) of its ``.npy`` or of the signal
        files its header names (so two names of one file are one record)."""
        root = os.path.realpath(self.root)

        def real(p) -> str:
            full = os.path.realpath(p)
            return os.path.relpath(full, root) if full.startswith(root + os.sep) else full

        if kind == "npy":
            return real(path)
        files = wfdb_format.signal_files(f"{path}.hea") or [path.name]
        return "|".join(real(path.parent / f) for f in files)

    def _row(self, r: dict, rid: str, file: str, kind: str, path: Path | None, require_report: bool):
        """The entry of one CSV row, None when its file is absent, or a reject reason."""
        t = self._table
        if path is None or (kind == "wfdb" and missing_signal_file(Path(f"{path}.hea"))):
            return None
        report = str(r["report"]) if "report" in t.columns else ""
        if report.strip().lower() in EMPTY:
            report = ""  # "nan" / "None" written by a tool for a missing report
        reason = bad_text_reason(report)
        if reason is None and require_report and not report.strip():
            reason = "empty report: the report column is empty"
        if reason:
            return reason
        fold = None
        if "fold" in t.columns and str(r["fold"]).strip().lower() not in EMPTY:
            try:
                value = float(str(r["fold"]).strip())
            except ValueError:
                value = float("nan")
            if not value.is_integer():
                raise CellError(f"column fold: {r['fold']!r} is not an integer fold")
            fold = int(value)
        try:
            split = parse_split(r["split"]) if "split" in t.columns else None
        except CellError as err:
            raise CellError(f"column split: {err}") from None
        patient = str(r["patient"]).strip() if "patient" in t.columns else ""
        row = {
            "id": rid,
            "path": str(path.relative_to(self.root)) + (".hea" if kind == "wfdb" else ""),
            "patient": None if patient.lower() in EMPTY else patient,
            "split": split,
            "fold": fold,
            "report": report,
        }
        if self._classes:
            row[f"labels_{self.task}"] = self._row_labels(r)
        return row

    def _row_labels(self, r: dict) -> list[str] | None:
        """Positive class names of a row; None when it carries no label at all (unlabelled)."""
        if "labels" in self._table.columns and not self.options["label_columns"]:
            return split_label_list(r["labels"])
        return positive_classes(r, self._classes)

    def load(self, entry: dict) -> Signal:
        path = self.root / entry["path"]
        if path.suffix == ".npy":
            o = self.options
            sig = read_npy(path, self.leads, self.rate, o["units"], o["gain"])
        else:
            sig = read_wfdb(path.with_suffix(""), verify_checksums=self.options["verify_checksums"])
        if self.options["derive_limb_leads"]:
            sig = derive_limb_leads(sig)
        return sig
