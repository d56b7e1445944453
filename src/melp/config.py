"""The one typed-configuration mechanism of melp: dataclasses checked key by key.

Model architectures (:mod:`melp.models.config`) and training runs (:mod:`melp.train.config`) are
trees of dataclasses built from plain mappings (JSON/YAML) by :func:`build`: an unknown key or a
value of the wrong type raises :class:`ConfigError` naming the dotted key, the expected type and the
value found. :func:`apply_overrides` applies ``a.b=value`` strings (CLI ``--set``) with the same
checks. Values are converted only where that is lossless (an int for a float field).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any

import yaml

__all__ = ["ConfigError", "build", "coerce", "apply_overrides", "merge"]


class ConfigError(ValueError):
    """A configuration file or override is invalid (the message names the key)."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the most precise
            return coerce(value, options[0], key)
        for arg in options:
            try:
                return coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping for {tp.__name__}, got {value!r}")
        return build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [coerce(v, item_tp, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def build(cls: type, values: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) mapping, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"unknown config key '{key}' (valid keys here: {', '.join(sorted(names))})")
        kwargs[k] = coerce(v, hints[k], key)
    return cls(**kwargs)


def _parse_value(raw: str, tp: Any) -> Any:
    """Parse an override string: YAML syntax, except that str fields keep the raw text."""
    origin = typing.get_origin(tp)
    options = typing.get_args(tp) if origin in (typing.Union, types.UnionType) else (tp,)
    if int in options and raw.strip().lstrip("-").isdigit():  # int | str fields: "2" is the number
        return int(raw)
    if str in options and raw not in ("null", "None", "~"):
        return raw
    if float in options:
        try:  # "1e-4" is a string for YAML 1.1
            return float(raw)
        except ValueError:
            pass
    if any(typing.get_origin(a) is list for a in options) and not raw.startswith("["):
        raw = f"[{raw}]"  # allow "1,2,3"
    return yaml.safe_load(raw)


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Apply ``a.b=value`` overrides (types checked against the field; lists indexed by number)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node: Any = cfg
        for i, part in enumerate(parts):
            here = ".".join(parts[: i + 1])
            last = i == len(parts) - 1
            if dataclasses.is_dataclass(node):
                hints = typing.get_type_hints(type(node))
                if part not in hints:
                    names = ", ".join(sorted(hints))
                    raise ConfigError(f"unknown config key '{here}' (valid keys here: {names})")
                if last:
                    setattr(node, part, coerce(_parse_value(raw, hints[part]), hints[part], here))
                else:
                    node = getattr(node, part)
            elif isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"config key '{here}': index out of range (list has {len(node)})")
                if last:
                    raise ConfigError(f"config key '{here}': cannot replace a whole list item")
                node = node[int(part)]
            elif isinstance(node, dict):  # free-form mapping (model.overrides): YAML-typed values
                if last:
                    node[part] = yaml.safe_load(raw)
                else:
                    node = node.setdefault(part, {})
                    if not isinstance(node, dict):
                        raise ConfigError(f"config key '{here}' is not a mapping")
            else:
                raise ConfigError(f"config key '{here}': '{parts[i - 1]}' has no sub-keys")
    return cfg


def merge(base: dict, override: dict, replace: tuple[str, ...] = ()) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (dicts merge, everything else replaces; keys
    in ``replace`` are replaced as a whole even when both are dicts)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in replace:
            out[k] = merge(out[k], v, replace)
        else:
            out[k] = copy.deepcopy(v)
    return out
