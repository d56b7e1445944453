"""PhysioNet/Computing in Cardiology Challenge 2020/2021 format.

Every record is a WFDB header ``NAME.hea`` plus a MATLAB ``NAME.mat`` holding ``val`` (int16,
leads x samples); the header gives gain (usually 1000/mV), lead names (I, II, III, aVR, aVL, aVF,
V1-V6 in that order) and rate. Comment lines carry ``# Age:``, ``# Sex:`` and ``# Dx:`` with
SNOMED-CT codes, mapped to the Challenge abbreviations with ``challenge2021_dx_mapping.csv``.
The same format is used for the Chapman-Shaoxing/Ningbo (``JS*``), Georgia (``E*``), PTB-XL
(``HR*``), PTB (``S*``), INCART (``I*``) and CPSC (``A*``, ``Q*``) parts of the Challenge data;
the part is kept in the ``database`` column.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pandas as pd

from melp.data.readers.base import BadRecord, Index, Reader, Signal, register_reader
from melp.data.readers.generic import drop_duplicate_ids, missing_signal_file, read_wfdb

DX_MAPPING = Path(__file__).resolve().parents[1] / "resources" / "challenge2021_dx_mapping.csv"

# Record-name prefix -> Challenge sub-database.
DATABASES = {
    "HR": "ptbxl",
    "JS": "chapman_ningbo",
    "E": "georgia",
    "S": "ptb",
    "I": "incart",
    "A": "cpsc2018",
    "Q": "cpsc2018_extra",
}

# Lead order of Challenge files written without a header (documented by the Challenge).
CINC_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@functools.lru_cache(maxsize=4)
def load_dx_mapping(path: str | Path = DX_MAPPING) -> dict[str, str]:
    """SNOMED-CT code (str) -> Challenge abbreviation, in file order."""
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["snomed_code"].strip(): row["abbreviation"].strip() for row in csv.DictReader(fh)}


def parse_header_comments(hea: Path) -> dict[str, str]:
    """``# Key: value`` comment lines of a WFDB header -> {key.lower(): value}."""
    out: dict[str, str] = {}
    with open(hea, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("#") and ":" in line:
                key, value = line[1:].split(":", 1)
                out[key.strip().lower()] = value.strip()
    return out


def database_of(record_name: str) -> str | None:
    """Challenge sub-database from the record-name prefix (``JS20000`` -> ``chapman_ningbo``)."""
    for prefix in sorted(DATABASES, key=len, reverse=True):
        if record_name.startswith(prefix) and record_name[len(prefix) :].isdigit():
            return DATABASES[prefix]
    return None


def read_cinc_mat(mat: Path, gain: float = 1000.0, rate: float = 500.0) -> Signal:
    """Read a Challenge ``.mat`` record: through its ``.hea`` if present (gain, lead names, rate
    from the header), else ``val`` / ``gain`` with the Challenge lead order at ``rate`` Hz.
    Returns data (12, T) in mV. Raises BadRecord for a corrupt or unexpected file."""
    if mat.with_suffix(".hea").exists():
        return read_wfdb(mat.with_suffix(""))
    import scipy.io

    try:
        val = scipy.io.loadmat(str(mat))["val"]
    except KeyError:
        raise BadRecord("bad MATLAB file: no 'val' variable") from None
    except Exception as err:
        raise BadRecord(f"unreadable MATLAB file: {type(err).__name__}: {err}") from None
    if val.ndim != 2 or val.shape[0] != len(CINC_LEADS):
        raise BadRecord(f"bad shape: 'val' has shape {val.shape}; expected ({len(CINC_LEADS)}, samples)")
    return Signal(data=val.astype(np.float64) / gain, leads=list(CINC_LEADS), rate=rate)


@register_reader
class CincReader(Reader):
    """PhysioNet/CinC Challenge 2020/2021 (``*.hea`` + ``*.mat``, any folder depth).

    Labels: task ``dx`` with the Challenge abbreviations (all rows of the mapping file, in file
    order); codes absent from the mapping are kept in the ``dx_unmapped`` column. Options:
    ``dx_mapping`` (path to another mapping CSV).
    """

    name = "cinc"
    description = (
        "PhysioNet/CinC Challenge 2020/2021 WFDB+.mat records (Chapman/Ningbo, Georgia, PTB-XL, ...)"
    )

    def __init__(self, root, **options) -> None:
        super().__init__(root, **options)
        self.mapping = load_dx_mapping(options.get("dx_mapping") or DX_MAPPING)

    @property
    def tasks(self) -> dict[str, list[str]]:
        return {"dx": list(dict.fromkeys(self.mapping.values()))}

    def index(self) -> Index:
        rows, missing, rejects = [], [], []
        for hea in sorted(self.root.rglob("*.hea")):
            rel = str(hea.relative_to(self.root))
            if missing_signal_file(hea):
                missing.append(rel)
                continue
            try:
                meta = parse_header_comments(hea)
            except OSError as err:
                rejects.append({"id": hea.stem, "file": rel, "reason": f"unreadable header: {err}"})
                continue
            codes = [c.strip() for c in meta.get("dx", "").split(",") if c.strip()]
            labels = list(dict.fromkeys(self.mapping[c] for c in codes if c in self.mapping))
            rows.append(
                {
                    "id": hea.stem,
                    "path": rel,
                    "patient": None,
                    "split": None,
                    "fold": None,
                    "report": "",
                    "labels_dx": labels,
                    "dx_codes": ",".join(codes),
                    "dx_unmapped": ",".join(c for c in codes if c not in self.mapping),
                    "age": meta.get("age"),
                    "sex": meta.get("sex"),
                    "database": database_of(hea.stem),
                }
            )
        cols = ["id", "path", "patient", "split", "fold", "report", "labels_dx", "dx_codes", "dx_unmapped"]
        entries = pd.DataFrame(rows, columns=cols + ["age", "sex", "database"])
        return Index(entries=drop_duplicate_ids(entries, rejects), missing=missing, rejects=rejects)

    def load(self, entry: dict) -> Signal:
        return read_wfdb((self.root / entry["path"]).with_suffix(""))
