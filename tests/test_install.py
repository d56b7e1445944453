"""melp installs as users install it: build the wheel, install it (not editable) into a fresh venv,
run the console script and build a model from the packaged configs.

Offline: the wheel is built with the current environment's setuptools (no build isolation), the
fresh venv sees this environment's third-party packages through a ``.pth`` line (melp itself is
not among them: only the wheel provides it), and the install uses ``--no-deps --no-index``. The
declared requirements are then checked against the installed versions, extras included.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]

CHECK = r"""
import importlib.metadata as md, json, sys
from pathlib import Path
from packaging.requirements import Requirement
import melp
assert Path(melp.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), melp.__file__
m = melp.create_model("melp-test")
from melp.eval.prompts import load_prompts
from melp.train.config import list_configs
problems = []
for text in md.requires("melp"):
    req = Requirement(text)
    extra = req.marker is not None and "extra" in str(req.marker)
    if req.marker is not None and not extra and not req.marker.evaluate():
        continue
    if extra and "dev" in str(req.marker):
        continue  # tools, not runtime
    name = req.name
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        if extra:
            continue  # an optional extra this environment does not have
        problems.append(f"{name} missing")
        continue
    if not req.specifier.contains(have, prereleases=True):
        problems.append(f"{text} but {have} installed")
print(json.dumps({"file": melp.__file__, "params": sum(p.numel() for p in m.parameters()),
                  "prompts": len(load_prompts()), "train_configs": list_configs(), "problems": problems}))
"""


@pytest.mark.slow  # ~20 s: builds and installs a wheel; the installed-package contract
def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    import json

    src = tmp_path / "src_copy"  # build outside the work tree (setuptools writes build/ and egg-info)
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(src),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("melp-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (purelib / "_melp_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    melp_cli = venv / ("Scripts/melp.exe" if os.name == "nt" else "bin/melp")
    help_out = subprocess.run(
        [str(melp_cli), "--help"], check=True, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    for command in ("prepare", "convert", "pretrain", "zeroshot", "predict"):
        assert f"    {command}" in help_out.stdout, command
    res = subprocess.run(
        [str(py), "-c", CHECK], check=True, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(info["file"]).resolve().is_relative_to(venv.resolve())  # the wheel, not the work tree
    import melp
    from melp.eval.prompts import load_prompts
    from melp.train.config import list_configs

    assert info["params"] == sum(p.numel() for p in melp.create_model("melp-test").parameters())
    assert info["prompts"] == len(load_prompts()) and info["train_configs"] == list_configs()  # package data
    assert info["problems"] == []  # every declared requirement (and installed extra) is satisfied
