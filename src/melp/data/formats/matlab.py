"""MATLAB ``.mat`` containers, read by what they are, never at a guessed byte offset.

* v4 (the PhysioNet/CinC Challenge files): the 20-byte matrix header (type code ``MOPT``, rows,
  columns, imaginary flag, name length) is checked before the file is handed to
  ``scipy.io.loadmat``; a file whose first header is not a full numeric real matrix is rejected.
* v5 / v7 (also zlib-compressed): ``scipy.io.loadmat``.
* v7.3 (HDF5 with a 512-byte MATLAB text block): ``h5py``; MATLAB writes column-major, so an HDF5
  dataset of shape (T, L) is the MATLAB matrix (L, T) and is transposed back.

Every function returns arrays in MATLAB's own (rows, columns) orientation and raises
:class:`~melp.data.readers.base.BadRecord` with the reason (``unreadable MATLAB file: ...`` or
``bad MATLAB file: ...``).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from melp.data.readers.base import BadRecord

__all__ = ["mat_version", "read_matrix", "read_struct_field"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def mat_version(path: str | Path) -> str:
    """``"v4"``, ``"v5"`` or ``"v7.3"`` from the file's first bytes; BadRecord for anything else."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(128)
            fh.seek(512)
            at512 = fh.read(8)
    except OSError as err:
        raise BadRecord(f"unreadable MATLAB file: {err}") from None
    if head.startswith(_HDF5_SIGNATURE) or at512 == _HDF5_SIGNATURE:
        return "v7.3"
    if head.startswith(b"MATLAB"):
        return "v5"
    if len(head) < 20:
        raise BadRecord(f"bad MATLAB file: {path.name} is only {len(head)} bytes long")
    for order in "<>":
        mopt, rows, cols, imag, namelen = struct.unpack(order + "5i", head[:20])
        m, o, p, t = mopt // 1000, (mopt // 100) % 10, (mopt // 10) % 10, mopt % 10
        if 0 <= mopt < 5000 and m == (0 if order == "<" else 1) and o == 0 and p <= 5 and t == 0:
            if rows < 0 or cols < 0 or imag not in (0, 1) or not 0 < namelen < 64:
                break
            if imag:
                raise BadRecord(f"bad MATLAB file: {path.name} holds a complex matrix")
            return "v4"
    raise BadRecord(f"bad MATLAB file: {path.name} is not a MATLAB v4, v5 or v7.3 file")


def _pick(names: list[str], prefer: str | None, path: Path, what: str) -> str:
    if prefer is not None and prefer in names:
        return prefer
    if len(names) == 1:
        return names[0]
    found = ", ".join(names) or "nothing"
    want = f"{prefer!r} variable" if prefer else "single variable"
    raise BadRecord(f"bad MATLAB file: {path.name} has no {want} ({what}: {found})")


def read_matrix(path: str | Path, prefer: str | None = "val") -> tuple[np.ndarray, str]:
    """The numeric matrix of a ``.mat`` file (variable ``prefer``, else its only variable) in
    MATLAB orientation, and the container version."""
    path = Path(path)
    version = mat_version(path)
    if version == "v7.3":
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                names = [k for k in fh.keys() if not k.startswith("#") and isinstance(fh[k], h5py.Dataset)]
                name = _pick(names, prefer, path, "datasets")
                arr = np.asarray(fh[name][()])
        except BadRecord:
            raise
        except Exception as err:
            raise BadRecord(f"unreadable MATLAB file: {type(err).__name__}: {err}") from None
        arr = arr.T  # HDF5 (column-major MATLAB) shape is reversed
    else:
        import scipy.io

        try:
            data = scipy.io.loadmat(str(path), appendmat=False)
        except Exception as err:
            raise BadRecord(f"unreadable MATLAB file: {type(err).__name__}: {err}") from None
        names = [k for k in data if not k.startswith("__")]
        arr = np.asarray(data[_pick(names, prefer, path, "variables")])
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise BadRecord(f"bad MATLAB file: {path.name} holds a {arr.dtype} array, not numbers")
    return arr, version


def read_struct_field(path: str | Path, struct_name: str, field: str) -> tuple[np.ndarray, str]:
    """Field ``field`` of the struct ``struct_name`` (e.g. CPSC 2018's ``ECG.data``), MATLAB orientation."""
    path = Path(path)
    version = mat_version(path)
    try:
        if version == "v7.3":
            import h5py

            with h5py.File(path, "r") as fh:
                if struct_name not in fh or field not in fh[struct_name]:
                    raise KeyError(f"{struct_name}.{field}")
                arr = np.asarray(fh[struct_name][field][()]).T
        else:
            import scipy.io

            data = scipy.io.loadmat(str(path), appendmat=False)
            if struct_name not in data:
                raise KeyError(struct_name)
            record = data[struct_name]
            if record.dtype.names is None or field not in record.dtype.names:
                raise KeyError(f"{struct_name}.{field}")
            arr = np.asarray(record[0, 0][field])
    except KeyError as err:
        raise BadRecord(f"bad MATLAB file: no struct field {err} (expected {struct_name}.{field})") from None
    except BadRecord:
        raise
    except Exception as err:
        raise BadRecord(f"unreadable MATLAB file: {type(err).__name__}: {err}") from None
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise BadRecord(f"bad MATLAB file: {struct_name}.{field} is a {arr.dtype} array, not numbers")
    return arr, version
