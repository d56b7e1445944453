"""Hub ids versus local paths, and the Hugging Face cache: shared by model and tokenizer loading.

A string that looks like a path (see :func:`looks_like_path`) is never sent to the Hub.
:func:`fetch_snapshot` is the only place melp downloads anything, and only for a hub id the user
named; :func:`cached_snapshot` reads the cache folder without a request.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["looks_like_path", "cached_snapshot", "fetch_snapshot"]

_FILE_SUFFIXES = {".safetensors", ".json", ".pt", ".pth", ".bin", ".ckpt", ".npy", ".npz", ".h5", ".yaml"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def looks_like_path(text: str) -> bool:
    """True for a string that names (or tries to name) a local file or folder rather than a hub id."""
    if text.startswith((".", "/", "~")) or "\\" in text or (os.sep != "/" and os.sep in text):
        return True
    if text.count("/") != 1 or not _HUB_ID.match(text):
        return True
    if Path(text).suffix.lower() in _FILE_SUFFIXES:
        return True
    return Path(text.split("/", 1)[0]).is_dir()  # "runs/best" where ./runs exists


def cached_snapshot(
    repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """The local snapshot folder of hub repository ``repo_id`` if the Hugging Face cache holds it
    (its ``config.json``), else None. Reads the cache folder only: no network, no hub request."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision)
    except Exception:  # an invalid repo id
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def fetch_snapshot(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Path:
    """Local folder of hub repository ``repo_id``: the cached snapshot if there is one (no network),
    else, with ``download``, a download into the cache (the only place melp fetches models).

    Raises:
        FileNotFoundError: not cached and ``download`` is False, or the download failed.
    """
    local = cached_snapshot(repo_id, revision=revision, cache_dir=cache_dir)
    if local is not None:
        return local
    if not download:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder and not in the Hugging Face cache; fetch it once with "
            f"`melp download {repo_id}` (or create_model(..., download=True)), or pass a local folder"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir))
    except Exception as err:
        raise FileNotFoundError(
            f"could not download {repo_id!r} from the Hugging Face Hub ({type(err).__name__}: {err}); "
            "check the id and the network, or pass a local folder"
        ) from None
