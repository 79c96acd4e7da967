"""`softsae train` as a careful user's accidents would hurt it: seeds, locks, Ctrl-C, bad flags."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from softsae_vision.cli import main
from softsae_vision.training.run_dir import CHECKPOINT_FILE, load_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    path = tmp_path_factory.mktemp("d") / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32))
    return path


def _args(npy, out, *extra):
    return [
        "train", str(npy), "--out", str(out), "--n-latents", "32", "--k", "4", "--steps", "6",
        "--batch-size", "16", "--device", "cpu", "--no-progress", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("arch", ["softsae", "topk", "batchtopk", "matryoshka", "relu"])
def test_same_seed_gives_byte_identical_weights(npy, tmp_path, arch):
    weights = []
    for name, global_seed in (("a", 1), ("b", 2)):
        torch.manual_seed(global_seed)  # the global generator must not matter
        torch.rand(3)
        assert main(_args(npy, tmp_path / name, "--arch", arch, "--seed", "7")) == 0
        weights.append((tmp_path / name / "sae.safetensors").read_bytes())
    assert weights[0] == weights[1]
    assert main(_args(npy, tmp_path / "c", "--arch", arch, "--seed", "8")) == 0
    assert (tmp_path / "c" / "sae.safetensors").read_bytes() != weights[0]


def _wait_for(predicate, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.communicate()}")
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the training process")


def test_lock_and_ctrl_c(npy, tmp_path, capsys):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "softsae_vision.cli", *_args(npy, run, "--arch", "topk")]
    cmd[cmd.index("--steps") + 1] = "10000000"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = run / "metrics.jsonl"
        _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, proc)
        # a second train into the same --out fails at once, naming the first one
        assert main(_args(npy, run, "--arch", "topk")) == 2
        err = capsys.readouterr().err
        assert f"pid {proc.pid} on host" in err and "started" in err and len(err.splitlines()) == 1
        assert main(_args(npy, run, "--arch", "topk", "--resume")) == 2
        assert f"pid {proc.pid}" in capsys.readouterr().err
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "checkpoint written at step" in stderr and "--resume" in stderr
    step = load_checkpoint(run / CHECKPOINT_FILE)["step"]
    assert step >= 2 and f"step {step}/" in stderr
    assert json.loads((run / "config.json").read_text())["status"] == "running"
    # the lock went with the process; resume checks settings
    assert main(_args(npy, run, "--arch", "topk", "--resume")) == 2
    assert "training.steps (--steps)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--k", "inf"], "--k must be a finite number"),
        (["--k", "nan"], "--k must be a finite number"),
        (["--seed", "-1"], "--seed must be a finite number >= 0"),
        (["--l1-coeff", "-1", "--arch", "relu"], "--l1-coeff must be"),
        (["--lr", "0"], "--lr must be a finite number > 0"),
        (["--lr", "inf"], "--lr must be"),
        (["--steps", "0"], "--steps must be"),
        (["--batch-size", "-4"], "--batch-size must be"),
        (["--hard-frac", "1.5"], "--hard-frac must be a finite number >= 0 and <= 1"),
        (["--alpha", "-1"], "--alpha must be"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be"),
        (["--n-latents", "0"], "--n-latents must be"),
    ],
)
def test_bad_numbers_are_refused_before_anything_is_created(npy, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(_args(npy, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_os_errors_are_one_line_with_the_path(npy, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(_args(npy, blocker / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker) in err and "Traceback" not in err


def test_full_disk_is_one_line(npy, tmp_path, capsys, monkeypatch):
    import errno

    from softsae_vision import _io

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "x"))

    monkeypatch.setattr(_io.os, "fsync", full)
    assert main(_args(npy, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and str(tmp_path / "run") in err
    assert len(err.splitlines()) == 1


def test_diverging_run_exits_non_zero_and_stays_unfinished(npy, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_args(npy, run, "--arch", "topk", "--lr", "1e30", "--steps", "12")) == 2
    err = capsys.readouterr().err.strip()
    assert "training diverged" in err and "--lr" in err and len(err.splitlines()) == 1
    assert json.loads((run / "config.json").read_text())["status"] == "running"
    assert not (run / "sae.safetensors").exists()
    assert main(["eval", str(run), str(npy), "--device", "cpu"]) == 2
    assert "unfinished" in capsys.readouterr().err
