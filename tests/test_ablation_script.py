"""scripts/ablation.py in its seconds-long mode: runs, tables, intervals and resume."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fast_ablation_table_matches_its_runs_and_resumes(ablation, tmp_path, capsys):
    argv = ["--out", str(tmp_path / "abl"), "--fast", "--variants", "full", "clip", "--seeds", "1", "2",
            "--draws", "2", "--n-boot", "50"]  # fmt: skip
    assert ablation.main(argv) == 0
    saved = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    runs, table = saved["runs"], saved["table"]
    assert sorted((r["variant"], r["seed"]) for r in runs) == [
        ("clip", 1),
        ("clip", 2),
        ("full", 1),
        ("full", 2),
    ]
    clip_run = next(r for r in runs if r["variant"] == "clip")
    assert "loss.beat=0" in clip_run["overrides"] and "loss.caption=0" in clip_run["overrides"]
    for variant in ("full", "clip"):
        mine = [r for r in runs if r["variant"] == variant]
        zs = [r["zeroshot"] for r in mine]
        row = table[variant]["zeroshot"]
        assert row["mean"] == pytest.approx(np.mean(zs)) and row["sd"] == pytest.approx(np.std(zs, ddof=1))
        assert row["ci"]["value"] == pytest.approx(np.mean(zs), abs=1e-9)  # same scores as the runs
        p1 = [np.mean(r["probe"]["0.01"]["draws"]) for r in mine]
        assert table[variant]["probe_1"]["mean"] == pytest.approx(np.mean(p1))
    # the paired difference on the full set is the difference of the means
    diff = table["full"]["zeroshot"]["vs_clip"]["value"]
    assert diff == pytest.approx(
        table["full"]["zeroshot"]["mean"] - table["clip"]["zeroshot"]["mean"], abs=1e-9
    )
    assert "vs_clip" not in table["clip"]["zeroshot"]
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert md.count("\n| full |") == 1 and "Δ vs CLIP" in md
    assert (tmp_path / "abl" / "ablation.png").stat().st_size > 5_000
    # a rerun reuses every finished run
    capsys.readouterr()
    before = {p: p.stat().st_mtime for p in (tmp_path / "abl" / "runs").glob("*/result.json")}
    assert ablation.main(argv) == 0
    assert capsys.readouterr().out.count("done before") == 4
    assert all(p.stat().st_mtime == t for p, t in before.items())
