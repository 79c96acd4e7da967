"""Each importer against a plain-torch re-implementation of the source toolkit's forward pass.

State dicts are built here from each toolkit's documented layout (random weights), written in
that toolkit's file format, imported with ``load_sae`` and compared on random inputs.
"""

import io
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from softsae_vision import BatchTopKSAE, ReLUSAE, SoftSAE, SoftSAEError, TopKSAE, load_sae
from softsae_vision.sae.importers import detect_format, import_sae

D, NF, K = 12, 48, 5


def _rand(*shape, scale=0.3):
    return torch.randn(*shape) * scale


def _topk_rows(z, k):
    """Keep the k largest entries of each row (k an int or a (B,) tensor), zero the rest."""
    k = torch.as_tensor(k).expand(z.shape[0])
    vals, idx = z.sort(dim=1, descending=True)
    keep = torch.arange(z.shape[1])[None] < k[:, None]
    return torch.zeros_like(z).scatter(1, idx, vals * keep)


# ----------------------------------------------------------------- dictionary_learning
def _dl_core():
    return {
        "encoder.weight": _rand(NF, D),
        "encoder.bias": _rand(NF, scale=0.05),
        "decoder.weight": _rand(D, NF),
        "b_dec": _rand(D),
    }


def _dl_encode(sd, x):
    return F.relu(
        x @ sd["encoder.weight"].T + sd["encoder.bias"] - sd["b_dec"] @ sd["encoder.weight"].T
    )


def _dl_decode(sd, f):
    return f @ sd["decoder.weight"].T + sd["b_dec"]


def test_paper_softsae_checkpoint(tmp_path):
    """The paper's SoftTopKSAE: normalise, estimate k = clamp(k_max·σ(MLP), 1, F), top-⌊k⌋."""
    hidden = NF
    sd = {
        **_dl_core(),
        "k_estimator.0.weight": _rand(hidden, D),
        "k_estimator.0.bias": _rand(hidden, scale=0.1),
        "k_estimator.2.weight": _rand(1, hidden),
        "k_estimator.2.bias": torch.tensor([0.2]),
        "k": torch.tensor(K, dtype=torch.int32),
        "alpha": torch.tensor(1e-4),
        "k_max": torch.tensor(2 * K + 6, dtype=torch.int32),
        "norm_factor": torch.tensor(3.5),
        "shift_factor": _rand(D, scale=2.0),
    }
    torch.save(sd, tmp_path / "ae.pt")
    sae = load_sae(tmp_path / "ae.pt")
    assert isinstance(sae, SoftSAE) and sae.k_max == 2 * K + 6 and sae.k == K

    x = torch.randn(64, D) * 3 + 1
    xn = (x - sd["shift_factor"]) / sd["norm_factor"]
    h = F.relu(
        xn @ sd["k_estimator.0.weight"].T
        - sd["b_dec"] @ sd["k_estimator.0.weight"].T
        + sd["k_estimator.0.bias"]
    )
    k_hat = torch.sigmoid(h @ sd["k_estimator.2.weight"].T + sd["k_estimator.2.bias"]).squeeze(-1)
    k_hat = (k_hat * sd["k_max"]).clamp(1, NF)
    codes_ref = _topk_rows(_dl_encode(sd, xn), k_hat.long())
    x_hat_ref = _dl_decode(sd, codes_ref) * sd["norm_factor"] + sd["shift_factor"]

    out = sae(x)
    assert torch.allclose(out.k_hat, k_hat, atol=1e-5)
    assert torch.equal(out.codes != 0, codes_ref != 0)
    assert torch.allclose(out.codes, codes_ref, atol=1e-5)
    assert torch.allclose(out.x_hat, x_hat_ref, atol=1e-4)
    assert len(set(out.k_hat.floor().tolist())) > 1  # the test exercises a varying k


def test_paper_checkpoint_without_k_max_is_refused(tmp_path):
    sd = {
        **_dl_core(),
        "k_estimator.0.weight": _rand(NF, D),
        "k_estimator.0.bias": _rand(NF),
        "k_estimator.2.weight": _rand(1, NF),
        "k_estimator.2.bias": _rand(1),
        "k": torch.tensor(K),
        "norm_factor": torch.tensor(1.0),
    }
    torch.save(sd, tmp_path / "ae.pt")
    with pytest.raises(SoftSAEError, match="k_max"):
        load_sae(tmp_path / "ae.pt")


def test_dictionary_learning_topk(tmp_path):
    sd = {**_dl_core(), "k": torch.tensor(K, dtype=torch.int32), "threshold": torch.tensor(0.1)}
    (tmp_path / "config.json").write_text(
        json.dumps({"trainer": {"dict_class": "AutoEncoderTopK"}})
    )
    torch.save(sd, tmp_path / "ae.pt")
    assert detect_format(tmp_path) == "dictionary_learning"
    sae = load_sae(tmp_path)  # the folder holding ae.pt
    assert isinstance(sae, TopKSAE) and sae.k == K
    x = torch.randn(32, D)
    f_ref = _topk_rows(_dl_encode(sd, x), K)  # TopK's forward ignores the threshold
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-6)
    assert torch.allclose(sae(x).x_hat, _dl_decode(sd, f_ref), atol=1e-5)


def test_dictionary_learning_batchtopk_uses_its_threshold(tmp_path):
    sd = {**_dl_core(), "k": torch.tensor(K, dtype=torch.int32), "threshold": torch.tensor(0.12)}
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "BatchTopKSAE"}}))
    torch.save(sd, tmp_path / "ae.pt")
    sae = load_sae(tmp_path / "ae.pt")
    assert isinstance(sae, BatchTopKSAE)
    x = torch.randn(32, D)
    z = _dl_encode(sd, x)
    f_ref = z * (z > 0.12)
    assert (f_ref != 0).sum(1).float().std() > 0  # varying L0 per row, unlike TopK
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-6)
    assert torch.allclose(sae(x).x_hat, _dl_decode(sd, f_ref), atol=1e-5)


def test_ambiguous_ae_pt_asks_for_a_format(tmp_path):
    sd = {**_dl_core(), "k": torch.tensor(K), "threshold": torch.tensor(0.1)}
    torch.save(sd, tmp_path / "ae.pt")
    with pytest.raises(SoftSAEError, match="dictionary_learning:batchtopk"):
        load_sae(tmp_path / "ae.pt")
    assert isinstance(load_sae(tmp_path / "ae.pt", format="dictionary_learning:topk"), TopKSAE)


def test_pickled_objects_are_not_executed(tmp_path):
    torch.save({"encoder.weight": _rand(NF, D), "evil": object()}, tmp_path / "ae.pt")
    with pytest.raises(SoftSAEError, match="state dict"):
        load_sae(tmp_path / "ae.pt")


# ----------------------------------------------------------------- SAELens and sparsify
def _saelens(tmp_path, arch, apply_b_dec=True, **extra_cfg):
    sd = {
        "W_enc": _rand(D, NF),
        "b_enc": _rand(NF, scale=0.05),
        "W_dec": _rand(NF, D),
        "b_dec": _rand(D),
    }
    cfg = {
        "d_in": D,
        "d_sae": NF,
        "architecture": arch,
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none",
        "dtype": "float32",
        **extra_cfg,
    }
    return sd, cfg


def _write_folder(folder, cfg, sd):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in sd.items()}, folder / "sae.safetensors")


def _saelens_hidden(sd, cfg, x):
    sae_in = x - sd["b_dec"] * cfg["apply_b_dec_to_input"]
    return sae_in @ sd["W_enc"] + sd["b_enc"]


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_topk(tmp_path, apply_b_dec):
    sd, cfg = _saelens(tmp_path, "topk", apply_b_dec, k=K)
    _write_folder(tmp_path / "blocks.6", cfg, sd)
    assert detect_format(tmp_path / "blocks.6") == "saelens"
    sae = load_sae(tmp_path / "blocks.6")
    x = torch.randn(40, D)
    hidden = _saelens_hidden(sd, cfg, x)
    top = hidden.topk(K, dim=-1)  # SAELens: top-k of the pre-activations, then ReLU
    f_ref = torch.zeros_like(hidden).scatter(-1, top.indices, F.relu(top.values))
    assert isinstance(sae, TopKSAE)
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-5)
    assert torch.allclose(sae(x).x_hat, f_ref @ sd["W_dec"] + sd["b_dec"], atol=1e-5)


def test_saelens_batchtopk_saved_as_jumprelu(tmp_path):
    sd, cfg = _saelens(tmp_path, "jumprelu")
    sd["threshold"] = torch.full((NF,), 0.08)
    _write_folder(tmp_path / "sae", cfg, sd)
    sae = load_sae(tmp_path / "sae", format="saelens")
    x = torch.randn(40, D)
    hidden = _saelens_hidden(sd, cfg, x)
    f_ref = F.relu(hidden) * (hidden > sd["threshold"])
    assert isinstance(sae, BatchTopKSAE)
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-5)
    assert torch.allclose(sae(x).x_hat, f_ref @ sd["W_dec"] + sd["b_dec"], atol=1e-5)


def test_saelens_batchtopk_training_save_keeps_k(tmp_path):
    sd, cfg = _saelens(tmp_path, "batchtopk", k=K)
    sd["topk_threshold"] = torch.tensor(0.05, dtype=torch.float64)
    _write_folder(tmp_path / "sae", cfg, sd)
    sae = load_sae(tmp_path / "sae")
    x = torch.randn(40, D)
    hidden = _saelens_hidden(sd, cfg, x)
    assert isinstance(sae, BatchTopKSAE) and sae.k == K
    assert torch.allclose(sae.encode(x), F.relu(hidden) * (hidden > 0.05), atol=1e-5)


def test_saelens_per_latent_jumprelu_and_layer_norm_are_refused(tmp_path):
    sd, cfg = _saelens(tmp_path, "jumprelu")
    sd["threshold"] = torch.rand(NF)
    _write_folder(tmp_path / "a", cfg, sd)
    with pytest.raises(SoftSAEError, match="per-latent"):
        load_sae(tmp_path / "a")
    sd, cfg = _saelens(tmp_path, "topk", k=K, normalize_activations="layer_norm")
    _write_folder(tmp_path / "b", cfg, sd)
    with pytest.raises(SoftSAEError, match="layer_norm"):
        load_sae(tmp_path / "b")


def test_sparsify_topk(tmp_path):
    sd = {
        "encoder.weight": _rand(NF, D),
        "encoder.bias": _rand(NF, scale=0.05),
        "W_dec": _rand(NF, D),
        "b_dec": _rand(D),
    }
    cfg = {
        "expansion_factor": 4,
        "normalize_decoder": True,
        "num_latents": NF,
        "k": K,
        "multi_topk": False,
        "skip_connection": False,
        "d_in": D,
    }
    _write_folder(tmp_path / "layers.6", cfg, sd)
    assert detect_format(tmp_path / "layers.6" / "sae.safetensors") == "sparsify"
    sae = load_sae(tmp_path / "layers.6")
    x = torch.randn(40, D)
    pre = F.relu((x - sd["b_dec"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
    top = pre.topk(K, sorted=False)
    x_hat_ref = (top.values[:, :, None] * sd["W_dec"][top.indices]).sum(1) + sd["b_dec"]
    f_ref = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-5)
    assert torch.allclose(sae(x).x_hat, x_hat_ref, atol=1e-5)


# ----------------------------------------------------------------- saev
def _saev_file(path, header, sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    path.write_bytes((json.dumps(header) + "\n").encode() + buf.getvalue())


def _saev_sd():
    return {
        "W_enc": _rand(D, NF),
        "b_enc": _rand(NF, scale=0.05) + 0.3,
        "W_dec": _rand(NF, D),
        "b_dec": _rand(D),
    }


@pytest.mark.parametrize("cls_name", ["TopK", "BatchTopK"])
def test_saev_topk(tmp_path, cls_name):
    sd = _saev_sd()
    header = {
        "schema": 2,
        "cfg": {
            "d_vit": D,
            "exp_factor": NF // D,
            "activation": {"cls": cls_name, "params": {"top_k": K}},
        },
        "lib": "x",
    }
    _saev_file(tmp_path / "sae.pt", header, sd)
    assert detect_format(tmp_path / "sae.pt") == "saev"
    sae = load_sae(tmp_path / "sae.pt")
    x = torch.randn(40, D)
    h = x @ sd["W_enc"] + sd["b_enc"]  # saev: no b_dec subtraction, no ReLU before top-k
    _, idx = h.topk(K, dim=-1)
    f_ref = torch.zeros_like(h).scatter(-1, idx, 1.0) * h
    assert (f_ref[f_ref != 0] > 0).all()  # the stated condition for exact equality
    assert isinstance(sae, TopKSAE) and sae.k == K
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-5)
    assert torch.allclose(sae(x).x_hat, f_ref @ sd["W_dec"] + sd["b_dec"], atol=1e-5)


def test_saev_relu_legacy_header(tmp_path):
    sd = _saev_sd()
    _saev_file(tmp_path / "sae.pt", {"d_vit": D, "exp_factor": NF // D, "l1_coeff": 1e-3}, sd)
    sae = load_sae(tmp_path / "sae.pt")
    x = torch.randn(40, D)
    f_ref = F.relu(x @ sd["W_enc"] + sd["b_enc"])
    assert isinstance(sae, ReLUSAE)
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-5)
    assert torch.allclose(sae(x).x_hat, f_ref @ sd["W_dec"] + sd["b_dec"], atol=1e-5)


def test_imported_sae_saves_as_native_run(tmp_path):
    sd, cfg = _saelens(tmp_path, "topk", k=K)
    _write_folder(tmp_path / "src", cfg, sd)
    sae, info = import_sae(tmp_path / "src")
    sae.save(tmp_path / "run", extra_config={"imported_from": info})
    again = load_sae(tmp_path / "run")
    x = torch.randn(8, D)
    assert torch.equal(again.encode(x), sae.encode(x))


def test_unknown_format_and_missing_paths(tmp_path):
    with pytest.raises(SoftSAEError, match="format must be one of"):
        load_sae(tmp_path, format="nonsense")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SoftSAEError, match="not an SAE run"):
        load_sae(tmp_path / "empty")
