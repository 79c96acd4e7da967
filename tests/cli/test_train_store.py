"""``softsae train STORE`` / ``softsae eval RUN STORE``: training and evaluation from a store."""

from __future__ import annotations

import json

import pytest

from softsae_vision.cli import main
from softsae_vision.data.store import open_store
from tests._fixtures_extract import write_images


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 6)
    out = tmp_path_factory.mktemp("s") / "store"
    assert (
        main(
            [
                "extract",
                "timm/test_vit",
                str(folder),
                "--out",
                str(out),
                "--layers",
                "1,-1",
                "--no-pretrained",
                "--no-progress",
            ]
        )
        == 0
    )
    return out


def _train(store, run, *extra):
    return main(
        [
            "train",
            str(store),
            "--out",
            str(run),
            "--n-latents",
            "64",
            "--k",
            "4",
            "--steps",
            "12",
            "--batch-size",
            "64",
            "--device",
            "cpu",
            "--no-progress",
            "--estimator",
            "lean",
            *extra,
        ]
    )


def test_train_records_store_layer_and_tokens(store, tmp_path):
    run = tmp_path / "run"
    assert _train(store, run, "--layer", "-1", "--tokens", "patch") == 0
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["kind"] == "store" and data["tokens"] == "patch"
    assert data["layer"] == open_store(store).resolve_layer(-1)
    assert data["path"] == str(store.resolve())


def test_eval_reports_metrics_per_token_type(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(store, run, "--layer", "-1", "--tokens", "all") == 0
    capsys.readouterr()
    assert main(["eval", str(run), str(store), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    groups = metrics["groups"]
    assert set(groups) == {"cls", "patch"}
    h, w = open_store(store).grid
    assert groups["cls"]["n_rows"] == 6 and groups["patch"]["n_rows"] == 6 * h * w
    assert metrics["n_rows"] == groups["cls"]["n_rows"] + groups["patch"]["n_rows"]


def test_store_errors_are_one_line(store, tmp_path, capsys):
    assert _train(store, tmp_path / "a", "--layer", "7") == 2
    assert "layer" in capsys.readouterr().err
    assert _train(store, tmp_path / "b", "--layer", "-1", "--tokens", "register") == 2
    err = capsys.readouterr().err
    assert "register" in err and len(err.strip().splitlines()) == 1
    assert _train(store, tmp_path / "c") == 2  # two layers stored: which one?
    assert "--layer" in capsys.readouterr().err


def test_eval_warns_when_tokens_differ_from_training(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(store, run, "--layer", "-1", "--tokens", "patch") == 0
    capsys.readouterr()
    assert main(["eval", str(run), str(store), "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["eval", str(run), str(store), "--tokens", "cls", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "trained on tokens 'patch' but is evaluated on tokens 'cls'" in err
