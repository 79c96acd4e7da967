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
