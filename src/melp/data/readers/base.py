"""The reader interface every source implements.

A reader turns a raw dataset folder (as PhysioNet/Zenodo ship it) into two things:

* ``index()`` — a cheap, metadata-only table of entries (one row per record), plus the
  entries it could not use for reasons visible without reading the signal (file absent,
  empty report, duplicate id, ...);
* ``load(entry)`` — the expensive part, run in worker processes by ``melp prepare``: read
  one record's signal in physical units with its lead names and sampling rate. A bad record
  raises :class:`BadRecord` with a reason; the store logs it in its rejects table.

Columns of the entries table (``Reader.index().entries``):

=================  =======================================================================
``id``             unique record id (str)
``path``           the main file of the record, relative to the root (str), for messages
``patient``        patient id (str) or None
``split``          "train" / "val" / "test" or None (published split, if any)
``fold``           integer fold (PTB-XL ``strat_fold``) or None
``report``         original report text ("" when none)
``labels_<task>``  list of positive class names for ``task`` (one column per task in
                   ``Reader.tasks``); ``[]`` = labelled, negative for every class; ``None`` =
                   not labelled for this task (left out of that task's evaluation)
=================  =======================================================================

Readers may add extra columns (age, sex, ...); they are kept in the manifest.
Labels are always class *names*; class order for a task is ``Reader.tasks[task]``.

Options: each reader declares the ``-o KEY=VALUE`` options it accepts in ``OPTIONS``
(name -> :class:`Option`); an unknown key or a value of the wrong type is an error listing the
valid options (``melp prepare SOURCE --help`` prints them).
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("id", "path", "patient", "split", "fold", "report")


class BadRecord(Exception):
    """A record that cannot be used; ``str(err)`` is the reason (the file is added by the caller)."""


@dataclasses.dataclass(frozen=True)
class Option:
    """A reader option: its type (bool, int, float, str or list of str), default and help text."""

    type: type
    default: object
    help: str
    choices: tuple | None = None

    def coerce(self, key: str, value: object, reader: str) -> object:
        """``value`` (from Python or a ``-o KEY=VALUE`` string) as this option's type."""
        if value is None:
            return None
        try:
            if self.type is bool:
                if isinstance(value, bool):
                    out = value
                elif str(value).strip().lower() in ("1", "true", "yes", "on"):
                    out = True
                elif str(value).strip().lower() in ("0", "false", "no", "off"):
                    out = False
                else:
                    raise ValueError("expected true or false")
            elif self.type is list:
                out = value if isinstance(value, list | tuple) else [v.strip() for v in str(value).split(",")]
                out = [str(v) for v in out if str(v)]
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError("expected an integer")
                out = int(value) if not isinstance(value, str) else int(value.strip())
            elif self.type is float:
                if isinstance(value, bool):
                    raise ValueError("expected a number")
                out = float(value)
                if out != out or out in (float("inf"), float("-inf")):
                    raise ValueError("expected a finite number")
            else:
                out = str(value).strip()
                if not out:
                    raise ValueError("expected a value (the text after = is empty)")
        except ValueError as err:
            raise ValueError(f"{reader}: option {key}={value!r}: {err}") from None
        if self.choices is not None and out not in self.choices:
            raise ValueError(
                f"{reader}: option {key}={value!r} must be one of {', '.join(map(str, self.choices))}"
            )
        return out


WFDB_OPTIONS: dict[str, Option] = {
    "verify_checksums": Option(
        bool,
        True,
        "check each WFDB signal's checksum and initial value against its header (reject on mismatch)",
    ),
}


@dataclasses.dataclass
class Signal:
    """One record's signal as read from disk.

    data:  float array (L, T), physical units (mV where the source states it)
    leads: L lead names as written by the source (any case, any order)
    rate:  sampling rate in Hz
    """

    data: np.ndarray
    leads: list[str]
    rate: float


@dataclasses.dataclass
class Index:
    """Result of :meth:`Reader.index`.

    entries:  usable entries (see module docstring for columns)
    missing:  paths listed by the source's tables but absent on disk (summarised in one line)
    rejects:  rows (id, file, reason) rejected before reading any signal
    """

    entries: pd.DataFrame
    missing: list[str] = dataclasses.field(default_factory=list)
    rejects: list[dict] = dataclasses.field(default_factory=list)


class Reader(abc.ABC):
    """Base class of all sources. Subclasses set ``name`` and ``tasks`` and implement
    :meth:`index` and :meth:`load`. Register them with :func:`register_reader`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def __init__(self, root: str | Path, **options) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.name}: root folder {self.root} does not exist (or is not a folder)"
            )
        self.options = self.check_options(options)

    @classmethod
    def check_options(cls, options: dict) -> dict:
        """``options`` with every declared default filled in and each value of its declared type.

        Raises ValueError naming an unknown key (with the valid ones) or a badly typed value."""
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            valid = ", ".join(sorted(cls.OPTIONS)) or "none"
            raise ValueError(
                f"{cls.name}: unknown option(s) {', '.join(unknown)}; valid options: {valid} "
                f"(see `melp prepare {cls.name} --help`)"
            )
        out = {k: spec.default for k, spec in cls.OPTIONS.items()}
        for k, v in options.items():
            out[k] = cls.OPTIONS[k].coerce(k, v, cls.name)
        return out

    @classmethod
    def options_help(cls) -> str:
        """One line per declared option: name, type, default, help."""
        if not cls.OPTIONS:
            return "  (no options)"
        lines = []
        for k, spec in sorted(cls.OPTIONS.items()):
            kind = "|".join(map(str, spec.choices)) if spec.choices else spec.type.__name__
            lines.append(f"  -o {k}=<{kind}>  (default {spec.default!r}): {spec.help}")
        return "\n".join(lines)

    @property
    def tasks(self) -> dict[str, list[str]]:
        """Task name -> ordered class names. Empty for unlabeled sources."""
        return {}

    def configure(self, *, target_rate: float) -> None:
        """Called by ``melp prepare`` before :meth:`index` with the store's sampling rate (Hz).

        Sources that ship several copies of each record (PTB-XL: 100 and 500 Hz) use it to
        pick the best one; the default does nothing.
        """
        return None

    @abc.abstractmethod
    def index(self) -> Index:
        """Read the source's tables (no signals) and return its entries."""

    @abc.abstractmethod
    def load(self, entry: dict) -> Signal:
        """Read one entry's signal. Raise :class:`BadRecord` with a reason if unusable."""

    def normalize_report(self, text: str) -> str:
        """English, cleaned report used for training. Default: whitespace cleanup only."""
        return " ".join(str(text).split())


_READERS: dict[str, type[Reader]] = {}


def register_reader(cls: type[Reader]) -> type[Reader]:
    """Class decorator: make a reader available as ``melp prepare <cls.name>``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _READERS[cls.name] = cls
    return cls


def get_reader(name: str) -> type[Reader]:
    from melp.data import readers  # noqa: F401  (imports every source module, registering them)

    try:
        return _READERS[name]
    except KeyError:
        raise KeyError(f"unknown source {name!r}; available: {', '.join(sorted(_READERS))}") from None


def available_readers() -> dict[str, type[Reader]]:
    from melp.data import readers  # noqa: F401

    return dict(sorted(_READERS.items()))
