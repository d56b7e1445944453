"""Metadata tables (CSV): strict cells, shared by every reader.

One table of accepted spellings for each kind of cell, so that no source reads ``TRUE`` as a
negative or ``Test`` as an unknown split:

* label cells (:func:`parse_label_cell`): positive ``1, 1.0, true, t, yes, y, positive, pos``;
  negative ``0, 0.0, false, f, no, n, negative, neg`` (any case, surrounding spaces ignored);
  empty ``"", nan, na, n/a, none, null`` = not labelled. Anything else is an error that names the
  value (readers turn it into a reject naming file, column and value).
* split cells (:func:`parse_split`): ``train, training, trn`` -> train; ``val, valid, validation,
  dev`` -> val; ``test, testing, tst`` -> test; empty -> None; anything else is an error.
* paths (:func:`confined_path`): relative, inside the root after normalisation (no ``..`` escape,
  no absolute path); symbolic links inside the root are followed as the user laid them out.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

__all__ = [
    "POSITIVE",
    "NEGATIVE",
    "EMPTY",
    "CellError",
    "parse_label_cell",
    "positive_classes",
    "is_label_column",
    "parse_split",
    "parse_int_cell",
    "confined_path",
    "read_text_csv",
    "bad_text_reason",
    "drop_duplicates",
    "parse_list",
]

POSITIVE = frozenset({"1", "1.0", "true", "t", "yes", "y", "positive", "pos"})
NEGATIVE = frozenset({"0", "0.0", "false", "f", "no", "n", "negative", "neg"})
EMPTY = frozenset({"", "nan", "na", "n/a", "none", "null"})
_SPLITS = {
    **dict.fromkeys(("train", "training", "trn"), "train"),
    **dict.fromkeys(("val", "valid", "validation", "dev"), "val"),
    **dict.fromkeys(("test", "testing", "tst"), "test"),
}


class CellError(ValueError):
    """A table cell that is not one of the accepted spellings; ``str`` names the value."""


def _key(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip().lower()


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _number(key: str) -> float | None:
    try:
        return float(key)
    except ValueError:
        return None


def parse_label_cell(value) -> bool | None:
    """True (positive), False (negative) or None (empty: not labelled); CellError otherwise.

    Numbers equal to 1 or 0 in any spelling (``1.00``, ``0e0``) count as 1 and 0."""
    key = _key(value)
    if key in POSITIVE:
        return True
    if key in NEGATIVE:
        return False
    if key in EMPTY:
        return None
    if _NUMBER.match(key) and _number(key) in (0.0, 1.0):
        return _number(key) == 1.0
    raise CellError(f"{str(value)!r} is not a label value (use 1/0, true/false or yes/no)")


def positive_classes(row, classes: list[str]) -> list[str] | None:
    """Names of the classes whose column holds a positive label cell; None when every cell is
    empty (not labelled). Raises CellError naming the column for a cell that is not a label."""
    values = {}
    for c in classes:
        try:
            values[c] = parse_label_cell(row[c])
        except CellError as err:
            raise CellError(f"column {c}: {err}") from None
    if all(v is None for v in values.values()):
        return None
    empty = [c for c, v in values.items() if v is None]
    if empty:
        raise CellError(f"column {empty[0]}: empty while other label columns of the row are filled")
    return [c for c, v in values.items() if v]


def is_label_column(values: pd.Series) -> bool:
    """Whether a column holds labels: at least one positive or negative spelling, and every other
    non-empty cell is either such a spelling or, for at most one cell in ten, a number (a label
    column with a stray ``2`` or ``0.5`` is still a label column, whose bad cells are then rejected
    row by row, instead of silently turning into metadata and losing its class)."""
    labels, others = 0, []
    for v in values:
        key = _key(v)
        if key in EMPTY:
            continue
        try:
            parse_label_cell(key)
            labels += 1
        except CellError:
            others.append(key)
    if not labels:
        return False
    return not others or (all(_NUMBER.match(k) for k in others) and 10 * len(others) <= labels)


def parse_int_cell(value, column: str) -> int:
    """An integer id/fold cell (``"123"``, ``" 123 "``, ``"123.0"`` as written by a float column);
    CellError naming ``column`` for anything else (``"x"``, ``"1.5"``, empty)."""
    key = _key(value)
    number = _number(key) if _NUMBER.match(key) else None
    if number is None or not number.is_integer() or abs(number) > 2**62:
        raise CellError(f"column {column}: {str(value)!r} is not an integer")
    return int(number)


def parse_split(value) -> str | None:
    """``"train"``, ``"val"``, ``"test"`` or None (empty); CellError for any other value."""
    key = _key(value)
    if key in EMPTY:
        return None
    if key not in _SPLITS:
        raise CellError(f"{str(value)!r} is not a split (use train, val or test)")
    return _SPLITS[key]


def confined_path(root: str | Path, rel: str) -> Path:
    """``root / rel`` for a path written in a table; CellError when it is absolute or leaves ``root``."""
    text = str(rel).strip()
    if not text:
        raise CellError("empty path")
    if (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or PureWindowsPath(text).drive
    ):
        raise CellError(f"path {text!r} is absolute; paths must be relative to the root folder")
    norm = os.path.normpath(text.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or norm.startswith(".." + os.sep):
        raise CellError(f"path {text!r} leaves the root folder")
    return Path(root) / norm


# ----------------------------------------------------------------------------- CSV text

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


def _header_names(path: Path) -> list[str]:
    """The raw column names of a CSV (its first non-blank row), as written: pandas renames a repeated
    name (``AF``, ``AF.1``), which would hide it."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        for row in csv.reader(fh):
            if any(cell.strip() for cell in row):
                return [cell.strip() for cell in row]
    return []


def read_text_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` that marks undecodable bytes (so one bad row can be rejected alone instead
    of failing the whole table); all columns as str unless ``dtype`` is given. A UTF-8 byte-order
    mark is removed, column names are stripped. Raises ValueError naming the file when the table
    cannot be parsed or names a column twice."""
    kwargs.setdefault("dtype", str)
    kwargs.setdefault("keep_default_na", False)
    try:
        names = _header_names(path)
        table = pd.read_csv(path, encoding="utf-8-sig", encoding_errors="melp-mark", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot parse CSV ({err}); fix the file and rerun") from None
    dup = sorted({n for n in names if n and names.count(n) > 1})
    table.columns = [str(c).strip() for c in table.columns]
    dup += sorted(set(table.columns[table.columns.duplicated()]) - set(dup))
    if dup:
        raise ValueError(f"{path}: column(s) {dup} appear twice; every column name must be unique")
    return table


def _comparable(value):
    """A hashable, NaN-safe form of a cell (label lists become tuples) for comparing duplicates."""
    if isinstance(value, list | tuple) or (hasattr(value, "tolist") and not isinstance(value, str)):
        return tuple(value.tolist() if hasattr(value, "tolist") else value)
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def drop_duplicates(
    df: pd.DataFrame, key: str, rejects: list[dict], what: str = "id", agree: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Keep the first row of every value of column ``key``; reject each later one
    (reason ``duplicate <what>: VALUE first at PATH``).

    When the rows sharing a value disagree on any column of ``agree`` (split, fold, labels, report:
    what the record *means*), which row is right is unknown: every one of them is rejected
    (``conflicting duplicate: ...``), instead of silently keeping one meaning."""
    df = df.reset_index(drop=True)
    keys = df[key].astype(str)
    dup = keys.duplicated(keep=False)
    if not dup.any():
        return df
    drop = np.zeros(len(df), dtype=bool)
    cols = [c for c in agree if c in df.columns]
    for value, group in df.loc[dup.to_numpy()].groupby(keys[dup], sort=False):
        positions = group.index.to_numpy()
        differ = [c for c in cols if len({_comparable(v) for v in group[c]}) > 1]
        first = str(group["path"].iloc[0])
        for n, (_, row) in enumerate(group.iterrows()):
            if differ:
                shown = ", ".join(f"{c} {[_comparable(v) for v in group[c]]}" for c in differ)
                reason = (
                    f"conflicting duplicate: {what} {value} is listed {len(group)} times with different "
                    f"{shown}; which one is right is unknown, so every copy is rejected"
                )
            elif n == 0:
                continue
            else:
                reason = f"duplicate {what}: {value} first at {first}"
            drop[positions[n]] = True
            rejects.append({"id": str(row["id"]), "file": str(row["path"]), "reason": reason})
    return df.loc[~drop].reset_index(drop=True)


def parse_list(value) -> list[str] | None:
    """A list from a list/tuple or a comma-separated string (CLI option); None stays None."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value]
    return [s.strip() for s in str(value).split(",") if s.strip()]
