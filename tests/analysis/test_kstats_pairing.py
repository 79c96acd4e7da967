import json
import logging

import numpy as np
import pytest
import torch

from softsae_vision.analysis.kstats import k_maps, resolve_quantity
from softsae_vision.analysis.pairing import pair
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae import TopKSAE


def test_k_hat_maps_match_predict_k(fx):
    p = pair(fx.soft_run, fx.store)
    km = k_maps(p.sae, p.store, p.layer, chunk_images=3)
    assert km.quantity == "k_hat" and km.per_patch.shape == (8, 4, 4) and km.cls is None
    acts = torch.from_numpy(np.array(p.store.activations(p.layer), dtype=np.float32))
    with torch.no_grad():
        expected = p.sae.predict_k(acts[5, 1:]).numpy().reshape(4, 4)  # token 0 is CLS
    np.testing.assert_allclose(km.per_patch[5], expected, rtol=1e-5)
    np.testing.assert_allclose(km.per_image, km.per_patch.mean((1, 2)), rtol=1e-6)
    assert km.per_patch.min() >= 1 and km.per_patch.max() <= p.sae.k_max


def test_topk_l0_is_flat_and_cls_is_optional(fx):
    p = pair(fx.topk_run, fx.store)
    km = k_maps(p.sae, p.store, p.layer, with_cls=True, rows=np.array([6, 2]))
    assert km.quantity == "l0" and km.rows.tolist() == [6, 2]
    assert np.all(km.per_patch == 4) and np.all(km.cls == 4)


def test_softsae_trained_on_all_tokens_reads_cls(fx):
    p = pair(fx.soft_all_run, fx.store)
    assert p.trained_on == "all" and p.saw("cls") and p.saw("patch")
    km = k_maps(p.sae, p.store, p.layer, with_cls=True)
    assert km.cls.shape == (8,)


def test_quantity_checks():
    topk = TopKSAE(8, 16, k=2)
    assert resolve_quantity(topk) == "l0"
    with pytest.raises(SoftSAEError, match="needs a SoftSAE"):
        resolve_quantity(topk, "k_hat")
    with pytest.raises(SoftSAEError):
        resolve_quantity(topk, "banana")


def test_pairing_defaults_to_the_trained_layer(fx):
    p = pair(fx.soft_run, fx.store)
    assert p.layer == 5 and p.trained_on == "patch" and not p.saw("cls") and p.is_softsae
    assert p.name == "run_softsae_patch"
    assert pair(fx.soft_run, fx.store, layer=1).layer == 1  # same width: allowed


def test_mismatched_width_is_a_clear_error(fx, tmp_path):
    wide = TopKSAE(128, 16, k=2)
    wide.save(tmp_path / "wide")
    with pytest.raises(SoftSAEError, match="d_model 64"):
        pair(tmp_path / "wide", fx.store, layer=-1)


def test_no_patch_tokens_is_a_clear_error(fx):
    p = pair(fx.soft_run, fx.cls_store)
    with pytest.raises(SoftSAEError, match="patch"):
        p.require_patches("k maps")
    with pytest.raises(SoftSAEError, match="no patch tokens"):
        k_maps(p.sae, p.store, p.layer)


def test_non_softsae_is_a_clear_error_where_k_hat_is_needed(fx):
    with pytest.raises(SoftSAEError, match="needs a SoftSAE"):
        pair(fx.topk_run, fx.store).require_softsae("k̂ maps")


def test_drift_in_backbone_is_logged(fx, tmp_path, caplog):
    run = tmp_path / "run"
    pair(fx.soft_run, fx.store).sae.save(run)
    config = json.loads((fx.soft_run / "config.json").read_text())
    config["data"]["backbone"] = "timm/other"
    (run / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        pair(run, fx.store)
    assert "timm/other" in caplog.text
