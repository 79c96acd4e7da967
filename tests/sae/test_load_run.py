"""load_run: the one reader of a run directory (config.json and weights)."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from softsae_vision import SoftSAEError, load_run
from softsae_vision.sae import Run, SoftSAE, TopKSAE, load_sae

D, F = 16, 64


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    sae = SoftSAE(D, F, k=4)
    data = {"kind": "store", "layer": 6, "tokens": "patch"}
    sae.save(tmp_path / "run", extra_config={"data": data, "status": "complete"})
    return tmp_path / "run", sae


def test_load_run_gives_the_sae_its_config_and_folder(run_dir):
    path, sae = run_dir
    run = load_run(path)
    assert isinstance(run, Run) and isinstance(run.sae, SoftSAE)
    assert run.dir == path and run.config == json.loads((path / "config.json").read_text())
    assert run.data == {"kind": "store", "layer": 6, "tokens": "patch"}
    x = torch.randn(5, D)
    assert torch.equal(run.sae.encode(x), sae.eval().encode(x))
    assert not run.sae.training


def test_load_run_of_the_weights_file_names_the_folder(run_dir):
    path, _ = run_dir
    assert load_run(path / "sae.safetensors").dir == path


def test_run_is_frozen(run_dir):
    run = load_run(run_dir[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.dir = run_dir[0].parent  # type: ignore[misc]


def test_load_sae_is_load_run_sae(run_dir):
    path, _ = run_dir
    a, b = load_sae(path), load_run(path).sae
    assert type(a) is type(b) and torch.equal(a.W_dec, b.W_dec)


def test_missing_data_block_reads_as_empty(tmp_path):
    TopKSAE(D, F, k=4).save(tmp_path / "r")
    assert load_run(tmp_path / "r").data == {}


@pytest.mark.parametrize(
    ("text", "match"),
    [("{not json", "damaged"), ("[1, 2]", "not an SAE config")],
)
def test_damaged_config_is_one_error_naming_the_file(run_dir, text, match):
    path, _ = run_dir
    (path / "config.json").write_text(text)
    with pytest.raises(SoftSAEError, match=match) as err:
        load_run(path)
    assert "config.json" in str(err.value)


def test_unfinished_run_is_refused(run_dir):
    path, _ = run_dir
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "status": "running"}))
    with pytest.raises(SoftSAEError, match="unfinished"):
        load_run(path)


def test_not_a_run(tmp_path):
    with pytest.raises(SoftSAEError, match="not an SAE run"):
        load_run(tmp_path)


def test_imported_file_gets_a_config_with_its_provenance(tmp_path):
    folder = tmp_path / "blocks.6"
    folder.mkdir()
    cfg = {
        "d_in": D,
        "d_sae": F,
        "architecture": "topk",
        "k": 4,
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "dtype": "float32",
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    weights = {
        "W_enc": torch.randn(D, F),
        "b_enc": torch.zeros(F),
        "W_dec": torch.randn(F, D),
        "b_dec": torch.zeros(D),
    }
    save_file(weights, folder / "sae.safetensors")
    run = load_run(folder)
    assert isinstance(run.sae, TopKSAE) and run.dir == folder
    assert run.config["architecture"] == "topk" and run.config["d_in"] == D
    assert run.data == {"kind": "imported"} and run.config["imported_from"]
