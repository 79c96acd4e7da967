"""Precision settings: resolution per device and clear errors."""

from __future__ import annotations

import pytest
import torch

import softsae_vision.training.precision as precision
from softsae_vision.errors import SoftSAEError
from softsae_vision.training import TrainConfig
from softsae_vision.training.precision import autocast, matmul_precision, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_bf16_on_cuda_and_fp32_on_cpu():
    assert resolve_precision("auto", CUDA) == "bf16"
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("tf32", CUDA) == "tf32"


def test_bad_settings_give_one_line_errors(monkeypatch):
    with pytest.raises(SoftSAEError, match="tf32 needs a CUDA device"):
        resolve_precision("tf32", CPU)
    with pytest.raises(SoftSAEError, match="precision"):
        TrainConfig(precision="fp16")
    monkeypatch.setattr(precision, "_CPU_BF16", False)
    with pytest.raises(SoftSAEError, match="cannot run bf16") as err:
        resolve_precision("bf16", CPU)
    assert "\n" not in str(err.value)


def test_autocast_region_and_tf32_switch_restore():
    a = torch.randn(4, 4)
    with autocast("bf16", CPU):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("fp32", CPU):
        assert (a @ a).dtype == torch.float32
    before = torch.get_float32_matmul_precision()
    with matmul_precision("tf32"):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before


def test_cli_rejects_tf32_on_cpu_with_one_line(tmp_path, capsys):
    import numpy as np

    from softsae_vision.cli import main

    np.save(tmp_path / "a.npy", np.random.default_rng(0).standard_normal((300, 8), np.float32))
    argv = ["train", str(tmp_path / "a.npy"), "--out", str(tmp_path / "r"), "--arch", "topk"]
    argv += ["--k", "2", "--n-latents", "16", "--device", "cpu", "--precision", "tf32"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "tf32 needs a CUDA device" in err and "\n" not in err
    assert not (tmp_path / "r").exists()
