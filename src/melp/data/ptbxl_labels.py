"""PTB-XL benchmark labels (Strodthoff et al. 2020) derived from ``scp_codes`` as pure functions.

Definitions, as in the benchmark's ``compute_label_aggregations``:

* ``super_class``: the ``diagnostic_class`` of every code with ``diagnostic == 1``;
* ``sub_class``:   the ``diagnostic_subclass`` of those codes;
* ``form``:        every code with ``form == 1`` (these include some diagnostic ST-T codes);
* ``rhythm``:      every code with ``rhythm == 1``.

Every code in ``scp_codes`` counts **whatever its likelihood** (0 included): the benchmark reads
only the dict's keys. Class names drop the underscores that pad short SCP codes (``NST_`` ->
``NST``, ``_AVB`` -> ``AVB``), which is how the published label files and the paper name them.
The benchmark evaluates a task only on records with at least one label for it; the store keeps
every record (with an empty list) and :class:`melp.data.datasets.DownstreamDataset` drops the
unlabeled ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

# Class order of the paper's dataset_class_names.json (spec appendix C; sub_class = train-CSV order).
TASKS: dict[str, list[str]] = {
    "super_class": ["HYP", "NORM", "MI", "CD", "STTC"],
    "sub_class": [
        "AMI",
        "LAFB/LPFB",
        "LVH",
        "STTC",
        "IMI",
        "SEHYP",
        "CRBBB",
        "WPW",
        "LAO/LAE",
        "NORM",
        "AVB",
        "RAO/RAE",
        "ISC",
        "LMI",
        "ISCI",
        "ISCA",
        "NST",
        "CLBBB",
        "ILBBB",
        "IRBBB",
        "PMI",
        "RVH",
        "IVCD",
    ],
    "form": [
        "PAC",
        "DIG",
        "HVOLT",
        "STD",
        "LPR",
        "QWAVE",
        "VCLVH",
        "NDT",
        "TAB",
        "LOWT",
        "ABQRS",
        "LNGQT",
        "PRC(S)",
        "NT",
        "STE",
        "NST",
        "PVC",
        "INVT",
        "LVOLT",
    ],
    "rhythm": [
        "SVARR",
        "BIGU",
        "STACH",
        "SARRH",
        "SBRAD",
        "TRIGU",
        "AFIB",
        "SR",
        "SVTAC",
        "PSVT",
        "AFLT",
        "PACE",
    ],
}


def class_name(code: str) -> str:
    """Benchmark class name of an SCP code or subclass (``"NST_"`` -> ``"NST"``)."""
    return str(code).strip("_")


def parse_scp_codes(text: str) -> dict[str, float]:
    """Parse the ``scp_codes`` column (a Python dict literal ``{code: likelihood}``)."""
    if not isinstance(text, str) or not text.strip():
        return {}
    value = ast.literal_eval(text)
    if not isinstance(value, dict):
        raise ValueError(f"scp_codes is not a dict: {text!r}")
    return {str(k): float(v) for k, v in value.items()}


def load_statements(path: str | Path) -> pd.DataFrame:
    """Read ``scp_statements.csv`` (index = SCP code); checks the columns the labels need."""
    table = pd.read_csv(path, index_col=0)
    need = {"diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"}
    if need - set(table.columns):
        raise ValueError(f"{path}: missing columns {sorted(need - set(table.columns))}")
    return table


def code_maps(statements: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Per task, the map SCP code -> class name, built from the statement table."""
    diag = statements[statements["diagnostic"] == 1]
    return {
        "super_class": {c: class_name(v) for c, v in diag["diagnostic_class"].dropna().items()},
        "sub_class": {c: class_name(v) for c, v in diag["diagnostic_subclass"].dropna().items()},
        "form": {c: class_name(c) for c in statements.index[statements["form"] == 1]},
        "rhythm": {c: class_name(c) for c in statements.index[statements["rhythm"] == 1]},
    }


def derive_labels(codes: dict[str, float], maps: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Labels of one record for every task: positive class names in ``TASKS`` order.

    ``codes``: parsed ``scp_codes``; all keys count regardless of likelihood.
    """
    out = {}
    for task, classes in TASKS.items():
        hit = {maps[task][c] for c in codes if c in maps[task]}
        out[task] = [c for c in classes if c in hit]
    return out


def label_table(database: pd.DataFrame, statements: pd.DataFrame) -> pd.DataFrame:
    """``labels_<task>`` columns (lists of class names) for every row of ``ptbxl_database.csv``."""
    maps = code_maps(statements)
    rows = [derive_labels(parse_scp_codes(t), maps) for t in database["scp_codes"]]
    return pd.DataFrame({f"labels_{task}": [r[task] for r in rows] for task in TASKS}, index=database.index)
