"""Generic source: a user's own folder of ECG files plus one CSV describing them.

Layout (see ``docs/data-sources.md``)::

    ROOT/
      records.csv            file, [id], [report], [patient], [split], [fold], [labels], [0/1 columns...]
      any/sub/folders/rec1.hea + rec1.dat   (WFDB, any format wfdb reads)
      rec2.hea + rec2.mat                    (WFDB with a CinC-style .mat signal)
      rec3.npy  [+ rec3.json sidecar {"leads": [...], "rate": 500}]

``file`` is relative to ROOT, with or without extension (``.hea``, ``.dat`` and ``.mat`` all mean
the WFDB record of that name; ``.npy`` is a NumPy array of shape (leads, samples) in mV).
Labels: either one ``labels`` column of ``;``-separated class names, or extra columns whose
values are all 0/1 (one column per class), or the columns named by ``label_columns``.

This module also holds the WFDB/NumPy loading helpers the other readers share.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from melp.data.readers.base import BadRecord, Index, Reader, Signal, register_reader

# Factor that converts a WFDB unit string (lower-cased) to millivolts.
_UNIT_TO_MV = {"mv": 1.0, "millivolt": 1.0, "uv": 1e-3, "µv": 1e-3, "microvolt": 1e-3, "v": 1e3, "volt": 1e3}

KNOWN_COLUMNS = ("file", "id", "report", "patient", "split", "fold", "labels")
RESERVED_COLUMNS = ("row", "path", "source", "report_original", "orig_rate", "orig_length", "length")


def read_wfdb(record: Path) -> Signal:
    """Read a WFDB record (header ``record.hea``; signal ``.dat``, ``.mat`` or any wfdb format).

    record: path without extension. Returns data (L, T) float64 in mV when the header's units are
    mV/uV/V (other units, e.g. ``NU``, are kept as stored), the header's lead names and rate.
    Raises BadRecord for an unreadable or malformed header, a truncated or corrupt signal file, or
    a signal that does not match the length the header announces.
    """
    import wfdb

    try:
        rec = wfdb.rdrecord(str(record), physical=True)
    except Exception as err:  # wfdb raises many types (ValueError, IndexError, OSError, ...)
        raise BadRecord(f"unreadable WFDB record: {type(err).__name__}: {err}") from None
    sig = rec.p_signal
    if sig is None or sig.ndim != 2 or sig.shape[1] == 0:
        raise BadRecord("no signal: the WFDB record holds no samples")
    if rec.sig_len is not None and sig.shape[0] != rec.sig_len:
        raise BadRecord(f"truncated signal: {sig.shape[0]} samples, header says {rec.sig_len}")
    if not rec.fs or rec.fs <= 0:
        raise BadRecord(f"bad header: no valid sampling rate ({rec.fs!r})")
    data = np.array(sig.T, dtype=np.float64)  # (T, L) -> (L, T); float64 avoids double rounding
    for i, unit in enumerate(rec.units or []):
        factor = _UNIT_TO_MV.get(str(unit).strip().lower())
        if factor is not None and factor != 1.0:
            data[i] *= factor
    return Signal(data=data, leads=[str(n) for n in rec.sig_name], rate=float(rec.fs))


def header_signal_files(hea: Path) -> list[str] | None:
    """Signal file names a WFDB header refers to (in order, unique), or None when the header
    cannot be read or parsed (the record is then rejected at load time with wfdb's reason)."""
    try:
        lines = [ln.strip() for ln in hea.read_text(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    try:
        n_sig = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return None
    files = [ln.split()[0] for ln in lines[1 : 1 + n_sig] if ln.split()]
    return list(dict.fromkeys(files)) if len(files) == n_sig else None


def missing_signal_file(hea: Path) -> str | None:
    """Relative name of the first signal file named in ``hea`` that does not exist, else None."""
    for name in header_signal_files(hea) or []:
        if name != "~" and not (hea.parent / name).exists():
            return name
    return None


def read_npy(path: Path, leads: list[str] | None, rate: float | None) -> Signal:
    """Read a NumPy ECG array of shape (L, T) in mV.

    Lead names and rate come from a sidecar ``<stem>.json`` ({"leads": [...], "rate": Hz}) next to
    the file if present, otherwise from ``leads``/``rate`` (the reader options ``leads`` and
    ``sample_rate``). Raises BadRecord for an unreadable file, a non-2-D array, or a lead count
    that does not match the lead names.
    """
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
            leads, rate = list(meta["leads"]), float(meta["rate"])
        except (ValueError, KeyError, TypeError) as err:
            raise BadRecord(
                f"bad sidecar: {sidecar.name} needs {{'leads': [...], 'rate': Hz}} ({err})"
            ) from None
    if leads is None or rate is None:
        raise BadRecord(
            "no lead names: NumPy file without leads/rate; pass -o leads=... -o sample_rate=HZ or add a .json sidecar"
        )
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise BadRecord(f"unreadable .npy file: {type(err).__name__}: {err}") from None
    if arr.ndim != 2:
        raise BadRecord(f"bad shape: array has shape {arr.shape}; expected (leads, samples)")
    if arr.shape[0] != len(leads):
        raise BadRecord(f"wrong leads: array has {arr.shape[0]} rows but {len(leads)} lead names were given")
    if not np.issubdtype(arr.dtype, np.number):
        raise BadRecord(f"bad dtype: array dtype {arr.dtype} is not numeric")
    return Signal(data=np.asarray(arr, dtype=np.float64), leads=list(leads), rate=float(rate))


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


_MARK = 0xF700  # undecodable byte b is read as the private-use character U+F700 + b


def _mark_bad_bytes(err: UnicodeDecodeError) -> tuple[str, int]:
    bad = err.object[err.start : err.end]
    return "".join(chr(_MARK + b) for b in bad), err.end


codecs.register_error("melp-mark", _mark_bad_bytes)


_MARKED = re.compile(f"[{chr(_MARK + 0x80)}-{chr(_MARK + 0xFF)}]")


def bad_text_reason(text: str) -> str | None:
    """Reason string if ``text`` holds undecodable bytes (as read by :func:`read_text_csv`)."""
    found = _MARKED.search(text)
    if found is None:
        return None
    byte = ord(found.group()) - _MARK
    return f"bad encoding: report is not valid UTF-8 (byte 0x{byte:02x}); re-save the CSV as UTF-8"


def read_text_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` that marks undecodable bytes (so one bad row can be rejected alone instead
    of failing the whole table); all columns as str unless ``dtype`` is given."""
    kwargs.setdefault("dtype", str)
    kwargs.setdefault("keep_default_na", False)
    try:
        return pd.read_csv(path, encoding="utf-8", encoding_errors="melp-mark", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise ValueError(f"{path}: cannot parse CSV ({err}); fix the file and rerun") from None


def drop_duplicate_ids(df: pd.DataFrame, rejects: list[dict]) -> pd.DataFrame:
    """Keep the first row of every id; append a reject for each later duplicate."""
    dup = df["id"].duplicated(keep="first")
    if dup.any():
        first = df.loc[~dup].set_index("id")["path"]
        for _, row in df.loc[dup].iterrows():
            rejects.append(
                {"id": row["id"], "file": row["path"], "reason": f"duplicate id: first at {first[row['id']]}"}
            )
    return df.loc[~dup].reset_index(drop=True)


def parse_leads(value) -> list[str] | None:
    """Lead names from a list or a comma-separated string (CLI option); None stays None."""
    if value is None or isinstance(value, list | tuple):
        return None if value is None else [str(v) for v in value]
    return [s.strip() for s in str(value).split(",") if s.strip()]


def _is_binary(col: pd.Series) -> bool:
    vals = set(col.astype(str).str.strip()) - {""}
    return bool(vals) and vals <= {"0", "1", "0.0", "1.0"}


@register_reader
class GenericReader(Reader):
    """Users' own data: WFDB or NumPy files listed in a CSV with reports and/or labels.

    Options: ``csv`` (path, default the only ``*.csv`` in ROOT), ``leads`` and ``sample_rate`` (for .npy
    files without sidecar), ``label_columns`` (comma-separated; default: every extra 0/1 column),
    ``task`` (task name, default ``labels``), ``require_report`` (default: true when the CSV has a
    ``report`` column and no labels; rows with an empty report are then rejected),
    ``derive_limb_leads`` (default false: compute III, aVR, aVL, aVF from I and II when absent).
    """

    name = "generic"
    description = (
        "your own WFDB (.hea/.dat/.mat) or NumPy (.npy) files listed in a CSV (file, report, labels)"
    )

    def __init__(self, root, **options) -> None:
        super().__init__(root, **options)
        self.csv_path = self._find_csv(options.get("csv"))
        self.task = str(options.get("task") or "labels")
        self.leads = parse_leads(options.get("leads"))
        sr = options.get("sample_rate")
        self.rate = float(sr) if sr not in (None, "") else None
        self._table = read_text_csv(self.csv_path, skip_blank_lines=True)
        if "file" not in self._table.columns:
            raise ValueError(f"{self.csv_path}: needs a 'file' column (found {list(self._table.columns)})")
        self._classes = self._find_classes(options.get("label_columns"))

    def _find_csv(self, csv) -> Path:
        if csv:
            path = Path(csv)
            path = path if path.is_absolute() or path.exists() else self.root / path
            if not path.exists():
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
            cols = parse_leads(label_columns)
            absent = [c for c in cols if c not in t.columns]
            if absent:
                raise ValueError(f"{self.csv_path}: label columns {absent} not found")
            return cols
        if "labels" in t.columns:
            names: dict[str, None] = {}
            for cell in t["labels"]:
                for name in str(cell).split(";"):
                    if name.strip():
                        names[name.strip()] = None
            return list(names)
        return [c for c in t.columns if c not in KNOWN_COLUMNS and _is_binary(t[c])]

    @property
    def tasks(self) -> dict[str, list[str]]:
        return {self.task: list(self._classes)} if self._classes else {}

    def _resolve(self, file: str) -> tuple[str, Path | None]:
        """(kind, path) for a CSV ``file`` value: kind 'npy' or 'wfdb' (path without extension)."""
        rel = Path(file)
        if rel.suffix == ".npy":
            p = self.root / rel
            return "npy", p if p.exists() else None
        stem = rel.with_suffix("") if rel.suffix in (".hea", ".dat", ".mat") else rel
        hea = self.root / stem.with_suffix(".hea")
        if hea.exists():
            return "wfdb", self.root / stem
        npy = self.root / stem.with_suffix(".npy")
        return ("npy", npy) if npy.exists() else ("wfdb", None)

    def index(self) -> Index:
        t = self._table
        require_report = self.options.get("require_report")
        if require_report is None:
            require_report = "report" in t.columns and not self._classes
        elif isinstance(require_report, str):
            require_report = require_report.strip().lower() in ("1", "true", "yes")
        rows, missing, rejects = [], [], []
        # other columns (age, sex, ...) are kept as metadata, except names the store uses itself
        extras = [
            c
            for c in t.columns
            if c not in KNOWN_COLUMNS
            and c not in self._classes
            and c not in RESERVED_COLUMNS
            and not c.startswith("labels_")
        ]
        for r in t.to_dict("records"):
            file = str(r["file"]).strip()
            if not file:
                continue
            rid = (
                str(r["id"]).strip()
                if "id" in t.columns and str(r["id"]).strip()
                else str(Path(file).with_suffix(""))
            )
            kind, path = self._resolve(file)
            if path is None or (kind == "wfdb" and missing_signal_file(path.with_suffix(".hea"))):
                missing.append(file)
                continue
            report = str(r["report"]) if "report" in t.columns else ""
            reason = bad_text_reason(report)
            if reason is None and require_report and not report.strip():
                reason = "empty report: the report column is empty"
            if reason:
                rejects.append({"id": rid, "file": file, "reason": reason})
                continue
            row = {
                "id": rid,
                "path": str(path.relative_to(self.root)) + (".hea" if kind == "wfdb" else ""),
                "patient": (str(r["patient"]) or None) if "patient" in t.columns else None,
                "split": (str(r["split"]) or None) if "split" in t.columns else None,
                "fold": int(float(r["fold"])) if "fold" in t.columns and str(r["fold"]).strip() else None,
                "report": report,
            }
            if self._classes:
                row[f"labels_{self.task}"] = self._row_labels(r)
            row.update({c: r[c] for c in extras})
            rows.append(row)
        cols = ["id", "path", "patient", "split", "fold", "report"] + (
            [f"labels_{self.task}"] if self._classes else []
        )
        cols += extras
        entries = drop_duplicate_ids(pd.DataFrame(rows, columns=cols), rejects)
        return Index(entries=entries, missing=missing, rejects=rejects)

    def _row_labels(self, r: dict) -> list[str]:
        if "labels" in self._table.columns and not self.options.get("label_columns"):
            return [n.strip() for n in str(r["labels"]).split(";") if n.strip()]
        return [c for c in self._classes if str(r[c]).strip() in ("1", "1.0")]

    def load(self, entry: dict) -> Signal:
        path = self.root / entry["path"]
        sig = (
            read_npy(path, self.leads, self.rate)
            if path.suffix == ".npy"
            else read_wfdb(path.with_suffix(""))
        )
        if str(self.options.get("derive_limb_leads", False)).lower() in ("1", "true", "yes"):
            sig = derive_limb_leads(sig)
        return sig
