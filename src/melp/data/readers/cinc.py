"""PhysioNet/Computing in Cardiology Challenge 2020/2021 format.

Every record is a WFDB header ``NAME.hea`` plus a MATLAB ``NAME.mat`` holding ``val`` (int16,
leads x samples); the header gives gain (usually 1000/mV), lead names (I, II, III, aVR, aVL, aVF,
V1-V6 in that order) and rate. Comment lines carry ``# Age:``, ``# Sex:`` and ``# Dx:`` with
SNOMED-CT codes, mapped to the Challenge abbreviations with ``challenge2021_dx_mapping.csv``.
The same format is used for the Chapman-Shaoxing/Ningbo (``JS*``), Georgia (``E*``), PTB-XL
(``HR*``), PTB (``S*``), INCART (``I*``) and CPSC (``A*``, ``Q*``) parts of the Challenge data;
the part is kept in the ``database`` column.

``# Dx:`` codes may be separated by commas, semicolons or spaces. A header without a ``# Dx:`` line
(or with an empty one) is *not labelled* (``None``: left out of the ``dx`` evaluation, counted in
the summary), never negative for every class; a Dx entry that is not a SNOMED-CT code (digits) is
a reject naming it. Codes absent from the mapping are kept in ``dx_unmapped``.
"""

from __future__ import annotations

import csv
import functools
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from melp.data.formats import wfdb as wfdb_format
from melp.data.formats.matlab import read_matrix
from melp.data.formats.tables import drop_duplicates
from melp.data.readers.base import WFDB_OPTIONS, BadRecord, Index, Option, Reader, Signal, register_reader
from melp.data.readers.generic import drop_duplicate_ids

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
    """``# Key: value`` comment lines of a WFDB header -> {key.lower(): value} (first one wins).

    Raises ValueError (``bad Dx: ...``) when the header carries two ``# Dx:`` lines that differ
    (which one holds the diagnosis is unknown) or a ``# Dx`` line without its colon."""
    out: dict[str, str] = {}
    for line in wfdb_format.parse_header(hea).comments:
        if ":" in line:
            key, value = line.split(":", 1)
            key, value = key.strip().lower(), value.strip()
            if key == "dx" and key in out and out[key] != value:
                raise ValueError(
                    f"bad Dx: the header has two different '# Dx:' lines ({out[key]!r} and {value!r}); "
                    "which one is right is unknown"
                )
            out.setdefault(key, value)
        elif line.split()[:1] and line.split()[0].lower() == "dx":
            raise ValueError(f"bad Dx: comment line {line!r} has no ':' after Dx")
    return out


def parse_dx(value: str | None) -> list[str] | None:
    """SNOMED-CT codes of a ``# Dx:`` value (separated by commas, semicolons or spaces); None when
    the value is absent or empty. Raises ValueError naming an entry that is not a code."""
    if value is None:
        return None
    codes = [c for c in re.split(r"[,;\s]+", value.strip()) if c]
    if not codes:
        return None
    bad = [c for c in codes if not c.isdigit()]
    if bad:
        raise ValueError(f"bad Dx: {bad[0]!r} is not a SNOMED-CT code (digits); the Dx line is {value!r}")
    return codes


def database_of(record_name: str) -> str | None:
    """Challenge sub-database from the record-name prefix (``JS20000`` -> ``chapman_ningbo``)."""
    for prefix in sorted(DATABASES, key=len, reverse=True):
        if record_name.startswith(prefix) and record_name[len(prefix) :].isdigit():
            return DATABASES[prefix]
    return None


def read_cinc_mat(
    mat: Path, gain: float = 1000.0, rate: float = 500.0, *, verify_checksums: bool = True
) -> Signal:
    """Read a Challenge ``.mat`` record: through its ``.hea`` if present (gain, lead names, rate
    from the header; :func:`melp.data.formats.wfdb.read_record`), else ``val`` / ``gain`` with the
    Challenge lead order at ``rate`` Hz (a samples x 12 matrix is transposed). Returns data (12, T)
    in mV. Raises BadRecord for a corrupt or unexpected file."""
    if mat.with_suffix(".hea").exists():
        return wfdb_format.read_record(mat.with_suffix(""), verify_checksums=verify_checksums)
    val, version = read_matrix(mat, prefer="val")
    n = len(CINC_LEADS)
    if val.ndim == 2 and val.shape[0] != n and val.shape[1] == n:
        val = val.T  # stored samples x leads
    if val.ndim != 2 or val.shape[0] != n:
        raise BadRecord(f"bad shape: 'val' ({version}) has shape {val.shape}; expected ({n}, samples)")
    finite = np.isfinite(val)
    if not np.issubdtype(val.dtype, np.integer) and not np.array_equal(val[finite], np.round(val[finite])):
        raise BadRecord(
            f"bad MATLAB file: 'val' ({version}) holds non-integer samples; Challenge files hold digital values "
            f"(divided by the gain {gain:g}), these look like physical values: add a .hea that describes them"
        )
    data = val.astype(np.float64) / gain
    if np.issubdtype(val.dtype, np.integer):
        data[val == -32768] = np.nan  # WFDB's invalid 16-bit sample
    return Signal(data=data, leads=list(CINC_LEADS), rate=rate)


@register_reader
class CincReader(Reader):
    """PhysioNet/CinC Challenge 2020/2021 (``*.hea`` + ``*.mat``, any folder depth).

    Labels: task ``dx`` with the Challenge abbreviations (all rows of the mapping file, in file
    order); codes absent from the mapping are kept in the ``dx_unmapped`` column; a record without
    Dx codes is not labelled (None).
    """

    name = "cinc"
    description = (
        "PhysioNet/CinC Challenge 2020/2021 WFDB+.mat records (Chapman/Ningbo, Georgia, PTB-XL, ...)"
    )

    OPTIONS = {
        "dx_mapping": Option(
            str, None, "another SNOMED-CT -> abbreviation mapping CSV (snomed_code, abbreviation)"
        ),
        **WFDB_OPTIONS,
    }

    def __init__(self, root, **options) -> None:
        super().__init__(root, **options)
        path = self.options["dx_mapping"] or DX_MAPPING
        if not Path(path).is_file():
            raise FileNotFoundError(f"cinc: dx_mapping file {path} not found")
        try:
            self.mapping = load_dx_mapping(path)
        except (KeyError, csv.Error, UnicodeDecodeError) as err:
            raise ValueError(
                f"cinc: {path} must be a CSV with columns snomed_code, abbreviation ({err})"
            ) from None

    @property
    def tasks(self) -> dict[str, list[str]]:
        return {"dx": list(dict.fromkeys(self.mapping.values()))}

    def index(self) -> Index:
        rows, missing, rejects = [], [], []
        for hea in sorted(self.root.rglob("*.hea")):
            rel = str(hea.relative_to(self.root))
            if wfdb_format.missing_signal_file(hea):
                missing.append(rel)
                continue
            try:
                meta = parse_header_comments(hea)
                codes = parse_dx(meta.get("dx"))
            except (BadRecord, ValueError) as err:
                rejects.append({"id": hea.stem, "file": rel, "reason": str(err)})
                continue
            labels = (
                None
                if codes is None
                else list(dict.fromkeys(self.mapping[c] for c in codes if c in self.mapping))
            )
            codes = codes or []
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
        # two headers naming one signal file (a copied header): one record, whatever the names say
        entries["_identity"] = [
            "|".join(
                os.path.relpath(os.path.realpath(self.root / Path(p).parent / f), os.path.realpath(self.root))
                for f in wfdb_format.signal_files(self.root / p) or [p]
            )
            for p in entries["path"]
        ]
        entries = drop_duplicates(entries, "_identity", rejects, "file").drop(columns="_identity")
        return Index(entries=drop_duplicate_ids(entries, rejects), missing=missing, rejects=rejects)

    def load(self, entry: dict) -> Signal:
        record = self.root / str(entry["path"]).removesuffix(".hea")
        return wfdb_format.read_record(record, verify_checksums=self.options["verify_checksums"])
