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
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

__all__ = [
    "POSITIVE",
    "NEGATIVE",
    "EMPTY",
    "CellError",
    "parse_label_cell",
    "is_label_column",
    "parse_split",
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


def parse_label_cell(value) -> bool | None:
    """True (positive), False (negative) or None (empty: not labelled); CellError otherwise."""
    key = _key(value)
    if key in POSITIVE:
        return True
    if key in NEGATIVE:
        return False
    if key in EMPTY:
        return None
    raise CellError(f"{str(value)!r} is not a label value (use 1/0, true/false or yes/no)")


def is_label_column(values: pd.Series) -> bool:
    """True when every cell is an accepted label spelling and at least one is not empty."""
    keys = {_key(v) for v in values}
    return bool(keys - EMPTY) and keys <= POSITIVE | NEGATIVE | EMPTY


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


def read_text_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` that marks undecodable bytes (so one bad row can be rejected alone instead
    of failing the whole table); all columns as str unless ``dtype`` is given. A UTF-8 byte-order
    mark is removed. Raises ValueError naming the file when the table cannot be parsed."""
    kwargs.setdefault("dtype", str)
    kwargs.setdefault("keep_default_na", False)
    try:
        table = pd.read_csv(path, encoding="utf-8-sig", encoding_errors="melp-mark", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeError) as err:
        raise ValueError(f"{path}: cannot parse CSV ({err}); fix the file and rerun") from None
    table.columns = [str(c).strip() for c in table.columns]
    dup = table.columns[table.columns.duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: column(s) {dup} appear twice; every column name must be unique")
    return table


def drop_duplicates(df: pd.DataFrame, key: str, rejects: list[dict], what: str = "id") -> pd.DataFrame:
    """Keep the first row of every value of column ``key``; reject each later one
    (reason ``duplicate <what>: first at <path>``)."""
    dup = df[key].duplicated(keep="first")
    if dup.any():
        first = df.loc[~dup].set_index(key)["path"]
        for _, row in df.loc[dup].iterrows():
            rejects.append(
                {
                    "id": str(row["id"]),
                    "file": str(row["path"]),
                    "reason": f"duplicate {what}: {row[key]} first at {first[row[key]]}",
                }
            )
    return df.loc[~dup].reset_index(drop=True)


def parse_list(value) -> list[str] | None:
    """A list from a list/tuple or a comma-separated string (CLI option); None stays None."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value]
    return [s.strip() for s in str(value).split(",") if s.strip()]
