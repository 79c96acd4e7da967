"""The SAE spliced into tiny random-weight backbones: exact SAEs recover 1, ablation 0."""

import math

import pytest
import torch

from softsae_vision.analysis.downstream import logit_metrics, recovered, run_downstream
from softsae_vision.analysis.splice import read_images
from softsae_vision.errors import SoftSAEError
from tests._fixtures_splice import class_folders, identity_sae, register_tiny_clip, save_run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return class_folders(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def clip_name(tmp_path_factory):
    return register_tiny_clip(tmp_path_factory.mktemp("clip"))


def _runs(root, d, layer, tokens, backbone):
    mean = torch.linspace(-1, 1, d)
    exact = save_run(identity_sae(d, mean), root / "exact", layer, tokens, backbone)
    ablate = save_run(identity_sae(d, mean, exact=False), root / "ablate", layer, tokens, backbone)
    return exact, ablate


@pytest.mark.parametrize(("layer", "tokens"), [(1, "patch"), (0, "cls"), ("embed", "embed")])
def test_clip_exact_sae_recovers_everything(tmp_path, images, clip_name, layer, tokens):
    d = 16 if layer == "embed" else 32
    exact, ablate = _runs(tmp_path, d, layer, tokens, clip_name)
    kw = {"pretrained": False, "batch_size": 4}
    res = run_downstream(exact, clip_name, images, **kw)
    assert res["task"] == "zero-shot" and res["n_images"] == 9 and res["n_classes"] == 3
    assert res["class_names"] == ["cat", "dog", "red car"]
    assert res["sae"]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert res["sae"]["top1_agreement"] == 1.0
    assert res["sae"]["loss"] == pytest.approx(res["orig"]["loss"], abs=1e-5)  # float32
    assert res["mean_ablation"]["kl"] > 1e-6  # ablation changes the model's output
    assert res["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert res["kl_recovered"] == pytest.approx(1.0, abs=1e-6)
    # an SAE whose reconstruction is the mean is mean-ablation: it recovers nothing
    res0 = run_downstream(ablate, clip_name, images, **kw)
    assert res0["loss_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert res0["kl_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert res0["orig"] == res["orig"]
    assert run_downstream(exact, clip_name, images, **kw) == res  # reproducible


def test_timm_classifier_kl_and_agreement(tmp_path, images):
    exact, ablate = _runs(tmp_path, 64, 2, "patch", "timm/test_vit")
    res = run_downstream(exact, "timm/test_vit", images, pretrained=False, batch_size=5)
    assert res["task"] == "classifier" and res["n_classes"] == 1000
    assert "loss_recovered" not in res and "accuracy" not in res["sae"]
    assert res["sae"]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert res["sae"]["top1_agreement"] == 1.0 and res["kl_recovered"] == pytest.approx(1.0)
    res0 = run_downstream(ablate, "timm/test_vit", images, pretrained=False)
    assert res0["mean_ablation"]["kl"] > 0 and res0["kl_recovered"] == pytest.approx(0.0)
    emb_exact, _ = _runs(tmp_path / "e", 64, "embed", "embed", "timm/test_vit")
    res_e = run_downstream(emb_exact, "timm/test_vit", images, pretrained=False)
    assert res_e["sae"]["kl"] == pytest.approx(0.0, abs=1e-9) and res_e["layer"] == "embed"


def test_errors_name_the_fix(tmp_path, images, clip_name):
    exact, _ = _runs(tmp_path, 48, 1, "patch", clip_name)
    with pytest.raises(SoftSAEError, match="d=48"):
        run_downstream(exact, clip_name, images, pretrained=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    import shutil

    shutil.copy(images / "cat" / "img0.png", flat / "a.png")
    ok, _ = _runs(tmp_path / "ok", 32, 1, "patch", clip_name)
    with pytest.raises(SoftSAEError, match="--classes"):
        run_downstream(ok, clip_name, flat, pretrained=False)


def test_labels_from_csv(tmp_path, images):
    table = tmp_path / "labels.csv"
    table.write_text("path,label\ncat/img0.png,cat\ndog/img1.png,dog\ncat/img2.png,cat\n")
    found = read_images(images, table)
    assert found.labels == [0, 1, 0] and found.class_names == ["cat", "dog"]
    table.write_text("cat/nope.png,cat\n")
    with pytest.raises(SoftSAEError, match="not found"):
        read_images(images, table)


def test_metric_definitions():
    orig = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    same = logit_metrics(orig, orig.clone(), torch.tensor([0, 0]))
    assert same["kl"] == 0 and same["top1_agreement"] == 1 and same["accuracy"] == 0.5
    flipped = logit_metrics(orig, orig.flip(-1), None)
    assert flipped["top1_agreement"] == 0 and flipped["kl"] > 0 and "loss" not in flipped
    assert recovered(2.0, 1.5, 1.0) == 0.5 and math.isnan(recovered(1.0, 1.0, 1.0))
