"""``softsae downstream`` on a tiny random-weight open_clip model."""

import json

import torch

from softsae_vision.cli import main
from tests._fixtures_splice import class_folders, identity_sae, register_tiny_clip, save_run


def test_downstream_cli_prints_and_writes(tmp_path, capsys):
    name = register_tiny_clip(tmp_path)
    images = class_folders(tmp_path / "images", per_class=2)
    run = save_run(identity_sae(32, torch.zeros(32)), tmp_path / "run", 1, "patch", name)
    out = tmp_path / "down.json"
    argv = ["downstream", str(run), "--model", name, "--images", str(images), "--no-pretrained"]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loss_recovered" in printed and "mean_ablation" in printed
    result = json.loads(out.read_text())
    assert result["n_images"] == 6 and abs(result["loss_recovered"] - 1) < 1e-4
    # another input size (as `extract --image-size` would use): a 3x3 grid, the same results shape
    assert main([*argv, "--device", "cpu", "--image-size", "48", "--out", str(out)]) == 0
    assert abs(json.loads(out.read_text())["loss_recovered"] - 1) < 1e-4
    capsys.readouterr()
    assert main(["downstream", str(run), "--model", name, "--images", "/no/such/dir"]) == 2
    err = capsys.readouterr().err
    assert "/no/such/dir" in err and "image folder" in err
