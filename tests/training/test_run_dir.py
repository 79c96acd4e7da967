"""training.run_dir writes a run's config.json: once at the start, once (complete) at the end."""

import json

from softsae_vision._io import write_json_atomic
from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.synthetic import SyntheticSparseData
from softsae_vision.sae import TopKSAE, load_run
from softsae_vision.sae.base import BaseSAE
from softsae_vision.training import TrainConfig, train
from softsae_vision.training import run_dir as run_dir_module

D, F = 16, 32


def test_config_is_written_at_start_and_once_at_the_end(tmp_path, monkeypatch):
    writes = []

    def spy(path, obj, **kw):
        writes.append((path.name, obj.get("status")))
        write_json_atomic(path, obj, **kw)

    monkeypatch.setattr(run_dir_module, "write_json_atomic", spy)
    saved = []
    monkeypatch.setattr(BaseSAE, "save", lambda self, *a, **k: saved.append(a))  # not used
    data, _ = SyntheticSparseData(d=D, n_atoms=16, max_active=3).generate(256, seed=0)
    cfg = TrainConfig(steps=4, batch_size=32, log_every=2, checkpoint_every=2, device="cpu")
    train(TopKSAE(D, F, k=3), ArraySource(data), cfg, run_dir=tmp_path / "run", progress=False)
    assert writes == [("config.json", "running"), ("config.json", "complete")]
    assert saved == []
    run = load_run(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run.config == config and config["status"] == "complete"
    assert config["training"]["steps"] == 4 and config["architecture"] == "topk"
