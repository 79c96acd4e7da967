"""``softsae compare`` end to end on small synthetic activations."""

import csv
import json

import numpy as np
import pytest

from softsae_vision.cli import main
from softsae_vision.data.synthetic import SyntheticSparseData

RUNS = [("soft", "softsae", 3, 0), ("topk2", "topk", 2, 0), ("topk4", "topk", 4, 0)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    gen = SyntheticSparseData(d=16, n_atoms=32, max_active=4)
    np.save(root / "train.npy", gen.generate(1500, seed=1)[0].numpy())
    np.save(root / "test.npy", gen.generate(400, seed=2)[0].numpy())
    for name, arch, k, seed in [*RUNS, ("topk4_s1", "topk", 4, 1)]:
        args = ["train", str(root / "train.npy"), "--out", str(root / name), "--arch", arch]
        args += ["--k", str(k), "--n-latents", "48", "--steps", "30", "--batch-size", "64"]
        args += ["--device", "cpu", "--no-progress", "--seed", str(seed)]
        assert main(args) == 0
    return root


def test_compare_writes_figure_and_tables(runs, tmp_path, capsys):
    names = [r[0] for r in RUNS] + ["topk4_s1"]
    out = tmp_path / "cmp"
    argv = ["compare", *(str(runs / n) for n in names), str(runs / "test.npy")]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "FVU at SoftSAE's mean L0" in printed and "Seed stability" in printed
    for name in ("pareto.png", "pareto.pdf", "compare.csv", "compare.md", "fvu_at_l0.md"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "compare.json").read_text())
    by_name = {r["name"]: r for r in summary["runs"]}
    assert summary["fronts"]["topk"] == ["topk2", "topk4", "topk4_s1"]
    for r in summary["runs"]:
        m = r["metrics"]
        assert m["n_rows"] == 400 and 0 < m["fvu"] < 1.5 and -1 <= r["coherence"] <= 1
        assert {"almost_dead_latents", "dense_latents", "l0_std"} <= set(m)
    assert by_name["topk2"]["metrics"]["l0_mean"] == 2.0
    # the interpolated baseline FVU at SoftSAE's L0 lies between the neighbouring TopK runs
    (row,) = json.loads((out / "fvu_at_l0.json").read_text())["rows"]
    soft_l0 = by_name["soft"]["metrics"]["l0_mean"]
    lo = by_name["topk2"]["metrics"]["fvu"]
    hi = np.mean([by_name[n]["metrics"]["fvu"] for n in ("topk4", "topk4_s1")])
    t = (soft_l0 - 2.0) / 2.0
    assert row["baseline_fvu_at_l0"] == pytest.approx(lo + t * (hi - lo))
    with open(out / "fvu_at_l0.csv") as f:
        assert next(csv.DictReader(f))["softsae_run"] == "soft"
    (stab,) = summary["seed_stability"]
    assert {stab["run_a"], stab["run_b"]} == {"topk4", "topk4_s1"}
    assert 0 < stab["mean_cosine"] <= 1 and 0 <= stab["frac_above"] <= 1


def test_compare_refuses_missing_data(runs, tmp_path, capsys):
    assert main(["compare", str(runs / "soft"), str(tmp_path / "nope.npy"), "--out", "x"]) == 2
    assert "nope.npy" in capsys.readouterr().err
    assert main(["compare", str(runs / "soft"), "--out", str(tmp_path / "o")]) == 2
