"""Source readers. Importing this package registers every available source."""

from __future__ import annotations

import importlib

from melp.data.readers.base import BadRecord, Index, Reader, Signal, available_readers, get_reader

__all__ = ["BadRecord", "Index", "Reader", "Signal", "available_readers", "get_reader"]

# Each module registers its reader(s) on import. A module that is not written yet is skipped.
for _mod in ("ptbxl", "mimic", "cinc", "cpsc", "chapman", "code15", "generic"):
    try:
        importlib.import_module(f"melp.data.readers.{_mod}")
    except ModuleNotFoundError as _err:
        if _err.name != f"melp.data.readers.{_mod}":
            raise
