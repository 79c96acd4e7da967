"""train_many / softsae sweep: each member equals training it alone, resumes, fails cleanly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softsae_vision.cli import main
from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.synthetic import SyntheticSparseData
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae import SoftSAE, TopKSAE, load_sae
from softsae_vision.training import TrainConfig, train
from softsae_vision.training.sweep import member_name, train_many

D, F = 16, 64
DATA, _ = SyntheticSparseData(d=D, n_atoms=32, max_active=5).generate(1200, seed=3)


def cfg(**kw):
    base = dict(steps=12, batch_size=64, lr=3e-3, log_every=2, checkpoint_every=4, device="cpu")
    return TrainConfig(**{**base, "hard_frac": 0.25, **kw})


def members():
    return {
        "softsae-k4": SoftSAE(D, F, k=4, seed=1),
        "topk-k4": TopKSAE(D, F, k=4, seed=1),
        "softsae-lean": SoftSAE(D, F, k=3, estimator="lean", seed=2),
    }


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    root = tmp_path_factory.mktemp("alone")
    out = {}
    for name, sae in members().items():
        train(sae, ArraySource(DATA), cfg(), run_dir=root / name, progress=False)
        out[name] = sae
    out["_root"] = root
    return out


def test_each_member_equals_training_it_alone(alone, tmp_path):
    results = train_many(members(), ArraySource(DATA), cfg(), out=tmp_path, progress=False)
    assert list(results) == list(members())
    for name, result in results.items():
        assert_same_weights(result.sae, alone[name])
        assert_same_weights(load_sae(tmp_path / name), alone[name])
        metrics = (tmp_path / name / "metrics.jsonl").read_text()
        assert metrics == (alone["_root"] / name / "metrics.jsonl").read_text()


class _Dies:
    """An ArraySource whose stream stops (like a kill) at batch ``at``."""

    def __init__(self, at):
        self.inner, self.at, self.d = ArraySource(DATA), at, D

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
            if start + i == self.at:
                raise KeyboardInterrupt
            yield b


def test_an_interrupted_sweep_resumes_as_a_whole(alone, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train_many(members(), _Dies(6), cfg(), out=tmp_path, progress=False)
    results = train_many(
        members(), ArraySource(DATA), cfg(), out=tmp_path, resume=True, progress=False
    )
    for name, result in results.items():
        assert_same_weights(result.sae, alone[name])
    again = train_many(
        members(), ArraySource(DATA), cfg(), out=tmp_path, resume=True, progress=False
    )
    assert all(r.already_complete for r in again.values())


def test_a_failing_member_is_named_and_the_others_resume(alone, tmp_path, monkeypatch):
    saes = members()
    broken = saes["topk-k4"]
    calls = {"n": 0}
    original = broken.train_output

    def fail_at_step_5(xn, ctx):
        calls["n"] += 1
        if calls["n"] == 6:
            raise SoftSAEError("boom")
        return original(xn, ctx)

    monkeypatch.setattr(broken, "train_output", fail_at_step_5)
    with pytest.raises(SoftSAEError, match="topk-k4.*boom") as err:
        train_many(saes, ArraySource(DATA), cfg(), out=tmp_path, progress=False)
    assert "\n" not in str(err.value)
    for name in ("softsae-k4", "softsae-lean"):
        assert (tmp_path / name / "checkpoint" / "state.pt").exists()
    rest = {n: s for n, s in members().items() if n != "topk-k4"}
    results = train_many(rest, ArraySource(DATA), cfg(), out=tmp_path, resume=True, progress=False)
    for name, result in results.items():
        assert_same_weights(result.sae, alone[name])


def test_member_names_and_bad_input():
    assert member_name(TopKSAE(D, F, k=4)) == "topk-k4"
    assert member_name(SoftSAE(D, F, k=4.5)) == "softsae-k4.5"
    with pytest.raises(SoftSAEError, match="both be named"):
        train_many([TopKSAE(D, F, k=4), TopKSAE(D, F, k=4)], DATA, cfg())
    with pytest.raises(SoftSAEError, match="d_in"):
        train_many({"a": TopKSAE(D + 1, F, k=4)}, DATA, cfg())


def test_cli_sweep_writes_one_loadable_run_per_member(tmp_path, capsys):
    np.save(tmp_path / "acts.npy", DATA.numpy())
    argv = [
        "sweep",
        str(tmp_path / "acts.npy"),
        "--out",
        str(tmp_path / "sw"),
        "--arch",
        "topk,softsae",
        "--k",
        "3,4",
        "--steps",
        "4",
        "--batch-size",
        "64",
        "--n-latents",
        str(F),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(argv) == 0
    names = sorted(p.name for p in (tmp_path / "sw").iterdir())
    assert names == ["softsae-k3", "softsae-k4", "topk-k3", "topk-k4"]
    for name in names:
        load_sae(tmp_path / "sw" / name)
    assert main([*argv[:5], "topk,nope", *argv[6:]]) == 2
    assert "nope" in capsys.readouterr().err
