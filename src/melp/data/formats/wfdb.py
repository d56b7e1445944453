"""WFDB records: one reader for every WFDB-based source (PTB-XL, MIMIC-IV-ECG, CinC, Chapman, generic).

The header is parsed here (not by ``wfdb``), so that every source gets the same, checked reading:

* **Header**: UTF-8 (a byte-order mark is dropped; latin-1 fallback, so ``µV`` is never misread
  as ``V``), any line ends, tabs or spaces. The record line must state the sampling frequency
  (WFDB's default of 250 Hz is not assumed; ``500/1000(0)`` counter frequencies are fine) and be
  followed by exactly as many signal lines as it announces (an extra line would shift the
  interleaving of every signal). Signal files must sit in (or below) the header's folder (no
  ``..``, no absolute path). An unknown storage format is a ``bad header``.
* **Units** are honoured per signal: ``mV`` as stored, ``uV``/``µV``/``μV`` x 1e-3, ``V`` x 1e3,
  ``nV`` x 1e-6 (case-insensitive; an empty unit is WFDB's default, mV). ``NU`` (normalised
  units, e.g. PTB-XL mini) is kept as stored, but not mixed with voltages in one record. Any other
  unit is rejected: it is not a voltage and a silent rescaling would be a wrong result.
* **Formats** 16, 61, 80, 160, 212, 24 and 32 (one sample per frame, no skew) are decoded with
  NumPy in one read per signal file; other formats (8, 310, 311, FLAC 5xx, several samples per
  frame, skew, multi-segment records) go through ``wfdb.rdrecord`` for the digital values and then
  through the same gain/baseline/unit conversion (several samples per frame: verified on every
  sample, then the exact mean per frame). WFDB's invalid-sample value of each format (e.g. -32768
  for format 16; format 8, which stores differences, has none) becomes NaN (the store rejects the
  record as non-finite).
* **Signal files ending in ``.mat``** (the PhysioNet/CinC Challenge layout) are read as MATLAB
  containers (:mod:`melp.data.formats.matlab`: v4, v5 incl. compressed, v7.3/HDF5), never at a raw
  byte offset; the matrix orientation is checked against the header (leads x samples; a
  samples x leads matrix is transposed, anything else is rejected), and its values must be
  integers (digital samples: fractions mean physical values that the header's gain does not
  describe).
* **Integrity**: the file must hold exactly the samples the header announces (a truncated or
  over-long file is rejected), and when the header carries them, each signal's checksum (sum of
  its samples mod 2^16) and initial value are verified (``verify_checksums=False`` skips that). A
  header whose initial values and checksums are all 0 (placeholders some writers use) is not
  verified.

Physical value = (digital - baseline) / gain x unit factor; ``baseline`` defaults to ADC zero,
a gain of 0 (or none) means WFDB's default 200 per mV.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import numpy as np

from melp.data.readers.base import BadRecord, Signal

__all__ = ["SignalSpec", "Header", "parse_header", "read_record", "unit_factor", "UNIT_FACTORS"]

# unit (lower case, after mapping micro signs to "u") -> factor to millivolts; None = keep as stored
UNIT_FACTORS: dict[str, float | None] = {
    "mv": 1.0,
    "millivolt": 1.0,
    "millivolts": 1.0,
    "uv": 1e-3,
    "microvolt": 1e-3,
    "microvolts": 1e-3,
    "v": 1e3,
    "volt": 1e3,
    "volts": 1e3,
    "nv": 1e-6,
    "nanovolt": 1e-6,
    "nanovolts": 1e-6,
    "nu": None,
}

# format -> (bytes per sample, invalid sample value); 212 packs two samples in three bytes
_FAST_FORMATS: dict[int, tuple[float, int]] = {
    16: (2, -32768),
    61: (2, -32768),
    80: (1, -128),
    160: (2, -32768),
    212: (1.5, -2048),
    24: (3, -(2**23)),
    32: (4, -(2**31)),
}
# WFDB's invalid-sample value per format (format 8 stores first differences and has none)
_INVALID = {
    **{f: v for f, (_, v) in _FAST_FORMATS.items()},
    310: -512,
    311: -512,
    508: -128,
    516: -32768,
    524: -(2**23),
}
_KNOWN_FORMATS = frozenset({0, 8, 16, 24, 32, 61, 80, 160, 212, 310, 311, 508, 516, 524})

_SIG_FORMAT = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN = re.compile(r"^([-+0-9.eE]+)(?:\((-?\d+)\))?(?:/(.*))?$")


@dataclasses.dataclass
class SignalSpec:
    """One signal line of a WFDB header."""

    file: str
    fmt: int
    samples_per_frame: int
    skew: int
    offset: int
    gain: float
    baseline: int
    units: str
    adc_zero: int
    init_value: int | None
    checksum: int | None
    name: str


@dataclasses.dataclass
class Header:
    """A parsed WFDB header: record line, signal lines and ``#`` comment lines."""

    record: str
    n_sig: int
    fs: float
    n_samples: int | None
    signals: list[SignalSpec]
    comments: list[str]
    multi_segment: bool = False


def unit_factor(units: str, lead: str) -> float | None:
    """Factor converting ``units`` to mV (None = keep as stored, for NU); BadRecord otherwise."""
    key = units.strip().replace("µ", "u").replace("μ", "u").lower()
    if key == "":
        return 1.0  # WFDB default unit
    if key not in UNIT_FACTORS:
        raise BadRecord(
            f"bad units: signal {lead} is in {units!r}, not a voltage (mV, uV, V) or NU; "
            "convert the file or fix its header"
        )
    return UNIT_FACTORS[key]


def _decode(raw: bytes) -> str:
    """Header text: UTF-8 (a byte-order mark is dropped), else latin-1 (every byte is a character)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _check_file_name(name: str, lineno: int) -> None:
    """A signal file named in a header must lie in (or below) the header's folder."""
    if name == "~":
        return
    norm = name.replace("\\", "/")
    if norm.startswith("/") or ":" in norm.split("/")[0] or ".." in norm.split("/"):
        raise BadRecord(
            f"bad header: line {lineno} names the signal file {name!r}, outside the record's folder; "
            "signal files must sit next to their header"
        )


def parse_header(hea: str | Path) -> Header:
    """Parse ``hea`` (a ``.hea`` path). Raises BadRecord ``bad header: ...`` naming the line."""
    hea = Path(hea)
    try:
        text = _decode(hea.read_bytes())
    except FileNotFoundError:
        raise BadRecord(f"missing file: header {hea.name} not found") from None
    except OSError as err:
        raise BadRecord(f"unreadable header: {err}") from None
    comments, lines = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comments.append(line[1:].strip())
        else:
            lines.append(line)
    if not lines:
        raise BadRecord("bad header: no record line")
    head = lines[0].split()
    try:
        if len(head) < 2:
            raise ValueError("needs at least a record name and a signal count")
        multi = "/" in head[0]
        n_sig = int(head[1])
        if len(head) < 3:
            # WFDB would assume 250 Hz; a rate that is not written is too likely a mistake to guess
            raise ValueError("no sampling frequency (WFDB's default of 250 Hz is not assumed); add it")
        fs = float(head[2].split("/")[0].split("(")[0])
        n_samples = int(head[3]) if len(head) > 3 else None
    except ValueError as err:
        raise BadRecord(f"bad header: record line {lines[0]!r}: {err}") from None
    if n_sig < 0 or fs <= 0 or not math.isfinite(fs) or (n_samples is not None and n_samples < 0):
        raise BadRecord(f"bad header: record line {lines[0]!r} has a negative count or a non-positive rate")
    if multi:
        return Header(head[0], n_sig, fs, n_samples, [], comments, multi_segment=True)
    if len(lines) != 1 + n_sig:
        raise BadRecord(
            f"bad header: the record line announces {n_sig} signals but {len(lines) - 1} signal lines follow"
        )
    signals = [_parse_signal(line, k) for k, line in enumerate(lines[1 : 1 + n_sig], start=2)]
    return Header(head[0], n_sig, fs, n_samples, signals, comments)


def _parse_signal(line: str, lineno: int) -> SignalSpec:
    parts = line.split(maxsplit=8)
    try:
        if len(parts) < 2:
            raise ValueError("needs a file name and a format")
        m = _SIG_FORMAT.match(parts[1])
        if not m:
            raise ValueError(f"format field {parts[1]!r}")
        fmt, spf, skew, offset = (int(g) if g else d for g, d in zip(m.groups(), (0, 1, 0, 0)))
        if fmt not in _KNOWN_FORMATS:
            raise ValueError(f"format field {parts[1]!r}: {fmt} is not a WFDB storage format")
        gain, baseline, units = 200.0, None, "mV"
        if len(parts) > 2:
            g = _GAIN.match(parts[2])
            if not g:
                raise ValueError(f"gain field {parts[2]!r}")
            gain = float(g.group(1))
            baseline = int(g.group(2)) if g.group(2) is not None else None
            units = g.group(3) if g.group(3) is not None else "mV"
        adc_zero = int(parts[4]) if len(parts) > 4 else 0
        init = int(parts[5]) if len(parts) > 5 else None
        checksum = int(parts[6]) if len(parts) > 6 else None
        name = parts[8].strip() if len(parts) > 8 else f"signal{lineno - 1}"
    except ValueError as err:
        raise BadRecord(f"bad header: line {lineno} ({line!r}): bad {err}") from None
    _check_file_name(parts[0], lineno)
    if gain == 0:
        gain = 200.0  # WFDB: an unspecified (0) gain means the default
    if not math.isfinite(gain) or gain < 0:
        raise BadRecord(f"bad header: line {lineno}: gain {gain} must be positive")
    return SignalSpec(
        file=parts[0],
        fmt=fmt,
        samples_per_frame=spf,
        skew=skew,
        offset=offset,
        gain=gain,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        adc_zero=adc_zero,
        init_value=init,
        checksum=checksum,
        name=name,
    )


# ----------------------------------------------------------------------------- decoding


def _decode_samples(buf: np.ndarray, fmt: int) -> np.ndarray:
    """Raw bytes (uint8) -> int64 samples of a fast format."""
    if fmt == 16:
        return buf.view("<i2").astype(np.int64)
    if fmt == 61:
        return buf.view(">i2").astype(np.int64)
    if fmt == 80:
        return buf.astype(np.int64) - 128
    if fmt == 160:
        return buf.view("<u2").astype(np.int64) - 32768
    if fmt == 32:
        return buf.view("<i4").astype(np.int64)
    if fmt == 24:
        b = buf.reshape(-1, 3).astype(np.int64)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return np.where(v >= 2**23, v - 2**24, v)
    if (
        fmt == 212
    ):  # two 12-bit samples in three bytes: s0 = b0 | (b1 & 0x0F) << 8, s1 = b2 | (b1 & 0xF0) << 4
        pad = (-len(buf)) % 3
        b = np.concatenate([buf, np.zeros(pad, np.uint8)]).reshape(-1, 3).astype(np.int64)
        s = np.empty(2 * len(b), dtype=np.int64)
        s[0::2] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
        s[1::2] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
        return np.where(s >= 2048, s - 4096, s)
    raise AssertionError(fmt)


def _read_dat(path: Path, specs: list[SignalSpec], n_samples: int | None) -> np.ndarray:
    """Digital samples (L_file, T) int64 of one binary signal file holding ``specs`` interleaved."""
    fmt, offset, n = specs[0].fmt, specs[0].offset, len(specs)
    per_sample = _FAST_FORMATS[fmt][0]
    try:
        size = path.stat().st_size - offset
    except OSError as err:
        raise BadRecord(f"unreadable signal file {path.name}: {err}") from None
    if n_samples is None:  # header without a length: as many whole frames as the file holds
        n_samples = int(size // (per_sample * n))
    need = math.ceil(n_samples * n * per_sample)
    if size < need:
        raise BadRecord(
            f"truncated signal: {path.name} holds {max(size, 0)} bytes of samples, the header announces "
            f"{n_samples} samples x {n} signals in format {fmt} ({need} bytes)"
        )
    if size > need + (1 if fmt == 212 else 0):
        raise BadRecord(
            f"size mismatch: {path.name} holds {size} bytes of samples, the header announces {need} "
            f"({n_samples} samples x {n} signals in format {fmt}); header and file disagree"
        )
    buf = np.fromfile(path, dtype=np.uint8, count=need, offset=offset)
    samples = _decode_samples(buf, fmt)[: n_samples * n]
    return samples.reshape(n_samples, n).T  # (T, L) interleaved -> (L, T)


def _read_mat(path: Path, specs: list[SignalSpec], n_samples: int | None) -> np.ndarray:
    """Digital samples (L_file, T) of a CinC-style ``.mat`` signal file, orientation checked."""
    from melp.data.formats.matlab import read_matrix

    arr, version = read_matrix(path, prefer="val")
    n = len(specs)
    if arr.ndim != 2:
        raise BadRecord(f"bad MATLAB file: {path.name} ({version}) holds a {arr.ndim}-D array, expected 2-D")
    rows, cols = arr.shape
    want_t = n_samples if n_samples is not None else (cols if rows == n else rows)
    if (rows, cols) == (n, want_t):
        pass
    elif (rows, cols) == (want_t, n) and n != want_t:
        arr = arr.T  # stored samples x leads: transposed back (repair)
    else:
        raise BadRecord(
            f"shape mismatch: {path.name} ({version}) holds a {rows} x {cols} matrix, the header announces "
            f"{n} signals x {n_samples} samples"
        )
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not np.array_equal(arr[finite], np.round(arr[finite])):
        # a WFDB signal file holds digital (integer) samples; fractions mean physical values were
        # saved, and dividing them by the header's gain would be off by that factor
        raise BadRecord(
            f"bad MATLAB file: {path.name} ({version}) holds non-integer samples; a WFDB signal file "
            "holds digital values (physical = (digital - baseline) / gain), so its header does not describe "
            "these numbers"
        )
    return arr


def _read_with_wfdb(record: Path, header: Header, verify: bool) -> np.ndarray:
    """Digital samples (L, T) float64 via ``wfdb`` for formats the fast path does not decode.

    Signals with several samples per frame are verified on their own samples (the checksum covers
    every sample), then averaged to one value per frame; a frame holding an invalid sample is NaN."""
    import wfdb

    try:
        rec = wfdb.rdrecord(str(record), physical=False, smooth_frames=False, return_res=64)
    except Exception as err:  # wfdb raises many types for damaged files
        raise BadRecord(f"unreadable WFDB record: {type(err).__name__}: {err}") from None
    signals = rec.e_d_signal
    if not signals or len(signals) != len(header.signals):
        raise BadRecord("no signal: the WFDB record holds no samples")
    n = (
        header.n_samples
        if header.n_samples is not None
        else len(signals[0]) // header.signals[0].samples_per_frame
    )
    out = np.empty((len(signals), n), dtype=np.float64)
    placeholders = _placeholders(header.signals)
    for i, (x, spec) in enumerate(zip(signals, header.signals)):
        x = np.asarray(x, dtype=np.int64)
        if len(x) != n * spec.samples_per_frame:
            raise BadRecord(
                f"truncated signal: signal {spec.name} has {len(x)} samples, the header announces "
                f"{n} frames x {spec.samples_per_frame}"
            )
        if verify and not placeholders:
            _verify(x.astype(np.float64), spec)
        frames = x.reshape(n, spec.samples_per_frame).astype(np.float64)  # (T, samples per frame)
        invalid = _INVALID.get(spec.fmt)
        row = frames.mean(axis=1)
        if invalid is not None:
            row[(frames == invalid).any(axis=1)] = np.nan
        out[i] = row
    return out


def _placeholders(specs: list[SignalSpec]) -> bool:
    """Headers written with placeholder zeros in both fields for every signal record no checksum."""
    return all((s.init_value or 0) == 0 and (s.checksum or 0) == 0 for s in specs)


def _verify(digital: np.ndarray, s: SignalSpec) -> None:
    """BadRecord when the samples ``digital`` (T,) of signal ``s`` contradict its header checksum
    (sum mod 2^16) or initial value."""
    if not len(digital):
        return
    if s.checksum is not None and np.all(np.isfinite(digital)):
        total = int(digital.astype(np.int64).sum())
        if (total - s.checksum) % 65536:
            raise BadRecord(
                f"checksum mismatch: signal {s.name} sums to {total % 65536} (mod 65536), the header "
                f"says {s.checksum % 65536}; the file is corrupt or does not belong to this header "
                "(-o verify_checksums=false reads it anyway)"
            )
    if s.init_value is not None and np.isfinite(digital[0]) and digital[0] != s.init_value:
        raise BadRecord(
            f"checksum mismatch: signal {s.name} starts with {digital[0]:g}, the header's initial "
            f"value is {s.init_value}; the file is corrupt or does not belong to this header "
            "(-o verify_checksums=false reads it anyway)"
        )


def _multi_segment(record: Path) -> Signal:
    import wfdb

    try:
        rec = wfdb.rdrecord(str(record), physical=True)
    except Exception as err:
        raise BadRecord(f"unreadable WFDB record: {type(err).__name__}: {err}") from None
    if rec.p_signal is None:
        raise BadRecord("no signal: the multi-segment record holds no samples")
    data = np.array(rec.p_signal.T, dtype=np.float64)
    for i, (unit, name) in enumerate(zip(rec.units or [], rec.sig_name)):
        factor = unit_factor(str(unit), str(name))
        if factor is not None and factor != 1.0:
            data[i] *= factor
    return Signal(data=data, leads=[str(n) for n in rec.sig_name], rate=float(rec.fs))


def read_record(record: str | Path, *, verify_checksums: bool = True) -> Signal:
    """Read the WFDB record ``record`` (path without extension): data (L, T) float64 in mV
    (NU kept as stored), the header's signal names and rate. Raises BadRecord with the reason."""
    record = Path(record)
    header = parse_header(f"{record}.hea")
    if header.multi_segment:
        return _multi_segment(record)
    if header.n_sig == 0:
        raise BadRecord("no signal: the header lists no signals")
    specs = header.signals
    factors = [unit_factor(s.units, s.name) for s in specs]
    if None in factors and any(f is not None for f in factors):
        nu = [s.name for s, f in zip(specs, factors) if f is None]
        raise BadRecord(
            f"mixed units: signal(s) {', '.join(nu)} in NU (normalised units) next to signals in volts; "
            "their amplitudes cannot be compared, fix the header"
        )
    fast = all(s.fmt in _FAST_FORMATS and s.samples_per_frame == 1 and s.skew == 0 for s in specs)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault(s.file, []).append(i)
    if any(name == "~" for name in groups):
        raise BadRecord("no signal: the header marks a signal as absent ('~')")
    digital: np.ndarray | None = None
    if fast or any(name.lower().endswith(".mat") for name in groups):
        parts = {}
        for name, idx in groups.items():
            path = record.parent / name
            if not path.exists():
                raise BadRecord(f"missing signal file: {name}")
            group = [specs[i] for i in idx]
            if name.lower().endswith(".mat"):
                parts[name] = _read_mat(path, group, header.n_samples)
            elif all(s.fmt in _FAST_FORMATS and s.samples_per_frame == 1 and s.skew == 0 for s in group):
                if len({(s.fmt, s.offset) for s in group}) != 1:
                    raise BadRecord(f"bad header: signals in {name} disagree on format or byte offset")
                parts[name] = _read_dat(path, group, header.n_samples)
            else:
                parts = None
                break
        if parts is not None:
            lengths = {p.shape[1] for p in parts.values()}
            if len(lengths) != 1:
                raise BadRecord(f"size mismatch: the signal files hold different lengths {sorted(lengths)}")
            digital = np.zeros((len(specs), lengths.pop()), dtype=np.float64)
            for name, idx in groups.items():
                digital[idx] = parts[name]
    if digital is None:  # verified while reading (several samples per frame)
        digital = _read_with_wfdb(record, header, verify_checksums)
        return _to_physical(digital, specs, factors, header.fs, False)
    return _to_physical(digital, specs, factors, header.fs, verify_checksums)


def _to_physical(digital: np.ndarray, specs, factors, fs: float, verify: bool) -> Signal:
    if verify and not _placeholders(specs):
        for i, s in enumerate(specs):
            _verify(digital[i], s)
    data = np.empty(digital.shape, dtype=np.float64)
    for i, s in enumerate(specs):
        row = (digital[i] - s.baseline) / s.gain
        invalid = _INVALID.get(s.fmt)
        if invalid is not None:
            row[digital[i] == invalid] = np.nan
        if factors[i] is not None and factors[i] != 1.0:
            row *= factors[i]
        data[i] = row
    return Signal(data=data, leads=[s.name for s in specs], rate=float(fs))


def signal_files(hea: str | Path) -> list[str] | None:
    """Signal file names a header refers to (in order, unique), or None when it cannot be parsed
    (the record is then rejected at load time with the reason)."""
    try:
        header = parse_header(hea)
    except BadRecord:
        return None
    return list(dict.fromkeys(s.file for s in header.signals))


def missing_signal_file(hea: str | Path) -> str | None:
    """Name of the first signal file named in ``hea`` that does not exist next to it, else None."""
    hea = Path(hea)
    for name in signal_files(hea) or []:
        if name != "~" and not os.path.exists(hea.parent / name):
            return name
    return None
