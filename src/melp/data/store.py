"""The prepared store: every record read once, resampled, cropped and written to one float16 array.

Layout (see docs/architecture.md)::

    STORE/signals.npy        float16 (N_entries, 12, T), physical units, not normalised
    STORE/manifest.parquet   one row per kept record; ``row`` indexes signals.npy
    STORE/rejects.parquet    id, file, reason
    STORE/meta.json          source, rate, seconds, n_samples, leads, tasks, counts, settings,
                             fingerprint (shape, dtype, size, checksums)
    STORE/.chunks/           resumable progress (settings.json + one result file per chunk)

``signals.npy`` has one slot per *indexed* entry (so that workers can write without knowing
which earlier entries will be rejected); slots of rejected entries stay zero and no manifest row
points to them. Work is split into fixed chunks by index order. Each chunk is written into the
preallocated memory map, flushed, and only then its small result file is written atomically,
so a run killed at any point resumes by redoing the chunks without a result file (or with a
damaged one). The output does not depend on the number of workers or on interruptions.

Fingerprint: ``meta.json`` records the shape, dtype and byte size of ``signals.npy``, the SHA-256
of every chunk's block of signals (computed by the workers while writing), of the manifest and of
the rejects table, and the record count. :class:`ECGStore` checks shape, dtype, size, counts and
the manifest checksum when it opens a store (milliseconds); :func:`verify_store` (``melp verify``)
recomputes the signal checksums and names the records of any damaged chunk. Reading a record
whose samples are not finite raises :class:`StoreError` naming the record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zlib
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd

from melp.data import signal as sig
from melp.data.formats.tables import drop_duplicates
from melp.data.readers.base import BadRecord, Reader, get_reader

log = logging.getLogger(__name__)

STORE_VERSION = 3  # 2: unlabelled records are None (not []), fingerprint; 3: per-record CRC-32
CHUNK_SIZE = 256
MIN_SECONDS = 1.0  # records shorter than this (before resampling) are rejected as "too short"
PRECISION = 0.02  # largest float16 rounding error allowed, as a share of a lead's peak-to-peak
_MANIFEST_FIRST = [
    "row",
    "id",
    "path",
    "patient",
    "source",
    "split",
    "fold",
    "report",
    "report_original",
    "orig_rate",
    "orig_length",
    "length",
    "crc32",
]


class StoreError(ValueError):
    """A store that cannot be written or read as asked (message says what to do)."""


# ----------------------------------------------------------------------------- helpers


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def _atomic_write_parquet(path: Path, df: pd.DataFrame) -> str:
    """Write ``df`` to ``path`` atomically; returns the SHA-256 of the written file."""
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False)
    digest = file_sha256(tmp)
    os.replace(tmp, path)
    return digest


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path, what: str) -> dict:
    """Parse a store JSON file; StoreError naming it (and the way out) when it is damaged."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{path} is damaged ({type(err).__name__}: {err}); {what}") from None
    if not isinstance(value, dict):
        raise StoreError(f"{path} is damaged (not a JSON object); {what}")
    return value


def process_record(
    data: np.ndarray,
    leads: list[str],
    rate: float,
    target_rate: float,
    n_samples: int,
    *,
    allow_missing_leads: bool = False,
    allow_flat_leads: bool = False,
    min_seconds: float = 0.0,
) -> tuple[np.ndarray, int] | str:
    """Turn one raw signal ``(L, T_raw)`` into the stored form ``(12, n_samples)`` float16.

    Steps: finite/flat checks, reorder leads by name, length check (at least ``min_seconds`` of
    signal), resample ``rate -> target_rate``, crop/pad to ``n_samples``, float16 range and
    precision checks (no lead may lose more than ``PRECISION`` of its peak-to-peak to rounding).
    Returns ``(signal, valid_length)`` or a reason string ("category: details") when the record
    must be rejected.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        return f"bad shape: signal has shape {data.shape}, expected (leads, samples)"
    if isinstance(rate, bool) or not np.isfinite(rate) or rate <= 0:
        return f"bad rate: sampling rate {rate!r} must be a positive number of Hz"
    try:
        data, absent = sig.reorder_leads(data, leads, missing="zero" if allow_missing_leads else "error")
    except ValueError as err:
        return f"wrong leads: {err}"
    if 0 < data.shape[-1] < min_seconds * rate:  # (an empty record is reported as "empty" below)
        return (
            f"too short: {data.shape[-1]} samples at {rate:g} Hz ({data.shape[-1] / rate:.3g} s) is under the "
            f"minimum of {min_seconds:g} s (--min-seconds)"
        )
    reason = sig.check_signal(
        data,
        list(sig.CANONICAL_LEADS) if not absent else None,
        allow_flat_leads=allow_flat_leads or bool(absent),
    )
    if reason:
        return reason
    data = sig.resample(data, rate, target_rate)
    data, length = sig.crop_or_pad(data, n_samples)
    peak = float(np.abs(data).max())
    if peak > sig.FLOAT16_MAX:
        return f"float16 overflow: |x| reaches {peak:g} > {sig.FLOAT16_MAX:g} (check the units)"
    stored = data.astype(np.float16)
    # float16 keeps 11 significant bits: a lead riding on a large offset (e.g. 300 mV of electrode
    # DC under a 2 mV ECG) would be stored in steps of 0.25 mV, a silently ruined waveform
    valid = data[:, :length]
    span = valid.max(axis=1) - valid.min(axis=1)  # (12,) peak-to-peak per lead
    error = np.abs(stored[:, :length].astype(np.float64) - valid).max(axis=1)
    lossy = np.flatnonzero((span > 0) & (error > PRECISION * span))
    if lossy.size:
        k = int(lossy[0])
        return (
            f"float16 precision: lead {sig.CANONICAL_LEADS[k]} spans {span[k]:.3g} around {valid[k].mean():.4g}; "
            f"float16 steps there are {error[k] * 2:.3g} (over {PRECISION:.0%} of the span): remove the DC offset "
            "(high-pass filter) or check the units"
        )
    return stored, length


# ----------------------------------------------------------------------------- worker side

_WORKER: dict = {}


def _init_worker(source: str, root: str, options: dict, signals_path: str, rate: float) -> None:
    _WORKER["reader"] = get_reader(source)(root, **options)
    _WORKER["reader"].configure(target_rate=rate)
    # signals.npy is written with pwrite at computed offsets, not through a memory map: mapped
    # pages would count in the worker's resident memory (growing with the store) and flushing a
    # map syncs all of it, which costs O(store size) per chunk
    with open(signals_path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(fh)
        offset = fh.tell()
    if dtype != np.float16 or len(shape) != 3:
        raise StoreError(f"{signals_path} is not a (N, 12, T) float16 array; pass --overwrite")
    _WORKER["fd"] = os.open(signals_path, os.O_WRONLY)
    _WORKER["offset"] = offset
    _WORKER["row_bytes"] = int(np.prod(shape[1:])) * 2


def _close_worker() -> None:
    fd = _WORKER.pop("fd", None)
    if fd is not None:
        os.close(fd)
    _WORKER.clear()


def _run_chunk(
    chunk_id: int,
    start: int,
    entries: list[dict],
    target_rate: float,
    n_samples: int,
    chunk_dir: str,
    flags: dict,
) -> dict:
    """Process entries ``start .. start+len(entries)`` into signals.npy; write the result file.

    Each record is written at its slot as soon as it is processed (rejected records as zeros),
    so a chunk never holds more than one record in memory; the chunk's SHA-256 is computed over
    the same bytes in slot order, then the file is synced and only then the result is written."""
    reader: Reader = _WORKER["reader"]
    fd, offset, row_bytes = _WORKER["fd"], _WORKER["offset"], _WORKER["row_bytes"]
    zeros = bytes(row_bytes)
    digest = hashlib.sha256()
    kept, rejects = [], []
    for k, entry in enumerate(entries):
        try:
            raw = reader.load(entry)
            out = process_record(raw.data, raw.leads, raw.rate, target_rate, n_samples, **flags)
        except BadRecord as err:
            out = str(err) or "bad record"
        except Exception as err:  # a broken file must not stop a 800k-record run; it is reported
            out = f"read error: {type(err).__name__}: {err}"
        if isinstance(out, str):
            rejects.append({"id": str(entry["id"]), "file": str(entry["path"]), "reason": out})
            data = zeros
        else:
            x, length = out
            data = np.ascontiguousarray(x, dtype="<f2").tobytes()  # (12, T) slot of signals.npy
            kept.append(
                {
                    "row": start + k,
                    "id": str(entry["id"]),
                    "orig_rate": float(raw.rate),
                    "orig_length": int(np.shape(raw.data)[-1]),
                    "length": int(length),
                    "crc32": zlib.crc32(data),  # checked at every read (ECGStore.signal)
                }
            )
        digest.update(data)
        os.pwrite(fd, data, offset + (start + k) * row_bytes)
    os.fdatasync(fd)  # the slots are on disk before the result file says the chunk is done
    result = {
        "chunk": chunk_id,
        "start": start,
        "n": len(entries),
        "kept": kept,
        "rejects": rejects,
        "sha256": digest.hexdigest(),
    }
    _atomic_write_json(Path(chunk_dir) / f"chunk_{chunk_id:07d}.json", result)
    return result


# ----------------------------------------------------------------------------- prepare


def check_settings(
    rate: float,
    seconds: float,
    workers: int = 0,
    chunk_size: int = CHUNK_SIZE,
    min_seconds: float = MIN_SECONDS,
) -> None:
    """ValueError naming the first out-of-range store setting (checked before any work)."""
    if (
        isinstance(min_seconds, bool)
        or not isinstance(min_seconds, int | float)
        or not 0 <= min_seconds < 1e9
    ):
        raise ValueError(f"min_seconds must be a number of seconds >= 0, got {min_seconds!r}")
    for name, value in (("rate", rate), ("seconds", seconds)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not np.isfinite(value)
            or value <= 0
        ):
            raise ValueError(
                f"{name} must be a positive number of {'Hz' if name == 'rate' else 'seconds'}, got {value!r}"
            )
    if round(rate * seconds) < 1:
        raise ValueError(f"rate {rate:g} Hz x {seconds:g} s gives no sample; choose a longer window")
    for name, value, low in (("workers", workers, 0), ("chunk_size", chunk_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _settings(source, root, rate, seconds, options, entries: pd.DataFrame, chunk_size, min_seconds) -> dict:
    ids = entries["id"].astype(str)
    digest = pd.util.hash_pandas_object(ids, index=False).sum()  # order-insensitive, cheap
    return {
        "version": STORE_VERSION,
        "source": source,
        "root": str(Path(root).resolve()),
        "rate": float(rate),
        "seconds": float(seconds),
        "min_seconds": float(min_seconds),
        "options": {k: options[k] for k in sorted(options)},
        "n_entries": len(entries),
        "ids_digest": int(digest) % (1 << 62),
        "chunk_size": chunk_size,
    }


_STORE_FILES = ("signals.npy", "manifest.parquet", "rejects.parquet", "meta.json")


def _clear_store(out: Path) -> None:
    """Remove the files a store consists of (never anything else in ``out``)."""
    for name in _STORE_FILES:
        (out / name).unlink(missing_ok=True)
    chunks = out / ".chunks"
    if chunks.is_dir() and not chunks.is_symlink():
        shutil.rmtree(chunks)
    else:
        chunks.unlink(missing_ok=True)


def _check_out(out: Path) -> None:
    """StoreError when ``out`` cannot hold a store (a file, or a folder below a file)."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise StoreError(f"--out {out}: {p} is a file, not a folder; choose another --out")
            break
    for name in (*_STORE_FILES, ".chunks"):
        p = out / name
        if p.exists() and p.is_dir() != (name == ".chunks"):
            kind = "a folder" if p.is_dir() else "a file"
            raise StoreError(f"{p} is {kind}, not part of a melp store; move it away or choose another --out")


def _prepare_output(out: Path, settings: dict, overwrite: bool) -> str:
    """Return "done" (complete store, same settings), "resume" or "fresh"; clear if asked."""
    if overwrite:
        _clear_store(out)
        return "fresh"
    settings_file = out / ".chunks" / "settings.json"
    meta_file = out / "meta.json"
    hint = "pass --overwrite to rebuild the store"
    old = None
    if meta_file.exists():
        old = _read_json(meta_file, hint).get("settings")
        if old is None:
            raise StoreError(f"{meta_file} has no settings (not written by melp prepare); {hint}")
    elif settings_file.exists():
        old = _read_json(settings_file, hint)
    if old is None:
        if any((out / name).exists() for name in _STORE_FILES):
            raise StoreError(
                f"{out} holds store files of an unknown version; pass --overwrite to replace them"
            )
        return "fresh"
    if old != settings:
        if not isinstance(old, dict):
            raise StoreError(f"{settings_file} or {meta_file} is damaged (no settings object); {hint}")
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in diff if k != "ids_digest")
        if "ids_digest" in diff:
            detail += "; the set of indexed records differs"
        raise StoreError(
            f"{out} holds a store prepared with different settings ({detail.strip('; ')}); "
            "pass --overwrite to replace it or choose another --out"
        )
    return "done" if meta_file.exists() else "resume"


def prepare(
    source: str,
    root: str | Path,
    out: str | Path,
    rate: float = 100,
    seconds: float = 10,
    workers: int = 0,
    *,
    chunk_size: int = CHUNK_SIZE,
    overwrite: bool = False,
    allow_missing_leads: bool = False,
    allow_flat_leads: bool = False,
    min_seconds: float = MIN_SECONDS,
    progress: bool = True,
    **reader_options,
) -> dict:
    """Prepare a store from raw data of ``source`` under ``root`` into folder ``out``.

    rate/seconds: target sampling rate (Hz) and length (s); ``n_samples = round(rate*seconds)``.
    workers: processes (0 or 1 = in this process). Resumable and idempotent (see module doc).
    allow_missing_leads: zero-fill absent leads instead of rejecting the record.
    min_seconds: records with less signal than this (in their own rate) are rejected (``too short``).
    Returns the ``counts`` dict written to meta.json (kept, rejected, missing, by reason).
    Raises ValueError for an out-of-range setting or reader option before any work is done, and
    StoreError when ``out`` holds something that is not this store (never overwritten without
    ``overwrite``: another store, a damaged store, files in the way).
    """
    check_settings(rate, seconds, workers, chunk_size, min_seconds)
    out = Path(out)
    _check_out(out)
    reader = get_reader(source)(root, **reader_options)
    reader.configure(target_rate=float(rate))
    index = reader.index()
    # one file under two ids (any source): one record; its later listings are rejects
    entries = drop_duplicates(index.entries.reset_index(drop=True), "path", index.rejects, "file")
    if entries["id"].astype(str).duplicated().any():
        dup = entries["id"][entries["id"].astype(str).duplicated()].iloc[0]
        raise StoreError(f"{source}: reader returned duplicate id {dup!r}; ids must be unique")
    n_samples = int(round(rate * seconds))
    given = {k: reader.options[k] for k in reader_options}  # as the reader understood them (typed)
    options = dict(
        given, allow_missing_leads=bool(allow_missing_leads), allow_flat_leads=bool(allow_flat_leads)
    )
    settings = _settings(source, root, rate, seconds, options, entries, chunk_size, min_seconds)
    state = _prepare_output(out, settings, overwrite)
    if state == "done":
        try:  # a complete store with these settings: check it is intact (O(1)) before saying so
            meta = ECGStore(out).meta
        except StoreError as err:
            raise StoreError(
                f"{out} holds a complete store with these settings, but it is damaged: {err}. "
                "It was left as it is; pass --overwrite to rebuild it"
            ) from None
        log.info("%s is already complete with these settings; nothing to do", out)
        return meta["counts"]

    chunk_dir = out / ".chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    signals_path = out / "signals.npy"
    shape = (max(len(entries), 1), len(sig.CANONICAL_LEADS), n_samples)
    if state == "resume" and signals_path.exists():
        try:
            old = np.load(signals_path, mmap_mode="r", allow_pickle=False)
            ok = old.shape == shape and old.dtype == np.float16
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise StoreError(
                f"{signals_path} of the interrupted run is damaged; pass --overwrite to start again"
            )
    if state == "fresh" or not signals_path.exists():
        np.lib.format.open_memmap(signals_path, mode="w+", dtype=np.float16, shape=shape).flush()
        for stale in chunk_dir.glob("chunk_*.json"):
            stale.unlink()
        _atomic_write_json(chunk_dir / "settings.json", settings)

    results = _run_all(
        source,
        root,
        given,
        entries,
        rate,
        n_samples,
        chunk_size,
        chunk_dir,
        signals_path,
        workers,
        progress,
        {
            "allow_missing_leads": allow_missing_leads,
            "allow_flat_leads": allow_flat_leads,
            "min_seconds": float(min_seconds),
        },
    )
    counts = _finish(out, reader, source, entries, index, results, settings, n_samples)
    return counts


def _run_all(
    source,
    root,
    reader_options,
    entries,
    rate,
    n_samples,
    chunk_size,
    chunk_dir,
    signals_path,
    workers,
    progress,
    flags,
) -> list[dict]:
    starts = list(range(0, len(entries), chunk_size))
    sizes = [min(chunk_size, len(entries) - s) for s in starts]
    results: dict[int, dict] = {}
    for c, (s, n) in enumerate(zip(starts, sizes)):
        f = chunk_dir / f"chunk_{c:07d}.json"
        if f.exists():
            try:
                res = json.loads(f.read_text())
                if res.get("start") != s or res.get("n") != n or "sha256" not in res:
                    raise ValueError("does not describe this chunk")
                results[c] = res
            except (OSError, UnicodeDecodeError, ValueError) as err:
                log.warning("%s is damaged (%s); its chunk is prepared again", f, err)
                f.unlink()
    todo = [c for c in range(len(starts)) if c not in results]
    if results:
        log.info("resuming: %d of %d chunks already done", len(results), len(starts))
    bar = _progress(len(entries), progress, initial=sum(r["n"] for r in results.values()))
    init = (source, str(root), dict(reader_options), str(signals_path), float(rate))

    def job(c: int) -> tuple:  # the records of one chunk, built only when it is submitted
        records = entries.iloc[starts[c] : starts[c] + sizes[c]].to_dict("records")
        return (c, starts[c], records, rate, n_samples, str(chunk_dir), flags)

    if workers <= 1:
        _init_worker(*init)
        try:
            for c in todo:
                results[c] = _run_chunk(*job(c))
                bar.update(sizes[c])
        finally:
            _close_worker()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=init) as pool:
            pending: dict = {}
            queue = iter(todo)
            while True:  # at most 2 chunks per worker in flight: memory does not grow with the corpus
                while len(pending) < 2 * workers and (c := next(queue, None)) is not None:
                    pending[pool.submit(_run_chunk, *job(c))] = c
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    res = fut.result()
                    del pending[fut]
                    results[res["chunk"]] = res
                    bar.update(res["n"])
    bar.close()
    return [results[c] for c in range(len(starts))]


def _progress(total: int, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="rec", desc="prepare", leave=False)


def _finish(out: Path, reader: Reader, source, entries, index, results, settings, n_samples) -> dict:
    kept = pd.DataFrame(
        [k for r in results for k in r["kept"]],
        columns=["row", "id", "orig_rate", "orig_length", "length", "crc32"],
    )
    kept["crc32"] = kept["crc32"].astype(np.int64)
    rejects = [*index.rejects, *(x for r in results for x in r["rejects"])]
    ent = entries.copy()
    ent["id"] = ent["id"].astype(str)
    clash = [c for c in ent.columns if c in kept.columns and c != "id"]
    if clash:  # a reader's metadata column named like a store column: the store's own value wins
        log.info("%s: index columns %s are store columns; the reader's values are not kept", source, clash)
        ent = ent.drop(columns=clash)
    manifest = kept.merge(ent, on="id", how="left", validate="one_to_one")
    manifest["source"] = source
    manifest["report_original"] = manifest["report"].fillna("").astype(str)
    manifest["report"] = [reader.normalize_report(t) for t in manifest["report_original"]]
    manifest["fold"] = manifest["fold"].astype("Int64")
    for task in reader.tasks:
        col = f"labels_{task}"
        if col not in manifest:
            raise StoreError(f"{source}: reader declares task {task!r} but its index has no column {col}")
        unknown = {n for v in manifest[col] if isinstance(v, list | tuple | np.ndarray) for n in v} - set(
            reader.tasks[task]
        )
        if unknown:
            raise StoreError(f"{source}: labels {sorted(unknown)} are not classes of task {task!r}")
        # None = not labelled for this task (left out of its evaluation); [] = negative for every class
        manifest[col] = [list(v) if isinstance(v, list | tuple | np.ndarray) else None for v in manifest[col]]
    rest = [c for c in manifest.columns if c not in _MANIFEST_FIRST]
    manifest = manifest[_MANIFEST_FIRST + rest].sort_values("row", kind="stable").reset_index(drop=True)
    rej = pd.DataFrame(rejects, columns=["id", "file", "reason"]).astype(str)

    by_reason = Counter(r.split(":", 1)[0] for r in rej["reason"])
    counts = {
        "kept": len(manifest),
        "rejected": len(rej),
        "missing": len(index.missing),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "missing_examples": list(index.missing[:5]),
        "splits": {
            str(k): int(v) for k, v in manifest["split"].fillna("none").value_counts().sort_index().items()
        },
        "unlabelled": {t: int(manifest[f"labels_{t}"].isna().sum()) for t in reader.tasks},
    }
    meta = {
        "source": source,
        "rate": settings["rate"],
        "seconds": settings["seconds"],
        "n_samples": n_samples,
        "leads": list(sig.CANONICAL_LEADS),
        "tasks": reader.tasks,
        "counts": counts,
        "settings": settings,
        "n_slots": int(np.load(out / "signals.npy", mmap_mode="r").shape[0]),
        "version": STORE_VERSION,
    }
    chunk_digests = [r["sha256"] for r in results]
    signals_file = out / "signals.npy"
    meta["fingerprint"] = {
        "signals_shape": [meta["n_slots"], len(sig.CANONICAL_LEADS), n_samples],
        "signals_dtype": "float16",
        "signals_bytes": signals_file.stat().st_size,
        "chunk_size": settings["chunk_size"],
        "chunk_sha256": chunk_digests,
        "signals_sha256": hashlib.sha256("".join(chunk_digests).encode()).hexdigest(),
        "n_records": len(manifest),
        "manifest_sha256": _atomic_write_parquet(out / "manifest.parquet", manifest),
        "rejects_sha256": _atomic_write_parquet(out / "rejects.parquet", rej),
    }
    _atomic_write_json(out / "meta.json", meta)  # written last: its presence marks completion
    _summarise(source, counts, index.missing)
    return counts


def _summarise(source: str, counts: dict, missing: list[str]) -> None:
    log.info("%s: kept %d records, rejected %d", source, counts["kept"], counts["rejected"])
    for reason, n in counts["rejected_by_reason"].items():
        log.info("  rejected (%s): %d", reason, n)
    for task, n in counts.get("unlabelled", {}).items():
        if n:
            log.info("  not labelled for task %s: %d (left out of its evaluation)", task, n)
    if missing:
        more = f", ... ({len(missing) - 3} more)" if len(missing) > 3 else ""
        log.info(
            "  %d listed records have no file on disk (e.g. %s%s)", len(missing), ", ".join(missing[:3]), more
        )


# ----------------------------------------------------------------------------- reading


class ECGStore:
    """Read-only access to a prepared store. ``i`` everywhere is a manifest position (0..len-1).

    Attributes: ``manifest`` (DataFrame), ``meta`` (dict), ``signals`` (float16 memmap
    ``(N_slots, 12, T)``), ``rate`` (Hz), ``n_samples`` (T).

    Opening checks the fingerprint in ``meta.json`` against the files (shape, dtype and size of
    ``signals.npy``, the manifest's checksum and record count, its row and length columns) and
    raises :class:`StoreError` naming the file at fault; ``melp verify STORE`` also checks every
    signal byte (:func:`verify_store`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.exists():
            hint = (
                " (an interrupted `melp prepare`? rerun it to finish)"
                if (self.path / ".chunks").exists()
                else ""
            )
            raise StoreError(f"{self.path} is not a complete melp store: no meta.json{hint}")
        self.meta = _read_json(meta_file, "rerun `melp prepare ... --overwrite` to rebuild the store")
        version = self.meta.get("version")
        if version != STORE_VERSION:
            raise StoreError(
                f"{self.path} was prepared by another melp version (store version {version}, this melp reads "
                f"{STORE_VERSION}); rerun `melp prepare ... --overwrite` to rebuild it"
            )
        fp = self.meta.get("fingerprint") or {}
        try:
            self.rate = float(self.meta["rate"])
            self.n_samples = int(self.meta["n_samples"])
            shape, n_records, manifest_sha = (
                tuple(fp["signals_shape"]),
                int(fp["n_records"]),
                fp["manifest_sha256"],
            )
            settings = self.meta["settings"]
            consistent = (
                self.rate == float(settings["rate"])
                and self.n_samples == int(round(settings["rate"] * settings["seconds"]))
                and self.meta.get("leads") == list(sig.CANONICAL_LEADS)
            )
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(
                f"{meta_file} is damaged (missing or bad field {err}); rebuild the store"
            ) from None
        if not consistent:
            raise StoreError(
                f"{meta_file} is inconsistent (rate, n_samples, leads and the settings it was prepared with "
                "disagree: edited by hand?); rebuild the store with `melp prepare ... --overwrite`"
            )
        self.signals = self._open_signals(shape, fp)
        manifest_file = self.path / "manifest.parquet"
        if not manifest_file.is_file() or file_sha256(manifest_file) != manifest_sha:
            raise StoreError(
                f"{manifest_file} does not match its checksum in meta.json (missing, damaged or from another "
                "store); rebuild the store with `melp prepare ... --overwrite`"
            )
        rejects_file = self.path / "rejects.parquet"
        if not rejects_file.is_file() or file_sha256(rejects_file) != fp.get("rejects_sha256"):
            raise StoreError(
                f"{rejects_file} does not match its checksum in meta.json (missing, damaged or from another "
                "store); rebuild the store with `melp prepare ... --overwrite`"
            )
        self.manifest = pd.read_parquet(manifest_file)
        if "crc32" not in self.manifest or "row" not in self.manifest or "length" not in self.manifest:
            raise StoreError(f"{manifest_file} lacks the row/length/crc32 columns; rebuild the store")
        self._rows = self.manifest["row"].to_numpy(np.int64)
        self._lengths = self.manifest["length"].to_numpy(np.int64)
        self._crc = self.manifest["crc32"].to_numpy(np.int64)
        if (
            len(self.manifest) != n_records
            or (len(self._rows) and (self._rows.min() < 0 or self._rows.max() >= shape[0]))
            or len(np.unique(self._rows)) != len(self._rows)
            or (len(self._lengths) and (self._lengths.min() < 1 or self._lengths.max() > self.n_samples))
        ):
            raise StoreError(
                f"{manifest_file}: rows or lengths are inconsistent with meta.json; rebuild the store"
            )
        self._ids = self.manifest["id"].astype(str).to_numpy()

    def _open_signals(self, shape: tuple, fp: dict) -> np.ndarray:
        file = self.path / "signals.npy"
        want = (shape[0], len(sig.CANONICAL_LEADS), self.n_samples)
        try:
            signals = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise StoreError(f"{file} cannot be opened ({err}); rebuild the store") from None
        problem = None
        if tuple(shape) != want:
            problem = f"meta.json announces shape {tuple(shape)} for {want}"
        elif signals.shape != want or signals.dtype != np.float16:
            problem = f"it holds {signals.dtype} {signals.shape}, meta.json announces float16 {want}"
        elif file.stat().st_size != fp.get("signals_bytes"):
            problem = f"it has {file.stat().st_size} bytes, meta.json announces {fp.get('signals_bytes')}"
        if problem:
            raise StoreError(
                f"{file} does not belong to this store ({problem}); it was replaced or damaged: "
                "rebuild the store with `melp prepare ... --overwrite`"
            )
        return signals

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def tasks(self) -> dict[str, list[str]]:
        """Task name -> ordered class names."""
        return {k: list(v) for k, v in self.meta.get("tasks", {}).items()}

    @property
    def rejects(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "rejects.parquet")

    def signal(self, i: int) -> tuple[np.ndarray, int]:
        """Record ``i``: ``(float32 (12, T) raw units, valid length)``; samples >= length are 0.

        Every read is checked against the record's CRC-32 written by ``prepare`` (about 60 us for a
        12 x 5000 record, ``benchmarks/bench_store_read.py``), so a ``signals.npy`` edited, damaged or swapped for another store's file of
        the same shape is never read silently. Raises StoreError naming the record when the bytes
        differ or a sample is not finite."""
        raw = self.signals[self._rows[i]]  # (12, T) float16, a contiguous view of the memory map
        if zlib.crc32(raw) != self._crc[i]:
            raise StoreError(
                f"{self.path}: record {self._ids[i]} (manifest position {i}) does not match its checksum: "
                "signals.npy was modified, damaged or replaced since `melp prepare` wrote it (run `melp verify` "
                "on the store, rebuild it with `melp prepare ... --overwrite`)"
            )
        import torch  # its float16 -> float32 conversion is vectorised: ~9x numpy's (35 vs 320 us at 12 x 5000)

        x = torch.from_numpy(np.array(raw)).float().numpy()  # (12, T) float32
        if not np.isfinite(x).all():
            raise StoreError(
                f"{self.path}: record {self._ids[i]} (manifest position {i}) holds non-finite samples; the "
                "store is damaged (run `melp verify` on it) or was edited by hand"
            )
        return x, int(self._lengths[i])

    def length(self, i: int) -> int:
        return int(self._lengths[i])

    def select(self, split: str | None = None, folds: list[int] | None = None) -> np.ndarray:
        """Manifest positions with the given split and/or folds (both None = all), ascending."""
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            keep &= (self.manifest["split"] == split).fillna(False).to_numpy(bool)
        if folds is not None:
            keep &= self.manifest["fold"].isin(list(folds)).fillna(False).to_numpy(bool)
        return np.flatnonzero(keep)

    def __repr__(self) -> str:
        return f"ECGStore({str(self.path)!r}, n={len(self)}, rate={self.rate:g}, n_samples={self.n_samples})"


def verify_store(path: str | Path, progress: bool = False) -> dict:
    """Recompute every checksum of the store at ``path`` (signals chunk by chunk and record by
    record, manifest, rejects).

    Returns ``{"ok": bool, "bad_chunks": [...], "bad_records": [ids], "files": {name: ok}}``;
    raises StoreError when the store cannot be opened at all (see :class:`ECGStore`: a missing or
    damaged manifest, rejects table or meta.json, a ``signals.npy`` of the wrong shape)."""
    from tqdm.auto import tqdm

    store = ECGStore(path)
    fp = store.meta["fingerprint"]
    size, digests = int(fp["chunk_size"]), list(fp["chunk_sha256"])
    bad_chunks = []
    for c in tqdm(range(len(digests)), desc="verify", unit="chunk", disable=not progress, leave=False):
        block = np.ascontiguousarray(store.signals[c * size : (c + 1) * size])
        if hashlib.sha256(block.tobytes()).hexdigest() != digests[c]:
            bad_chunks.append(c)
    rows = store.manifest["row"].to_numpy(np.int64)
    in_bad = np.isin(rows // size, bad_chunks)
    bad_records = [
        str(store.manifest["id"].iat[i])
        for i in np.flatnonzero(in_bad)
        if zlib.crc32(store.signals[rows[i]]) != int(store.manifest["crc32"].iat[i])
    ]
    files = {"signals.npy": not bad_chunks, "manifest.parquet": True, "rejects.parquet": True}
    return {"ok": all(files.values()), "bad_chunks": bad_chunks, "bad_records": bad_records, "files": files}
