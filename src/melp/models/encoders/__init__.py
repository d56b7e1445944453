"""ECG encoders: a registry, like the source readers'. One module per encoder registers itself.

The contract every encoder meets (checked for every registered encoder by
``tests/test_models.py::test_every_encoder_meets_the_contract``):

* ``cls(cfg: dict)`` builds it from the model config's ``ecg`` section (the encoder's config
  dataclass, resolved: the input contract keys plus its own);
* ``.width`` (C, the token width) and ``.stride`` (input samples per token);
* ``forward(x (B, L, T), lengths (B,) | None) -> (tokens (B, N, C), valid (B, N) bool | None)``
  with ``N = output_lengths(T)``; ``lengths`` are the valid samples of each record (None = all
  valid, no mask returned). The samples beyond a record's length never change its valid tokens;
* ``output_lengths(lengths (B,)) -> (B,)`` valid tokens for valid samples (no host sync).

Adding an encoder = one module: a ``@dataclass`` config subclassing :class:`ECGInputConfig` (its
fields and defaults are the config keys), the ``nn.Module``, and :func:`register_encoder` with a
CI-sized ``test_size`` override and an optional ``check`` of a resolved section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = [
    "ECGInputConfig",
    "EncoderSpec",
    "register_encoder",
    "encoder_spec",
    "encoder_names",
    "build_encoder",
]


@dataclass
class ECGInputConfig:
    """The input contract every encoder shares (the ``ecg`` section's common keys)."""

    type: str = "wav2vec2"
    sample_rate: int | float = 500  # Hz
    n_samples: int = 5000  # input length T
    in_leads: int = 12
    leads: list[str] | None = None  # names in input order; null = the canonical 12
    normalize: str = "minmax"  # the per-record normalisation the model was trained with


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder: its module, config dataclass, CI-size overrides and extra check."""

    name: str
    module: type[nn.Module]
    config: type
    test_size: dict[str, Any]
    check: Callable[[dict, str], None] | None = None

    def defaults(self) -> dict[str, Any]:
        """The encoder's config keys with their defaults (``type`` set to this encoder)."""
        return {**dataclasses.asdict(self.config()), "type": self.name}


_ENCODERS: dict[str, EncoderSpec] = {}


def register_encoder(
    name: str, *, config: type, test_size: dict[str, Any], check: Callable[[dict, str], None] | None = None
):
    """Class decorator registering an encoder module under ``ecg.type = name``."""
    if not (dataclasses.is_dataclass(config) and issubclass(config, ECGInputConfig)):
        raise TypeError(f"encoder {name!r}: config must be a dataclass subclassing ECGInputConfig")

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        _ENCODERS[name] = EncoderSpec(name, cls, config, dict(test_size), check)
        return cls

    return wrap


def encoder_spec(name: str) -> EncoderSpec:
    """The registered encoder ``name``; ValueError listing the registered ones."""
    try:
        return _ENCODERS[name]
    except KeyError:
        raise ValueError(f"ecg.type={name!r} unknown; choose one of {encoder_names()}") from None


def encoder_names() -> list[str]:
    """Names of the registered encoders."""
    return sorted(_ENCODERS)


def build_encoder(cfg: dict) -> nn.Module:
    """The encoder of a resolved ``ecg`` section."""
    return encoder_spec(cfg["type"]).module(cfg)


from melp.models.encoders import resnet1d, wav2vec2  # noqa: E402,F401  (each module registers itself)
