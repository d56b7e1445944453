"""MELP models: ECG encoders, poolers, caption decoder, assembled model, registry."""

from melp.models.melp import MELPModel
from melp.models.registry import create_model, get_config, list_models, load_model

__all__ = ["MELPModel", "create_model", "get_config", "list_models", "load_model"]
