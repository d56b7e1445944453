"""MELP: multi-scale ECG-language pretraining.

The library (models, losses, data, evaluation) is plain PyTorch; training lives in
``melp.train`` and is the only part that imports Lightning.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "load_model", "__version__"]


def __getattr__(name: str):
    # Lazy access so that `import melp` stays cheap (no torch/transformers import for the CLI help).
    if name in ("create_model", "list_models", "load_model"):
        from melp.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'melp' has no attribute {name!r}")
