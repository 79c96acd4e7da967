"""hf:// paths against a real Hugging Face cache layout built on disk, loaded offline."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from softsae_vision import SoftSAEError, TopKSAE, load_sae
from softsae_vision.cli import main
from softsae_vision.hub import model_card, parse_hub_path, push_to_hub, stage

D, NF = 8, 24
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hf_cache(cache, repo_id, files, commit=COMMIT):
    """Lay files out as huggingface_hub does: blobs, refs/main, snapshots/<commit> symlinks."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for rel, src in files.items():
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return repo


@pytest.fixture
def trained(tmp_path):
    sae = TopKSAE(D, NF, k=3, seed=1)
    sae.fit_normalization(torch.randn(256, D) * 2 + 1)
    run = tmp_path / "run"
    sae.save(
        run,
        extra_config={
            "data": {
                "kind": "store",
                "backbone": "timm/test_vit",
                "layer": 2,
                "tokens": "patch",
                "n_rows": 256,
            }
        },
    )
    (run / "metrics.jsonl").write_text(json.dumps({"step": 9, "fvu": 0.25, "l0_mean": 3.0}) + "\n")
    return sae, run


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_parse_hub_paths():
    assert parse_hub_path("hf://org/repo") == parse_hub_path("hf:/org/repo")
    ref = parse_hub_path("hf://org/repo/layer_6/patch@v1.0")
    assert (ref.repo_id, ref.subdir, ref.revision) == ("org/repo", "layer_6/patch", "v1.0")
    for bad in ("hf://org", "hf://org/../x", "org/repo"):
        with pytest.raises(SoftSAEError, match="hf://ORG/REPO"):
            parse_hub_path(bad)


def test_load_from_cached_snapshot_offline(trained, tmp_path, offline_cache):
    sae, run = trained
    staged = stage(run, tmp_path / "staged")
    files = {name: staged / name for name in ("sae.safetensors", "config.json", "README.md")}
    files |= {f"layer2/{name}": staged / name for name in ("sae.safetensors", "config.json")}
    hf_cache(offline_cache, "org/vit-saes", files)
    x = torch.randn(16, D)
    for uri in ("hf://org/vit-saes", f"hf://org/vit-saes/layer2@{COMMIT}"):
        loaded = load_sae(uri)
        assert isinstance(loaded, TopKSAE)
        assert torch.equal(loaded.encode(x), sae.encode(x))


def test_missing_snapshot_names_repo_and_fix(offline_cache):
    with pytest.raises(SoftSAEError, match=r"org/absent.*HF_HUB_OFFLINE.*connected machine"):
        load_sae("hf://org/absent")


def test_missing_subdir(trained, tmp_path, offline_cache):
    _, run = trained
    staged = stage(run, tmp_path / "staged")
    hf_cache(offline_cache, "org/r", {"config.json": staged / "config.json"})
    with pytest.raises(SoftSAEError, match="no 'nope'"):
        load_sae("hf://org/r/nope")


def test_model_card_and_staged_files(trained, tmp_path):
    _, run = trained
    staged = stage(run, tmp_path / "staged", repo_id="org/vit-saes")
    assert sorted(p.name for p in staged.iterdir()) == [
        "README.md",
        "config.json",
        "sae.safetensors",
    ]
    card = (staged / "README.md").read_text()
    for needle in (
        "topk",
        "timm/test_vit",
        "layer 2",
        "| K (target mean L0) | 3 |",
        "| fvu | 0.25 |",
        "arXiv:2605.06610",
        "library_name: softsae-vision",
        'load_sae("hf://org/vit-saes")',
    ):
        assert needle in card, needle
    assert "No training metrics" in model_card({"architecture": "relu", "hparams": {}})


def test_push_refuses_offline_with_a_fix(trained, monkeypatch):
    sae, run = trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SoftSAEError, match="unset it"):
        sae.push_to_hub("org/repo")
    assert main(["push", str(run), "org/repo"]) == 2
    with pytest.raises(SoftSAEError, match="ORG/REPO"):
        push_to_hub(run, "not a repo")


def test_cli_eval_accepts_hub_runs(trained, tmp_path, offline_cache, capsys):
    _, run = trained
    staged = stage(run, tmp_path / "staged")
    hf_cache(
        offline_cache, "org/vit-saes", {n: staged / n for n in ("sae.safetensors", "config.json")}
    )
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(64, D)).astype("float32"))
    assert main(["eval", "hf://org/vit-saes", str(tmp_path / "acts.npy"), "--json"]) == 0
    assert "fvu" in json.loads(capsys.readouterr().out)
    assert main(["eval", "hf://org/absent", str(tmp_path / "acts.npy")]) == 2
    assert "org/absent" in capsys.readouterr().err


def test_cli_import_writes_a_native_run(tmp_path):
    sd = {
        "encoder.weight": torch.randn(NF, D),
        "encoder.bias": torch.zeros(NF),
        "decoder.weight": torch.randn(D, NF),
        "b_dec": torch.zeros(D),
        "k": torch.tensor(4),
        "threshold": torch.tensor(-1.0),
    }
    torch.save(sd, tmp_path / "ae.pt")
    assert main(["import", str(tmp_path / "ae.pt"), "--out", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["imported_from"]["format"] == "dictionary_learning:topk"
    x = torch.randn(5, D)
    assert torch.equal(load_sae(tmp_path / "run").encode(x), load_sae(tmp_path / "ae.pt").encode(x))
    assert main(["import", str(tmp_path / "ae.pt"), "--out", str(tmp_path / "run")]) == 2
    # any command taking a RUN also reads the foreign file directly (imported on the fly)
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(32, D)).astype("float32"))
    assert main(["eval", str(tmp_path / "ae.pt"), str(tmp_path / "acts.npy"), "--json"]) == 0
    shutil.rmtree(tmp_path / "run")


def test_cli_kmaps_reads_a_hub_run(tmp_path, offline_cache):
    """The analysis commands (here kmaps) read hf:// runs through the same one resolver."""
    from tests._fixtures_render import make_run, make_store

    store = make_store(tmp_path / "fx")
    run = make_run(tmp_path / "fx", store, "softsae", steps=10)
    hf_cache(
        offline_cache,
        "org/tiny",
        {f"soft/{n}": run / n for n in ("sae.safetensors", "config.json")},
    )
    out = tmp_path / "k"
    args = ["kmaps", "hf://org/tiny/soft", str(store), "--out", str(out), "--no-progress"]
    assert main([*args, "--n-grid", "2", "--n-single", "0", "--no-pdf"]) == 0
    assert (out / "kmaps.json").is_file()
