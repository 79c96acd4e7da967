"""TensorBoard and W&B sinks receive the metrics.jsonl stream; missing packages fail clearly."""

import importlib.machinery
import importlib.util
import sys
import types

import pytest

from softsae_vision import SoftSAEError
from softsae_vision.training.loggers import check_available, close_sinks, open_sinks


def _tb_scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_sink_writes_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    sinks = open_sinks(["tensorboard"], tmp_path, {})
    sinks[0].log(0, {"step": 0, "loss": 1.5, "l0_mean": 4.0, "phase": "soft"})
    sinks[0].log(5, {"step": 5, "loss": 0.5, "l0_mean": 3.0})
    close_sinks(sinks)
    scalars = _tb_scalars(tmp_path / "tensorboard")
    assert scalars["train/loss"] == [(0, 1.5), (5, 0.5)]
    assert "train/phase" not in scalars and "train/step" not in scalars


def test_missing_or_unknown_sinks_fail_in_one_line():
    with pytest.raises(SoftSAEError, match="choose from tensorboard, wandb"):
        check_available(["csv"])
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(SoftSAEError, match="pip install wandb"):
            check_available(["wandb"])
    assert check_available([]) == ()


def test_wandb_sink_logs_each_step(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, data, step):
            calls.append(("log", step, data))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or Run()
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sinks = open_sinks(["wandb"], tmp_path / "run", {"arch": "softsae"})
    sinks[0].log(3, {"loss": 0.25, "phase": "hard"})
    close_sinks(sinks)
    assert calls[0][0] == "init" and calls[0][1]["config"] == {"arch": "softsae"}
    assert calls[1] == ("log", 3, {"train/loss": 0.25}) and calls[2] == ("finish",)


def test_training_streams_metrics_jsonl_to_tensorboard(tmp_path):
    """The sink gets exactly the lines of metrics.jsonl (same steps, same values)."""
    pytest.importorskip("tensorboard")
    import json

    import torch

    from softsae_vision import TopKSAE, TrainConfig, train

    cfg = TrainConfig(steps=12, batch_size=64, log_every=5, device="cpu")
    run = tmp_path / "run"
    train(
        TopKSAE(8, 16, k=2),
        torch.randn(512, 8),
        cfg,
        run_dir=run,
        progress=False,
        log_to=["tensorboard"],
    )
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    scalars = _tb_scalars(run / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == [line["step"] for line in lines]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([x["loss"] for x in lines])


def test_cli_log_flag(tmp_path, capsys):
    import numpy as np

    from softsae_vision.cli import main

    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(256, 8)).astype("float32"))
    args = [
        "train",
        str(tmp_path / "a.npy"),
        "--out",
        str(tmp_path / "run"),
        "--arch",
        "topk",
        "--k",
        "2",
        "--n-latents",
        "16",
        "--steps",
        "3",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--no-progress",
    ]
    if importlib.util.find_spec("wandb") is None:
        assert main([*args, "--log", "wandb"]) == 2
        assert "pip install wandb" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()  # refused before anything was written
    if importlib.util.find_spec("tensorboard") is not None:
        assert main([*args, "--log", "tensorboard"]) == 0
        assert any((tmp_path / "run" / "tensorboard").iterdir())
