"""argparse value types shared by every ``melp`` sub-command: each rejects an out-of-range value
with a one-line usage error before any work is done."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_float", "int_at_least", "unit_fraction", "open_fraction", "nonneg_float", "lead_list"]


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
