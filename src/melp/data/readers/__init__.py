"""Source readers. Importing this package registers every source."""

from __future__ import annotations

from melp.data.readers import chapman, cinc, code15, cpsc, generic, mimic, ptbxl  # noqa: F401  (registers)
from melp.data.readers.base import BadRecord, Index, Option, Reader, Signal, available_readers, get_reader

__all__ = ["BadRecord", "Index", "Option", "Reader", "Signal", "available_readers", "get_reader"]
