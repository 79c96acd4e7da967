"""``bench_gpu.py --quick`` runs every section end to end on the CPU and prints its JSON.

The script exists for the rare session that is lent a GPU, where a crash costs device minutes
that cannot be had back; this runs the same code on tiny shapes first.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_gpu_quick_reports_every_section_on_cpu():
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--quick", "--device", "cpu", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["device"] == "cpu" and report["quick"] is True
    assert report["precision"] == "fp32"  # auto is fp32 on the CPU
    for arch in ("topk", "softsae"):
        for dist, by_arch in report["train"].items():
            tokens = by_arch[arch]
            assert tokens["store_tokens_per_s"] > 0 and tokens["memory_tokens_per_s"] > 0, dist
    cases = [case for shape in report["soft_topk"] for case in shape["cases"]]
    assert {case["dist"] for case in cases} >= {"loguniform", "equal"}
    assert all(case["ms"]["soft"] > 0 and case["soft/hard"] > 0 for case in cases)
    step = report["step"][0]
    assert step["ms"]["topk"] > 0 and step["ratio_softsae_priced_over_topk"] > 0
    auxk = report["auxk"]["by_share"]
    assert [r["dead_share"] for r in auxk] == [0.05, 0.1, 0.3]
    assert all(r["fixed_ms"] > 0 and r["compact_ms"] > 0 for r in auxk)
    extract = report["extract"]
    assert extract["extract_images_per_s"] > 0 and extract["bare_images_per_s"] > 0
