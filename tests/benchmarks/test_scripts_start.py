"""Every benchmark script starts: its imports resolve and its arguments parse (``--help``).

The scripts are run by hand, rarely by the suite; an import left behind by a module split once
broke ``bench_store_loader.py`` unnoticed.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if "__main__" in p.read_text())


def test_the_scripts_are_found():
    assert {"bench_store_loader.py", "bench_train_step.py", "science.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_script_starts(script):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=BENCH.parent,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout
