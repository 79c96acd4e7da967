import json

import numpy as np
import pytest
import torch

from softsae_vision import SoftSAEError
from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.synthetic import SyntheticSparseData
from softsae_vision.sae import BatchTopKSAE, MatryoshkaSAE, ReLUSAE, SoftSAE, TopKSAE, load_sae
from softsae_vision.training import TrainConfig, train
from softsae_vision.training.losses import auxk_loss

D, F = 32, 128
DATA, _ = SyntheticSparseData(d=D, n_atoms=64, max_active=6).generate(3000)


def cfg(**kw):
    base = dict(steps=30, batch_size=64, lr=3e-3, log_every=1, checkpoint_every=4, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "make",
    [
        lambda: SoftSAE(D, F, k=4),
        lambda: SoftSAE(D, F, k=4, estimator="lean"),
        lambda: TopKSAE(D, F, k=4),
        lambda: BatchTopKSAE(D, F, k=4),
        lambda: MatryoshkaSAE(D, F, k=4),
        lambda: ReLUSAE(D, F, l1_coeff=1e-3),
    ],
)
def test_every_architecture_learns(make, tmp_path):
    # From a random dictionary (not the data's own atoms: the init stream is salted), 150 steps
    # take every architecture's MSE to 0.40-0.57 of its first step's (ReLU + L1: 0.03).
    sae = make()
    train(sae, DATA, cfg(steps=150), run_dir=tmp_path / "run", progress=False)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["mse"] < 0.65 * lines[0]["mse"]
    for key in ("loss", "mse", "aux", "l0_mean", "l0_std", "dead_frac", "lr", "alpha"):
        assert key in lines[-1]
    if isinstance(sae, SoftSAE):
        assert {"k_hat_mean", "k_hat_std", "k_hat_min", "k_hat_max", "loss_k"} <= set(lines[0])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["status"] == "complete" and config["training"]["steps"] == 150
    loaded = load_sae(tmp_path / "run")
    assert torch.equal(loaded.encode(DATA[:50]), sae.encode(DATA[:50]))


class _Interrupting:
    """An ArraySource that dies (like a kill) after ``fail_after`` batches."""

    def __init__(self, inner, fail_after):
        self.inner, self.fail_after = inner, fail_after
        self.d = inner.d

    def __len__(self):
        return len(self.inner)

    def sample(self, n, seed):
        return self.inner.sample(n, seed)

    def describe(self):
        return self.inner.describe()

    def iter_eval(self, batch_size):
        return self.inner.iter_eval(batch_size)

    def batches(self, batch_size, seed, start=0):
        for i, b in enumerate(self.inner.batches(batch_size, seed, start)):
            if start + i == self.fail_after:
                raise KeyboardInterrupt
            yield b


@pytest.mark.parametrize("fail_after", [10, 27])  # before and after the hard phase starts
def test_resume_reproduces_an_uninterrupted_run(tmp_path, fail_after):
    config = cfg(hard_frac=0.2)
    full = SoftSAE(D, F, k=4, seed=1)
    train(full, ArraySource(DATA), config, run_dir=tmp_path / "full", progress=False)

    broken = SoftSAE(D, F, k=4, seed=1)
    with pytest.raises(KeyboardInterrupt):
        train(
            broken,
            _Interrupting(ArraySource(DATA), fail_after),
            config,
            run_dir=tmp_path / "cut",
            progress=False,
        )
    assert not (tmp_path / "cut" / "sae.safetensors").exists()
    with pytest.raises(SoftSAEError, match="unfinished"):
        load_sae(tmp_path / "cut")
    with pytest.raises(SoftSAEError, match="--resume"):
        train(
            SoftSAE(D, F, k=4, seed=1),
            ArraySource(DATA),
            config,
            run_dir=tmp_path / "cut",
            progress=False,
        )

    resumed = SoftSAE(D, F, k=4, seed=1)
    train(resumed, ArraySource(DATA), config, run_dir=tmp_path / "cut", resume=True, progress=False)
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    steps = [
        json.loads(s)["step"] for s in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(30))


def test_resume_refuses_different_settings(tmp_path):
    train(TopKSAE(D, F, k=4), DATA, cfg(steps=4), run_dir=tmp_path / "r", progress=False)
    with pytest.raises(SoftSAEError, match="cannot resume"):
        train(
            TopKSAE(D, F, k=5),
            DATA,
            cfg(steps=8),
            run_dir=tmp_path / "r",
            resume=True,
            progress=False,
        )


def test_bad_data_gives_clear_errors():
    bad = DATA.clone()
    bad[5, 3] = float("nan")
    with pytest.raises(SoftSAEError, match="NaN"):
        train(TopKSAE(D, F, k=4), ArraySource(bad), cfg(steps=50), progress=False)
    with pytest.raises(SoftSAEError, match="does not match"):
        train(TopKSAE(D + 1, F, k=4), DATA, cfg(steps=2), progress=False)
    with pytest.raises(SoftSAEError, match="2-D"):
        train(TopKSAE(D, F, k=4), np.zeros(5, np.float32), cfg(steps=2), progress=False)


def test_plain_iterator_of_batches_is_accepted():
    batches = (DATA[i : i + 64] for i in range(0, 3000 - 64, 64))
    result = train(TopKSAE(D, F, k=4), batches, cfg(steps=20, norm_sample=128), progress=False)
    assert result.final_metrics["l0_mean"] <= 4


def test_auxk_revives_dead_latents_direction():
    residual = torch.randn(8, D)
    pre = torch.rand(8, F)
    dead = torch.zeros(F, dtype=torch.bool)
    assert auxk_loss(residual, pre, dead, torch.randn(F, D), 4) == 0
    dead[:10] = True
    W = torch.randn(F, D, requires_grad=True)
    loss = auxk_loss(residual, pre, dead, W, 4)
    loss.backward()
    assert loss > 0 and W.grad[10:].abs().sum() == 0 and W.grad[:10].abs().sum() > 0
