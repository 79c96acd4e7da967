"""What an SAE declares about itself (predicts k, target L0, calibration) and its config."""

import dataclasses
import json

import pytest
import torch

from softsae_vision import SoftSAEError
from softsae_vision.sae import (
    ARCH_CONFIGS,
    SAE_REGISTRY,
    BaseSAE,
    BatchTopKSAE,
    MatryoshkaConfig,
    MatryoshkaSAE,
    ReLUSAE,
    SoftSAE,
    SoftSAEConfig,
    TopKConfig,
    TopKSAE,
    load_sae,
    register_sae,
)

D, F = 16, 64


@pytest.mark.parametrize(
    ("sae", "predicts", "target", "ceiling"),
    [
        (SoftSAE(D, F, k=4, k_max=12), True, 4.0, 12.0),
        (TopKSAE(D, F, k=5), False, 5.0, 5.0),
        (BatchTopKSAE(D, F, k=6), False, 6.0, 6.0),
        (MatryoshkaSAE(D, F, k=7), False, 7.0, 7.0),
        (ReLUSAE(D, F), False, None, None),
    ],
)
def test_capabilities(sae, predicts, target, ceiling):
    assert sae.predicts_k is predicts and sae.calibrates_k is predicts
    assert sae.target_l0 == target and sae.k_ceiling == ceiling
    x = torch.randn(3, D)
    if predicts:
        assert sae.predict_k(x).shape == (3,)
    else:
        with pytest.raises(SoftSAEError, match="does not predict k"):
            sae.predict_k(x)
        assert sae.calibrate([sae.normalize(x)]) is None


def test_soft_calibrate_fits_the_offset_to_k():
    torch.manual_seed(0)
    sae = SoftSAE(D, F, k=6, estimator="lean", estimator_hidden=8)
    with torch.no_grad():
        sae.b_enc.fill_(5.0)  # every latent positive: realised L0 = ⌊k̂⌋
    xn = [torch.randn(64, D)]
    offset = sae.calibrate(xn)
    assert offset == pytest.approx(float(sae.k_calibration))
    assert (sae.encode_normalized(xn[0]) != 0).sum(-1).float().mean() == pytest.approx(6, abs=0.5)


def test_select_takes_only_the_latents():
    torch.manual_seed(0)
    xn = torch.randn(8, D)
    lean = SoftSAE(D, F, k=4, estimator="lean", estimator_hidden=8)
    z = lean.pre_acts(xn)
    assert torch.equal(lean.select(z), lean.encode_normalized(xn))
    k_hat = torch.full((8,), 3.0)
    assert ((lean.select(z, k_hat) != 0).sum(-1) <= 3).all()
    paper = SoftSAE(D, F, k=4)
    with pytest.raises(SoftSAEError, match="reads the input"):
        paper.select(paper.pre_acts(xn))
    assert paper.select(paper.pre_acts(xn), paper.predict_k_normalized(xn)).shape == (8, F)
    topk = TopKSAE(D, F, k=4)
    assert torch.equal(topk.select(topk.pre_acts(xn)), topk.encode_normalized(xn))


def test_config_round_trip_and_resolved_defaults():
    sae = SoftSAE(D, F, k=4, estimator="lean")
    cfg = sae.config
    assert isinstance(cfg, SoftSAEConfig) and cfg.k_max == 16.0 and cfg.estimator_hidden == 64
    again = SoftSAE.from_config(D, F, cfg)
    assert again.hparams() == sae.hparams() == cfg.to_dict()
    m = MatryoshkaSAE(D, F, k=4, group_fractions=[0.25, 0.25])
    assert m.config == MatryoshkaConfig(k=4, group_fractions=(0.25, 0.25))
    assert m.hparams()["group_fractions"] == [0.25, 0.25]  # JSON-able
    with pytest.raises(SoftSAEError, match="takes a TopKConfig"):
        TopKSAE.from_config(D, F, SoftSAEConfig())


def test_builtin_configs_match_the_registry_and_the_constructors():
    for name, config_class in ARCH_CONFIGS.items():
        cls = SAE_REGISTRY[name]
        assert cls.config_class is config_class
        sae = cls.from_config(D, F)  # every default builds
        assert set(sae.hparams()) == {f.name for f in dataclasses.fields(config_class)}


def test_config_rejects_a_choice_outside_its_literal():
    with pytest.raises(SoftSAEError, match="estimator must be one of paper, lean"):
        SoftSAEConfig(estimator="wide")  # type: ignore[arg-type]
    with pytest.raises(SoftSAEError, match="unknown hyperparameter.*bogus"):
        TopKConfig.from_dict({"k": 3, "bogus": 1})


def test_old_config_without_newer_hparams_still_loads(tmp_path):
    sae = SoftSAE(D, F, k=4)
    sae.save(tmp_path / "r")
    path = tmp_path / "r" / "config.json"
    config = json.loads(path.read_text())
    added_later = ("k_signal", "estimator_lr_scale", "soft_phase_k", "hard_phase_estimator")
    for name in added_later:  # added after the first release (the weights fix the estimator)
        del config["hparams"][name]
    path.write_text(json.dumps(config))
    loaded = load_sae(tmp_path / "r")
    assert isinstance(loaded, SoftSAE)
    assert loaded.k_signal == "soft" and loaded.estimator_lr_scale == 1.0
    assert (loaded.soft_phase_k, loaded.hard_phase_estimator) == ("estimated", "frozen")


def test_register_sae_refuses_a_taken_name():
    with pytest.raises(SoftSAEError, match="'topk' is already registered"):

        @register_sae("topk")
        class Impostor(TopKSAE):
            pass

    assert SAE_REGISTRY["topk"] is TopKSAE
    register_sae("topk")(TopKSAE)  # the same class again (a reloaded module) is fine


def test_an_architecture_without_a_config_class_still_loads(tmp_path):
    name = "test-capabilities-plain"

    @register_sae(name)
    class Plain(BaseSAE):
        def __init__(self, d_in, n_latents, width=2, seed=None):
            super().__init__(d_in, n_latents, seed)
            self.width = width

        def hparams(self):
            return {"width": self.width}

        def select(self, z_BF):
            return z_BF

    try:
        Plain(D, F, width=3).save(tmp_path / "r")
        loaded = load_sae(tmp_path / "r")
        assert isinstance(loaded, Plain) and loaded.width == 3
        assert loaded.target_l0 is None and not loaded.predicts_k
    finally:
        del SAE_REGISTRY[name]
