"""A non-editable install works: a wheel built from this tree, installed into a fresh virtual
environment, runs a search over a built-in space from outside the source tree."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_runs_search_with_a_built_in_space(tiny_dir, tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("pruner_zero-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    site = Path(subprocess.run([str(bindir / "python"), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies (torch, transformers, ...) come from this environment's site-packages as a
    # plain path entry: its .pth files, the editable install of this tree among them, stay unread
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(bindir / "python"), "install",
                    "-q", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(bindir / "python"), "-c", "import pruner_zero; print(pruner_zero.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel's copy, not this tree
    out = tmp_path / "run"
    done = subprocess.run(
        [str(bindir / "pruner-zero"), "search", "--model", str(tiny_dir / "tiny-llama"),
         "--data-dir", str(tiny_dir / "data"), "--seqlen", "16", "--nsamples", "2",
         "--device", "cpu", "--no-cache", "--quiet", "--space", "paper", "--generations", "1",
         "--population", "4", "--final-top", "1", "--confirm-seeds", "1", "--baselines", "",
         "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["best"] and (out / "best_metric.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["space"]["spec"] == "paper" and config["gp"]["generations"] == 1
