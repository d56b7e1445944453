"""`melp prepare` killed with SIGKILL midway resumes without redoing finished chunks and ends with
a store byte-identical to an uninterrupted run; a rerun with other settings in between is refused
and changes nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_builders import MIMIC_LEADS

from melp.data.store import prepare

N_RECORDS, CHUNK = 200, 8
N_CHUNKS = -(-N_RECORDS // CHUNK)
STORE_FILES = ("signals.npy", "manifest.parquet", "rejects.parquet", "meta.json")


def _melp() -> list[str]:
    exe = shutil.which("melp", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "import sys; from melp.cli import main; sys.exit(main())"]


def _build(root: Path) -> None:
    """200 small NumPy records (12 x 1000 at 100 Hz); every 50th is all-zero (a reject)."""
    root.mkdir()
    base = np.random.default_rng(0).standard_normal((12, 1000)).astype(np.float32)
    files = []
    for k in range(N_RECORDS):
        x = np.zeros_like(base) if k % 50 == 7 else base * (1 + k / N_RECORDS) + k / 1000
        np.save(root / f"r{k:04d}.npy", x)
        files.append(f"r{k:04d}.npy")
    pd.DataFrame({"file": files, "report": [f"report number {k}" for k in range(N_RECORDS)]}).to_csv(
        root / "records.csv", index=False
    )


def _args(root: Path, out: Path) -> list[str]:
    return [
        "prepare",
        "generic",
        "--root",
        str(root),
        "--out",
        str(out),
        "--rate",
        "250",
        "--seconds",
        "10",
        "--no-progress",
        "-o",
        f"leads={','.join(MIMIC_LEADS)}",
        "-o",
        "sample_rate=100",
        "--chunk-size",
        str(CHUNK),
    ]


@pytest.mark.slow
def test_sigkill_midway_then_resume_is_byte_identical(tmp_path):
    root = tmp_path / "raw"
    _build(root)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    # the reference: one uninterrupted run (in-process; same settings as the CLI runs)
    ref = tmp_path / "ref"
    counts = prepare(
        "generic",
        root,
        ref,
        rate=250,
        seconds=10,
        chunk_size=CHUNK,
        progress=False,
        leads=",".join(MIMIC_LEADS),
        sample_rate=100,
    )
    assert counts["kept"] == N_RECORDS - 4 and counts["rejected"] == 4

    # the interrupted run: SIGKILL as soon as a few chunks are finished
    out = tmp_path / "out"
    chunks = out / ".chunks"
    proc = subprocess.Popen(
        _melp() + _args(root, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if chunks.exists() and len(list(chunks.glob("chunk_*.json"))) >= 4:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "prepare finished before it could be killed: make the corpus bigger"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "meta.json").exists()  # really interrupted
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in chunks.glob("chunk_*.json")}
    assert 4 <= len(done) < N_CHUNKS

    # a rerun with other settings is refused in one line and touches nothing of the interrupted run
    snapshot = {p.name: p.read_bytes() for p in chunks.glob("*.json")}
    other = [a if a != "250" else "200" for a in _args(root, out)]
    refused = subprocess.run(_melp() + other, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "different settings (rate: 250.0 -> 200.0" in errors[0], refused.stderr
    assert {p.name: p.read_bytes() for p in chunks.glob("*.json")} == snapshot

    # the rerun finishes, reports the resume, and leaves the finished chunks untouched
    rerun = subprocess.run(_melp() + _args(root, out), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(done)} of {N_CHUNKS} chunks already done" in rerun.stderr
    for name, stamp in done.items():
        p = chunks / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, f"{name} was redone"
    assert len(list(chunks.glob("chunk_*.json"))) == N_CHUNKS

    for name in STORE_FILES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), (
            f"{name} differs from the uninterrupted run"
        )
