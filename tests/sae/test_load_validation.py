"""load_sae turns every malformed or inconsistent run file into one SoftSAEError."""

import json

import pytest
import torch
from safetensors.torch import save_file

from softsae_vision import SoftSAEError
from softsae_vision.sae import SoftSAE, TopKSAE, load_sae

D, F = 8, 24


@pytest.fixture
def run(tmp_path):
    SoftSAE(D, F, k=3, estimator="lean").save(tmp_path / "r")
    return tmp_path / "r"


def _edit_config(run, **changes):
    config = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            config.pop(key)
        else:
            config[key] = value
    (run / "config.json").write_text(json.dumps(config))


def _one_line_naming(err, path, fix="train the SAE again"):
    message = str(err.value)
    assert "\n" not in message and str(path) in message and fix in message, message


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b"\xff" * 64 + b[64:]],
    ids=["truncated", "empty", "garbled-header"],
)
def test_damaged_weights(run, damage):
    path = run / "sae.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SoftSAEError, match="damaged") as err:
        load_sae(run)
    _one_line_naming(err, path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"architecture": "softsae", "d_in": 8', "damaged"),
        (b"\xff\xfe{}", "damaged"),
        ("[1, 2]", "not an SAE config"),
    ],
)
def test_damaged_config(run, text, match):
    path = run / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SoftSAEError, match=match) as err:
        load_sae(run)
    _one_line_naming(err, path)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(architecture=...), "no 'architecture'"),
        (dict(d_in=...), "no 'd_in'"),
        (dict(d_in="8"), "'d_in' must be a positive integer"),
        (dict(n_latents=0), "'n_latents' must be a positive integer"),
        (dict(n_latents=True), "'n_latents' must be a positive integer"),
        (dict(architecture=3), "'architecture' must be a string"),
        (dict(hparams=[1]), "'hparams' must be a JSON object"),
        (dict(hparams={"k": 3, "bogus": 1}), "hparams do not fit"),
        (dict(hparams={"k": 99}), "hparams do not fit"),
        (dict(schema_version="1"), "'schema_version' must be an integer"),
        (dict(architecture="nope"), "unknown SAE architecture"),
    ],
)
def test_malformed_config_keys(run, changes, match):
    _edit_config(run, **changes)
    with pytest.raises(SoftSAEError, match=match) as err:
        load_sae(run)
    assert "\n" not in str(err.value) and str(run / "config.json") in str(err.value)


def test_non_finite_weights(run):
    path = run / "sae.safetensors"
    sae = load_sae(run)
    state = {k: v.clone() for k, v in sae.state_dict().items()}
    state["W_dec"][3, 1] = float("nan")
    save_file(state, str(path))
    with pytest.raises(SoftSAEError, match=r"NaN or inf values \(in W_dec\)") as err:
        load_sae(run)
    _one_line_naming(err, path)


def test_weights_of_another_size_name_the_tensors(tmp_path):
    TopKSAE(D, F, k=3).save(tmp_path / "r")
    save_file(
        {k: v.contiguous() for k, v in TopKSAE(D, F + 4, k=3).state_dict().items()},
        str(tmp_path / "r" / "sae.safetensors"),
    )
    with pytest.raises(
        SoftSAEError, match=r"W_enc has shape \(28, 8\) where the model has \(24, 8\)"
    ):
        load_sae(tmp_path / "r")


def test_genuine_run_still_loads(run):
    sae = load_sae(run)
    assert isinstance(sae, SoftSAE) and torch.isfinite(sae.W_enc).all()
