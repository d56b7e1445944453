"""Training checkpoints that are written atomically and read without unpickling code.

A Lightning checkpoint is a ``torch.save`` file, i.e. a pickle. Unpickling a file can call any
importable function (a crafted ``__reduce__``), so ``melp pretrain --resume FILE`` must never
unpickle freely. Every checkpoint read here goes through :func:`load_checkpoint`, which uses
``torch.load(weights_only=True)``: only tensors, containers, numbers, strings and the
allow-listed types of :data:`SAFE_GLOBALS` are rebuilt, and anything else is refused with
:class:`UnsafeCheckpointError` before it runs. Our own checkpoints contain nothing else: the
module stores plain ints and floats (``melp_state``), Lightning stores dicts of tensors and numbers.

Writes (:class:`SafeCheckpointIO`) go to a temporary file in the same folder, are flushed to disk
and renamed over the target, so a ``kill -9`` at any moment leaves either the previous checkpoint
or the new one, never a truncated file.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

# Types a melp checkpoint may hold beyond what weights_only=True accepts by itself. Lightning
# stores the optimizer/scheduler/callback/loop states as plain containers and tensors, and the
# module's hyper-parameters as a dict, so the list is empty; a type added here must be data only.
SAFE_GLOBALS: list = []


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds Python objects beyond tensors and plain data: refused, nothing ran."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Read a training checkpoint with ``torch.load(weights_only=True)`` (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file needs code to be unpickled (a crafted or foreign file).
        ValueError: not a readable checkpoint (truncated, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" (it references {found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"checkpoint {path} contains Python objects other than tensors and plain data{what}; "
            "refusing to load it, because unpickling such a file can run arbitrary code. Only "
            "checkpoints written by `melp pretrain` can be resumed; to start from other weights, "
            "export them as a model folder and use --set model.init=DIR."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"checkpoint {path} cannot be read ({err}); is it a complete .ckpt file?") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a training checkpoint")
    return ckpt


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic writes, weights-only reads (:func:`load_checkpoint`)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO.save_checkpoint does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        # weights_only is always True here, whatever the caller asks for
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")
