import json

import pytest
import torch

from softsae_vision import SoftSAEError
from softsae_vision.sae import (
    SAE_REGISTRY,
    BatchTopKSAE,
    MatryoshkaSAE,
    ReLUSAE,
    SoftSAE,
    TopKSAE,
    load_sae,
)
from softsae_vision.sae.base import geometric_median

D, F = 16, 64


def make_all(d=D, f=F):
    return [
        SoftSAE(d, f, k=4),
        SoftSAE(d, f, k=4, estimator="lean", estimator_hidden=8),
        SoftSAE(d, f, k=4, estimator="priced", estimator_hidden=8),
        TopKSAE(d, f, k=4),
        BatchTopKSAE(d, f, k=4),
        MatryoshkaSAE(d, f, k=4),
        ReLUSAE(d, f),
    ]


def test_registry_names_every_architecture():
    assert set(SAE_REGISTRY) >= {"softsae", "topk", "batchtopk", "matryoshka", "relu"}


def test_fit_normalization_centres_and_scales():
    x = torch.randn(2000, D) * 3 + 5
    sae = TopKSAE(D, F, k=4)
    sae.fit_normalization(x)
    xn = sae.normalize(x)
    assert xn.mean(0).abs().max() < 1e-4
    assert xn.pow(2).sum(-1).mean() == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(sae.denormalize(xn), x, atol=1e-4)


def test_geometric_median_resists_outliers():
    pts = torch.cat([torch.zeros(50, 3), torch.full((5, 3), 1000.0)])
    assert geometric_median(pts).abs().max() < 1e-3  # the mean would be ~91


def test_init_ties_encoder_to_decoder_without_sharing_storage():
    sae = TopKSAE(D, F, k=4)
    assert torch.equal(sae.W_enc, sae.W_dec)
    assert sae.W_enc.data_ptr() != sae.W_dec.data_ptr()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(F))


@pytest.mark.parametrize("sae", make_all(), ids=lambda s: s.architecture)
def test_save_load_round_trip_gives_identical_outputs(tmp_path, sae):
    x = torch.randn(32, D) * 2 + 1
    sae.fit_normalization(x)
    with torch.no_grad():
        sae.W_enc.add_(0.1 * torch.randn_like(sae.W_enc))
    sae.eval()
    sae.save(tmp_path / "run")
    loaded = load_sae(tmp_path / "run")
    assert type(loaded) is type(sae)
    assert loaded.hparams() == sae.hparams()
    out, out2 = sae(x), loaded(x)
    assert torch.equal(out.codes, out2.codes)
    assert torch.allclose(out.x_hat, out2.x_hat)
    assert torch.equal(load_sae(tmp_path / "run" / "sae.safetensors").W_dec, sae.W_dec)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["architecture"] == sae.architecture
    assert config["schema_version"] == 1 and "library_version" in config


@pytest.mark.parametrize("sae", make_all(), ids=lambda s: s.architecture)
def test_interface_shapes(sae):
    x = torch.randn(8, D)
    codes = sae.encode(x)
    assert codes.shape == (8, F) and (codes >= 0).all()
    assert sae.decode(codes).shape == (8, D)
    out = sae(x)
    assert (out.k_hat is not None) == isinstance(sae, SoftSAE)


def test_wrong_width_is_a_clear_error():
    with pytest.raises(SoftSAEError, match=r"shape \(batch, 16\)"):
        TopKSAE(D, F, k=4).encode(torch.randn(3, 15))


def test_bad_k_is_a_clear_error():
    for k in (0, -1, F, F + 5):
        with pytest.raises(SoftSAEError, match="0 < k < n_latents"):
            TopKSAE(D, F, k=k)


def test_load_errors(tmp_path):
    with pytest.raises(SoftSAEError, match="not an SAE run"):
        load_sae(tmp_path)
    TopKSAE(D, F, k=4).save(tmp_path / "r")
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    (tmp_path / "r" / "config.json").write_text(json.dumps({**cfg, "architecture": "nope"}))
    with pytest.raises(SoftSAEError, match="unknown SAE architecture"):
        load_sae(tmp_path / "r")
    (tmp_path / "r" / "config.json").write_text(json.dumps({**cfg, "status": "running"}))
    with pytest.raises(SoftSAEError, match="unfinished"):
        load_sae(tmp_path / "r")
    (tmp_path / "r" / "config.json").write_text("{not json")
    with pytest.raises(SoftSAEError, match="damaged"):
        load_sae(tmp_path / "r")


def test_weights_from_another_architecture_are_refused(tmp_path):
    TopKSAE(D, F, k=4).save(tmp_path / "r")
    soft = SoftSAE(D, F, k=4)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg.update(architecture="softsae", hparams=soft.hparams())
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SoftSAEError, match="does not match architecture"):
        load_sae(tmp_path / "r")


def test_decoder_gradient_projection_and_renorm():
    sae = TopKSAE(D, F, k=4)
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.project_decoder_grad()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-5
    with torch.no_grad():
        sae.W_dec.mul_(3)
    sae.normalize_decoder()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(F), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_initial_dictionary_is_not_the_synthetic_dictionary_of_the_same_seed(seed):
    """An SAE must not start at the ground truth: its init stream is salted, not ``seed``.

    Both used to be ``randn`` from a generator seeded with ``seed``, so every seed-0 SAE on
    seed-0 synthetic data began with the true atoms among its decoder rows.
    """
    from softsae_vision.data.synthetic import SyntheticSparseData

    atoms_AD = SyntheticSparseData(d=D, n_atoms=4 * D, seed=seed).atoms()
    for sae in (TopKSAE(D, F, k=4, seed=seed), SoftSAE(D, F, k=4, seed=seed)):
        cos_FA = torch.nn.functional.normalize(sae.W_dec, dim=1) @ atoms_AD.T
        assert cos_FA.abs().max() < 0.95
