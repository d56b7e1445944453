"""argparse value types shared by every ``melp`` sub-command: each rejects an out-of-range value
with a one-line usage error before any work is done."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = [
    "HelpFormatter",
    "positive_float",
    "int_at_least",
    "unit_fraction",
    "open_fraction",
    "nonneg_float",
    "lead_list",
    "device",
    "output_folder",
    "output_file",
]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def unit_fraction(text: str) -> float:
    """A label fraction in (0, 1] (0.01 = 1 % of the labelled training records)."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] (0.01 = 1 %), got {text}")
    return value


def open_fraction(text: str) -> float:
    """A fraction in (0, 1)."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text}")
    return value


def int_at_least(low: int):
    """An integer >= ``low`` (a factory: ``type=int_at_least(1)``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def lead_list(text: str) -> list[str]:
    """Comma-separated lead names (``I,II,V2``), checked against the 12 standard leads."""
    from melp.data.datasets import leads_kept

    try:
        leads_kept(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return [n.strip() for n in text.split(",") if n.strip()]


def device(text: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``), checked before any
    work: a misspelled name or an absent GPU is a usage error, not a traceback after loading."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA GPU (use --device cpu)")
        if dev.index is not None and dev.index >= n:
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {n} CUDA GPU(s) (cuda:0 .. cuda:{n - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine (use --device cpu)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: use cpu, cuda, cuda:N or mps")
    return text


def _no_file_above(path: Path, text: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")
            return


def output_folder(text: str) -> str:
    """An output folder: absent (it is created) or an existing folder, never an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; --out needs a folder")
    _no_file_above(path, text)
    return text


def output_file(*suffixes: str):
    """An output file with one of ``suffixes`` (a factory: ``type=output_file(".parquet", ".npy")``),
    not an existing folder."""

    def parse(text: str) -> str:
        path = Path(text)
        if path.suffix not in suffixes:
            raise argparse.ArgumentTypeError(
                f"{text}: use a {' or '.join(suffixes)} suffix (e.g. emb{suffixes[0]})"
            )
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
        _no_file_above(path, text)
        return text

    parse.__name__ = f"file ({', '.join(suffixes)})"
    return parse


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless the help text already says it or there is none
    (None, False); options without help text get one from their default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            default not in (None, False, argparse.SUPPRESS)
            and default != []
            and "default" not in text
            and action.option_strings
            and action.nargs != 0
        ):
            shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
            shown = shown.replace("%", "%%")
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
        return text


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that keeps the description and epilog as written (tables, lists)."""
