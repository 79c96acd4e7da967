"""A run directory's life: safe checkpoints, one writer, finite guard, strict resume."""

import json
import os
import pickle

import pytest
import torch

from softsae_vision import SoftSAEError
from softsae_vision._io import folder_lock
from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.synthetic import SyntheticSparseData
from softsae_vision.sae import SoftSAE, TopKSAE
from softsae_vision.training import TrainConfig, train
from softsae_vision.training import trainer as trainer_module
from softsae_vision.training.run_dir import CHECKPOINT_FILE, load_checkpoint
from softsae_vision.training.trainer import TrainingDivergedError

D, F = 16, 48
DATA, _ = SyntheticSparseData(d=D, n_atoms=32, max_active=4).generate(1200, seed=3)


def cfg(**kw):
    base = dict(steps=12, batch_size=32, lr=3e-3, log_every=1, checkpoint_every=4, device="cpu")
    return TrainConfig(**{**base, **kw})


class _Wrapped:
    """An ArraySource that poisons (NaN) or cuts (KeyboardInterrupt, like a kill) one batch."""

    def __init__(self, inner, at, action, describe=None):
        self.inner, self.at, self.action = inner, at, action
        self.d = inner.d
        self._describe = describe

    def __len__(self):
        return len(self.inner)

    def sample(self, n, seed):
        return self.inner.sample(n, seed)

    def describe(self):
        return self._describe or self.inner.describe()

    def iter_eval(self, batch_size):
        return self.inner.iter_eval(batch_size)

    def batches(self, batch_size, seed, start=0):
        for i, batch in enumerate(self.inner.batches(batch_size, seed, start)):
            if start + i == self.at:
                if self.action == "kill":
                    raise KeyboardInterrupt
                batch = batch.clone()
                batch[3, 2] = float("nan")
            yield batch


def _cut_run(run, at=6, config=None):
    """An unfinished run with a checkpoint (at step 4 with the default settings)."""
    with pytest.raises(KeyboardInterrupt):
        train(
            TopKSAE(D, F, k=4),
            _Wrapped(ArraySource(DATA), at, "kill"),
            config or cfg(),
            run_dir=run,
            progress=False,
        )


# ------------------------------------------------------------------ 1. safe checkpoints
def test_genuine_checkpoint_loads_with_weights_only(tmp_path):
    _cut_run(tmp_path / "r")
    state = torch.load(tmp_path / "r" / CHECKPOINT_FILE, weights_only=True)
    assert state["step"] == 4 and set(state) >= {"model", "optimizer", "torch_rng"}
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT_FILE)["step"] == 4
    result = train(
        TopKSAE(D, F, k=4), DATA, cfg(), run_dir=tmp_path / "r", resume=True, progress=False
    )
    assert result.steps_run == 8


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    run = tmp_path / "r"
    _cut_run(run)
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    torch.save({"step": 4, "x": exploit}, run / CHECKPOINT_FILE)
    with pytest.raises(SoftSAEError, match="refused") as err:
        train(TopKSAE(D, F, k=4), DATA, cfg(), run_dir=run, resume=True, progress=False)
    assert not marker.exists()
    assert "\n" not in str(err.value) and str(run / CHECKPOINT_FILE) in str(err.value)
    # the same with a plain pickle file
    (run / CHECKPOINT_FILE).write_bytes(pickle.dumps(exploit))
    with pytest.raises(SoftSAEError, match="refused"):
        train(TopKSAE(D, F, k=4), DATA, cfg(), run_dir=run, resume=True, progress=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b"",
        lambda b: bytes(x ^ 0x5A for x in b[:4000]),
    ],
    ids=["truncated", "empty", "garbled"],
)
def test_damaged_checkpoint_names_the_file_and_the_fix(tmp_path, damage):
    run = tmp_path / "r"
    _cut_run(run)
    path = run / CHECKPOINT_FILE
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SoftSAEError) as err:
        train(TopKSAE(D, F, k=4), DATA, cfg(), run_dir=run, resume=True, progress=False)
    message = str(err.value)
    assert str(path) in message and "delete" in message and "\n" not in message


def test_checkpoint_of_another_shape_says_which_tensors_differ(tmp_path):
    run = tmp_path / "r"
    _cut_run(run)
    other = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        train(
            TopKSAE(D, F + 8, k=4),
            _Wrapped(ArraySource(DATA), 6, "kill"),
            cfg(),
            run_dir=other,
            progress=False,
        )
    (run / CHECKPOINT_FILE).write_bytes((other / CHECKPOINT_FILE).read_bytes())
    with pytest.raises(SoftSAEError, match=r"W_enc has shape \(56, 16\) where the model has"):
        train(TopKSAE(D, F, k=4), DATA, cfg(), run_dir=run, resume=True, progress=False)


# ------------------------------------------------------------------ 2. one writer
def test_second_train_into_a_locked_run_fails_naming_the_holder(tmp_path):
    run = tmp_path / "r"
    with (
        folder_lock(run, "training run"),
        pytest.raises(
            SoftSAEError, match=f"in use by another training run \\(pid {os.getpid()} on host"
        ),
    ):
        train(TopKSAE(D, F, k=4), DATA, cfg(), run_dir=run, progress=False)
    assert not (run / "config.json").exists()
    train(TopKSAE(D, F, k=4), DATA, cfg(steps=2), run_dir=run, progress=False)  # released


# ------------------------------------------------------------------ 3. seeds
def test_soft_sae_init_ignores_the_global_generator():
    torch.manual_seed(1)
    a = SoftSAE(D, F, k=4, estimator="lean", seed=5)
    torch.manual_seed(2)
    torch.rand(7)
    b = SoftSAE(D, F, k=4, estimator="lean", seed=5)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    c = SoftSAE(D, F, k=4, estimator="lean", seed=6)
    assert not torch.equal(a.k_estimator[0].weight, c.k_estimator[0].weight)


# ------------------------------------------------------------------ 4. finite guard
def _status(run):
    return json.loads((run / "config.json").read_text())["status"]


def test_diverging_run_stops_unfinished(tmp_path):
    run = tmp_path / "r"
    with pytest.raises(TrainingDivergedError, match="diverged") as err:
        train(TopKSAE(D, F, k=4), DATA, cfg(lr=1e30, warmup_frac=0), run_dir=run, progress=False)
    assert "\n" not in str(err.value) and str(run) in str(err.value)
    assert _status(run) == "running" and not (run / "sae.safetensors").exists()
    if (run / CHECKPOINT_FILE).exists():
        load_checkpoint(run / CHECKPOINT_FILE)  # raises if non-finite
    for line in (run / "metrics.jsonl").read_text().splitlines():
        assert all(v == v for v in json.loads(line).values() if isinstance(v, float))


def test_nan_in_data_mid_run_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "r"
    source = _Wrapped(ArraySource(DATA), 9, "nan")
    with pytest.raises(TrainingDivergedError) as err:
        train(TopKSAE(D, F, k=4), source, cfg(log_every=5), run_dir=run, progress=False)
    message = str(err.value)
    assert "NaN or inf" in message and "steps 8-10" in message and "(step 8)" in message
    assert str(run / CHECKPOINT_FILE) in message
    assert load_checkpoint(run / CHECKPOINT_FILE)["step"] == 8
    assert _status(run) == "running" and not (run / "sae.safetensors").exists()


def test_finite_guard_reads_the_device_only_at_boundaries(tmp_path, monkeypatch):
    calls = []
    original = trainer_module.Trainer.nonfinite

    def counting(self, check_weights):
        calls.append((self.step, check_weights))
        return original(self, check_weights)

    monkeypatch.setattr(trainer_module.Trainer, "nonfinite", counting)
    train(
        TopKSAE(D, F, k=4),
        DATA,
        cfg(steps=30, log_every=10, checkpoint_every=15),
        run_dir=tmp_path / "r",
        progress=False,
    )
    # after steps 0, 10, 20 (log), 15 and 30 (checkpoint: weights too), and once at the end
    assert calls == [(1, False), (11, False), (15, True), (21, False), (30, True), (30, True)]


# ------------------------------------------------------------------ 5. strict resume
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(seed=1), "training.seed (--seed)"),
        (dict(batch_size=16), "training.batch_size (--batch-size)"),
        (dict(steps=20), "training.steps (--steps)"),
        (dict(lr=1e-3), "training.lr (--lr)"),
        (dict(hard_frac=0.3), "training.hard_frac (--hard-frac)"),
        (dict(warmup_frac=0.1), "training.warmup_frac"),
        ("data", "data.path (DATA)"),
        ("layer", "data.layer (--layer)"),
        ("tokens", "data.tokens (--tokens)"),
    ],
)
def test_resume_refuses_changed_settings_and_keeps_the_config(tmp_path, change, field):
    run = tmp_path / "r"
    store_like = {"kind": "store", "path": "/s", "layer": 3, "tokens": "patch"}
    _cut_run_described(run, store_like)
    before = (run / "config.json").read_text()
    config, described = cfg(), dict(store_like)
    if change == "data":
        described["path"] = "/other"
    elif change == "layer":
        described["layer"] = 4
    elif change == "tokens":
        described["tokens"] = "cls"
    else:
        config = cfg(**change)
    source = _Wrapped(ArraySource(DATA), -1, "nan", describe=described)
    with pytest.raises(SoftSAEError, match="cannot resume") as err:
        train(TopKSAE(D, F, k=4), source, config, run_dir=run, resume=True, progress=False)
    assert field in str(err.value)
    assert (run / "config.json").read_text() == before


def _cut_run_described(run, described):
    source = _Wrapped(ArraySource(DATA), 6, "kill", describe=described)
    with pytest.raises(KeyboardInterrupt):
        train(TopKSAE(D, F, k=4), source, cfg(), run_dir=run, progress=False)


def test_resume_may_change_device_and_checkpoint_frequency(tmp_path):
    run = tmp_path / "r"
    _cut_run(run)
    before = json.loads((run / "config.json").read_text())
    train(
        TopKSAE(D, F, k=4), DATA, cfg(checkpoint_every=2), run_dir=run, resume=True, progress=False
    )
    after = json.loads((run / "config.json").read_text())
    assert after == {**before, "status": "complete"}


# ------------------------------------------------------------------ 8. kills during the first write
@pytest.mark.parametrize("resume", [False, True])
def test_a_kill_during_the_first_config_write_is_recoverable(tmp_path, resume):
    run = tmp_path / "r"
    run.mkdir()
    (run / ".lock").write_text("")  # what a process killed while writing config.json leaves
    (run / ".config.json.x7f3k2.tmp").write_text('{"schema_version": 1, "arch')
    train(TopKSAE(D, F, k=4), DATA, cfg(steps=4), run_dir=run, resume=resume, progress=False)
    assert _status(run) == "complete"
    assert not [p for p in run.rglob("*.tmp")]


def test_resume_into_a_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SoftSAEError, match="not a run to resume"):
        train(TopKSAE(D, F, k=4), DATA, cfg(steps=2), run_dir=tmp_path, resume=True, progress=False)
