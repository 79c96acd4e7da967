"""`softsae train` / `eval` respect the user's time: clear endings, progress, warnings."""

import json
import logging

import numpy as np
import pytest

from softsae_vision.cli import main
from softsae_vision.data.synthetic import SyntheticSparseData
from softsae_vision.training import trainer as trainer_module


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    root = tmp_path_factory.mktemp("d")
    gen = SyntheticSparseData(d=16, n_atoms=32, max_active=4)
    np.save(root / "train.npy", gen.generate(800, seed=1)[0].numpy())
    np.save(root / "test.npy", gen.generate(200, seed=2)[0].numpy())
    return root


def _args(npy, out, *extra):
    return [
        "train", str(npy / "train.npy"), "--out", str(out), "--n-latents", "32", "--k", "4",
        "--steps", "10", "--batch-size", "32", "--device", "cpu", "--no-progress",
        "--estimator", "lean", *extra,
    ]  # fmt: skip


def test_summary_lists_only_fields_of_the_architecture(npy, tmp_path, capsys):
    assert main(_args(npy, tmp_path / "t", "--arch", "topk")) == 0
    out = capsys.readouterr().out
    assert out.startswith("trained topk SAE: 10 steps in ") and str(tmp_path / "t") in out
    assert "L0 " in out and "k̂" not in out and "softsae eval" in out and "{" not in out
    assert main(_args(npy, tmp_path / "t2", "--arch", "topk", "--json")) == 0
    fields = json.loads(capsys.readouterr().out)
    assert fields["steps_run"] == 10 and "mse" in fields and "l0_mean" in fields
    assert not {"k_hat_mean", "alpha", "k_target", "phase", "lr"} & set(fields)
    assert main(_args(npy, tmp_path / "s", "--arch", "softsae", "--json")) == 0
    fields = json.loads(capsys.readouterr().out)
    assert {"k_hat_mean", "k_hat_min", "k_hat_max"} <= set(fields)


def test_finished_run_says_complete_and_how_to_evaluate(npy, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(_args(npy, run, "--arch", "topk")) == 0
    capsys.readouterr()
    assert main(_args(npy, run, "--arch", "topk")) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and f"softsae eval {run}" in err
    weights = (run / "sae.safetensors").read_bytes()
    assert main(_args(npy, run, "--arch", "topk", "--resume")) == 0
    out = capsys.readouterr().out
    assert "already complete" in out and f"softsae eval {run} DATA" in out and "{}" not in out
    assert (run / "sae.safetensors").read_bytes() == weights


def test_progress_lines_and_phase_announcements(npy, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(trainer_module, "PROGRESS_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="softsae_vision"):
        assert main(_args(npy, tmp_path / "s", "--arch", "softsae", "--hard-frac", "0.3")) == 0
    messages = [r.getMessage() for r in caplog.records]
    progress = [m for m in messages if m.startswith("step ") and "steps/s" in m]
    assert progress[0].startswith("step 1/10 (10%)") and progress[-1].startswith(
        "step 10/10 (100%)"
    )
    assert any("step 7/10: hard phase starts" in m for m in messages)
    assert sum("calibrated k̂" in m for m in messages) == 2  # at the switch and after the end


def test_resume_without_checkpoint_says_it_starts_over(npy, tmp_path, caplog):
    run = tmp_path / "r"
    assert main(_args(npy, run, "--arch", "topk")) == 0
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "status": "running"}))
    for path in (run / "checkpoint").iterdir():  # killed before its first checkpoint
        path.unlink()
    (run / "sae.safetensors").unlink()
    with caplog.at_level(logging.WARNING, logger="softsae_vision"):
        assert main(_args(npy, run, "--arch", "topk", "--resume")) == 0
    assert any("no checkpoint yet; starting the run over" in r.getMessage() for r in caplog.records)


def test_eval_warns_when_fvu_exceeds_one(npy, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(_args(npy, run, "--arch", "topk")) == 0
    shifted = tmp_path / "shifted.npy"
    np.save(shifted, np.load(npy / "test.npy") * 5 + 3)
    capsys.readouterr()
    assert main(["eval", str(run), str(shifted), "--device", "cpu"]) == 0
    assert "warning: FVU" in capsys.readouterr().err
    assert main(["eval", str(run), str(npy / "test.npy"), "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err
