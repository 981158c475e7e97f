"""The README's examples stay true: its Python block runs as written, from the repository root,
against the real assets beside the repo."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED, needs_shared

REPO = Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_the_readme_has_its_python_example():
    (block,) = readme_python_blocks()
    assert "pruner_zero.prune(" in block and "pruner_zero.search(" in block


@pytest.mark.slow
@needs_shared
def test_the_readmes_python_example_runs_as_written(tmp_path):
    (block,) = readme_python_blocks()
    # as written, from a checkout whose ../shared is the assets, writing runs/ inside it: the
    # checkout is linked into a scratch tree so the run directory stays out of the repository
    root = tmp_path / "checkout"
    root.mkdir()
    (tmp_path / "shared").symlink_to(SHARED.resolve(), target_is_directory=True)
    env = dict(os.environ, PRUNER_ZERO_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", block], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()  # prune's log (print by default), then the two prints
    ppl, sparsity = lines[-2].split()
    assert float(ppl) > 0 and abs(float(sparsity) - 0.5) < 0.01
    formula, fitness = lines[-1].rsplit(" ", 1)
    assert formula and float(fitness) > 0
    assert (root / "runs" / "readme-example" / "best_metric.json").is_file()
