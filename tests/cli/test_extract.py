"""``softsae extract``: a store from the command line, one-line errors with exit status 2."""

from __future__ import annotations

import re

import pytest

from softsae_vision.cli import build_parser, main
from softsae_vision.data.store import open_store
from tests._fixtures_extract import write_broken_files, write_images


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 5)
    write_broken_files(folder / "broken")
    return folder


def _extract(*args: str) -> int:
    return main(["extract", "timm/test_vit", *args, "--no-pretrained", "--no-progress"])


def test_extract_writes_a_store_and_reports(images, tmp_path, capsys):
    out = tmp_path / "store"
    assert (
        _extract(str(images), "--out", str(out), "--layers", "2,-1,embed", "--batch-size", "3") == 0
    )
    captured = capsys.readouterr()
    assert f"{out}: 5 images, layers 2, 5, embed, 101 tokens each, float16" in captured.out
    assert "skipped 3 files (2 not an image, 1 truncated)" in captured.err
    store = open_store(out)
    assert store.layers == [2, 5, "embed"] and store.n_images == 5
    assert store.meta["extraction"]["batch_size"] == 3

    assert _extract(str(images), "--out", str(out), "--layers=-1,2,embed") == 0
    assert "(already complete)" in capsys.readouterr().out  # same layers, another spelling


def test_token_and_dtype_options(images, tmp_path):
    out = tmp_path / "store"
    assert _extract(str(images), "--out", str(out), "--tokens", "cls", "--dtype", "float32") == 0
    store = open_store(out)
    assert store.token_types == ["cls"] and store.meta["dtype"] == "float32"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tokens", "register"], "has no register tokens"),
        (["--layers", "12"], "out of range"),
        (["--checkpoint", "/no/such/weights.pth"], "checkpoint file not found"),
    ],
)
def test_user_errors_are_one_line(images, tmp_path, capsys, args, message):
    assert _extract(str(images), "--out", str(tmp_path / "s"), *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("softsae extract: error:") and message in err[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-size", "0"], "--image-size must be a positive number of pixels, got 0"),
        (["--image-size", "37"], "--image-size 37 is not a multiple of .* patch size 16x16"),
        (["--workers", "-1"], "--workers must be an integer >= 0, got -1"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    ],
)
def test_bad_settings_fail_before_a_store_folder_exists(images, tmp_path, capsys, args, message):
    out = tmp_path / "deeper" / "s"
    assert _extract(str(images), "--out", str(out), *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0])
    assert not out.exists() and not out.parent.exists()


def test_missing_images_fail_before_loading_the_model(tmp_path, capsys):
    code = main(["extract", "timm/no_such_model", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert code == 2
    assert "no such folder or file" in capsys.readouterr().err


def test_only_broken_images_is_an_error(tmp_path, capsys):
    write_broken_files(tmp_path / "bad")
    assert _extract(str(tmp_path / "bad"), "--out", str(tmp_path / "s")) == 2
    assert "no readable images" in capsys.readouterr().err
    assert open_store(tmp_path / "s").n_images == 0  # the reasons are still on disk


def test_offline_pretrained_names_the_fixes(images, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    from softsae_vision.backbones import weights

    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=0: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code = main(["extract", "timm/test_vit", str(images), "--out", str(tmp_path / "s")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "--no-pretrained" in err


def test_help_lists_the_options():
    sub = build_parser()._subparsers._group_actions[0].choices["extract"]
    text = sub.format_help()
    for option in (
        "--out",
        "--layers",
        "--tokens",
        "--batch-size",
        "--device",
        "--dtype",
        "--workers",
        "--no-pretrained",
        "--checkpoint",
        "--image-size",
    ):
        assert option in text
