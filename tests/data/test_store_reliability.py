"""Stores under accidents and hostile input (issue 14): locks, odd file names, damaged files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softsae_vision.backbones import load_backbone
from softsae_vision.backbones.base import resolve_layer_index
from softsae_vision.data import images as images_module
from softsae_vision.data.extract import extract
from softsae_vision.data.store import INDEX_FILE, META_FILE, open_store
from softsae_vision.data.store_lock import StoreLock
from softsae_vision.errors import SoftSAEError
from tests._fixtures_extract import smooth_image, write_images, write_synthetic_store

ARGS = dict(layers=[0, -1], batch_size=2, progress=False, workers=0)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vit():
    return load_backbone("timm/test_vit", pretrained=False)


@pytest.fixture
def store(tmp_path):
    return write_synthetic_store(tmp_path / "store", n_images=9, fail_every=4)


# -- one extraction per store at a time ------------------------------------------------------


def test_second_extraction_into_a_locked_store_fails_naming_the_holder(vit, tmp_path):
    write_images(tmp_path / "imgs", 3)
    out = tmp_path / "store"
    out.mkdir()
    holder = f"another extraction \\(pid {os.getpid()} on "
    with StoreLock(out), pytest.raises(SoftSAEError, match=holder):
        extract(vit, tmp_path / "imgs", out, **ARGS)
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written, lock file removed
    assert extract(vit, tmp_path / "imgs", out, **ARGS).store.n_images == 3


_HOLD_LOCK = """
import sys
from pathlib import Path
from softsae_vision.data.store_lock import StoreLock
with StoreLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_concurrent_cli_extract_is_refused_at_once(tmp_path, capfd):
    from softsae_vision.cli import main

    write_images(tmp_path / "imgs", 2)
    out = tmp_path / "store"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(
            ["extract", "timm/test_vit", str(tmp_path / "imgs"), "--out", str(out)]
            + ["--no-pretrained", "--no-progress", "--workers", "0"]
        )
        err = capfd.readouterr().err.strip().splitlines()
    finally:
        holder.communicate("")
    assert code == 2 and len(err) == 1
    assert f"another extraction (pid {holder.pid} on " in err[0] and "another --out" in err[0]
    assert not (out / META_FILE).exists()


def test_index_record_count_is_checked_against_n_ok(store):
    index = store.path / INDEX_FILE
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(b"".join(lines + lines[:2]))  # records of another run appended
    with pytest.raises(SoftSAEError, match=f"{INDEX_FILE}: 11 records .* meta.json says 9"):
        open_store(store.path)
    records = [json.loads(x) for x in lines]
    records[0]["row"], records[1]["row"] = 1, 0  # interleaved rows, same counts
    index.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(SoftSAEError, match="rows are not 0, 1, 2"):
        _ = open_store(store.path).images
    records[0]["row"], records[1]["row"] = 0, 1
    records[2]["path"] = "/fake/other.png"
    index.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(SoftSAEError, match="does not match meta.json's fingerprint"):
        _ = open_store(store.path).images


# -- file names and folders that are not plain images -----------------------------------------


def test_non_utf8_file_names_are_stored_losslessly(vit, tmp_path):
    folder = tmp_path / "imgs"
    write_images(folder, 2)
    raw = os.fsencode(folder) + b"/caf\xe9_\xff.png"  # Latin-1 bytes: not UTF-8
    smooth_image(5, 40, 40).save(raw.decode("utf-8", "surrogateescape"), format="PNG")
    store = extract(vit, folder, tmp_path / "store", **ARGS).store
    (tmp_path / "store" / INDEX_FILE).read_bytes().decode("utf-8")  # valid UTF-8 on disk
    named = [r for r in store.images if "caf" in r.path]
    assert len(named) == 1 and named[0].ok
    assert os.fsencode(named[0].path) == raw  # the exact bytes come back
    assert store.n_images == 3 and open_store(store.path).images == store.images


def test_broken_links_and_unlistable_folders_are_recorded_as_skipped(vit, tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    write_images(folder, 2)
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "secret").mkdir()
    smooth_image(1, 30, 30).save(folder / "secret" / "hidden.png")
    real_scandir = os.scandir

    def scandir(path=".", *args):
        if not isinstance(path, int) and os.fspath(path).endswith("secret"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    store = extract(vit, folder, tmp_path / "store", **ARGS).store
    status = {Path(r.path).name: r.status for r in store.images}
    assert status["dangling.jpg"].startswith("missing: broken symbolic link")
    assert status["loop.jpg"] == "unreadable: symbolic link loop"
    assert status["secret"].startswith("unreadable: folder cannot be listed (Permission denied)")
    assert "hidden.png" not in status and store.n_images == 2
    assert str(folder / "dangling.jpg") in [r.path for r in store.images]  # the link, not target
    assert images_module.unusable_reason(folder / "img_000.PNG") is None


# -- validation at open -------------------------------------------------------------------------


def _edit_meta(store, edit) -> None:
    meta = json.loads((store.path / META_FILE).read_text())
    edit(meta)
    (store.path / META_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("layers"), "'layers' is missing"),
        (lambda m: m.update(complete="yes"), "'complete'"),
        (lambda m: m["backbone"].update(n_blocks="4"), "positive 'n_blocks'"),
        (lambda m: m["token_layout"].update(grid=[2]), "grid"),
        (lambda m: m["token_layout"]["token_types"].pop(), "token types for 9 positions"),
        (
            lambda m: (
                m["token_layout"]["token_types"].pop(),
                m["token_layout"]["positions"].pop(),
            ),
            "layer 3 has 9 tokens but token_types lists 8",
        ),
        (lambda m: m["layers"][0].update(file="../../etc/passwd"), "'file' must be a file name"),
        (lambda m: m["layers"][0].update(d=0), "positive integers"),
        (lambda m: m["layers"][0].update(layer=7), "neither 0..3"),
        (lambda m: m["images"].update(n_ok="17"), "'images.n_ok'"),
        (lambda m: m.update(dtype="int8"), "'dtype' must be one of"),
        (lambda m: m["transform"].update(crop_size=None), "'transform' is malformed"),
        (lambda m: m.update(images=[]), "'images' is missing or not a dict"),
    ],
)
def test_malformed_meta_is_one_error_naming_the_file(store, edit, message):
    _edit_meta(store, edit)
    with pytest.raises(SoftSAEError, match=message) as info:
        open_store(store.path)
    assert str(store.path / META_FILE) in str(info.value) and "re-extract" in str(info.value)


def test_garbled_meta_json(store):
    (store.path / META_FILE).write_bytes(b"\xff\xfe{garbage")
    with pytest.raises(SoftSAEError, match="meta.json is not valid JSON"):
        open_store(store.path)
    (store.path / META_FILE).write_text("[1, 2]")
    with pytest.raises(SoftSAEError, match="does not describe an activation store"):
        open_store(store.path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.write_bytes(b""), "not a valid .npy array \\(it is empty\\)"),
        (lambda f: f.write_bytes(f.read_bytes()[:-10]), "is truncated"),
        (lambda f: f.write_bytes(f.read_bytes() + b"\0" * 8), "longer than its header says"),
        (lambda f: f.write_text("just some text, not numbers"), "not a valid .npy array"),
        (lambda f: f.unlink(), "is missing"),
    ],
)
def test_damaged_layer_files_fail_at_open(store, damage, message):
    damage(store.path / "layer_3.npy")
    with pytest.raises(SoftSAEError, match=message) as info:
        open_store(store.path)
    assert "layer_3.npy" in str(info.value) and "allow_pickle" not in str(info.value)


def test_garbled_values_are_caught_before_analysis(store):
    path = store.path / "layer_3.npy"
    array = np.load(path, mmap_mode="r+")
    array[-1, 4, 2] = np.nan  # the last row is always in the sample
    array.flush()
    del array
    reopened = open_store(store.path)
    with pytest.raises(SoftSAEError, match="layer_3.npy: row 6 holds NaN"):
        reopened.activations(3)
    assert reopened.activations("embed").shape == (7, 1, 4)  # other layers still readable


# -- layer resolution, one home --------------------------------------------------------------------


@pytest.mark.parametrize("spec", [-7, 6, "-7", "6"])
def test_out_of_range_layers_never_wrap(spec):
    with pytest.raises(SoftSAEError, match="out of range: m has 6 blocks"):
        resolve_layer_index(spec, 6, "m")
    assert resolve_layer_index(-6, 6) == 0 and resolve_layer_index(np.int64(-1), 6) == 5


def test_store_refuses_a_layer_beyond_its_blocks(store):
    assert store.resolve_layer(-1) == 3  # 4 blocks: -1 is 3
    with pytest.raises(SoftSAEError, match="layer -5 is out of range.*holds 3, embed"):
        store.resolve_layer(-5)
    from softsae_vision.data.store_source import StoreSource

    with pytest.raises(SoftSAEError, match="out of range"):
        StoreSource(store.path, layer=-5)
