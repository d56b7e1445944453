"""MELP models: ECG encoders, poolers, caption decoder, assembled model, registry, conversion, Hub.

Names are imported lazily so that ``melp --help`` (which registers ``melp.models.cli``) stays cheap.
"""

from __future__ import annotations

__all__ = ["MELPModel", "create_model", "get_config", "list_models", "load_model"]


def __getattr__(name: str):
    if name == "MELPModel":
        from melp.models.melp import MELPModel

        return MELPModel
    if name in ("create_model", "get_config", "list_models", "load_model"):
        from melp.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'melp.models' has no attribute {name!r}")
